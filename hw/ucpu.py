"""The serial core's micro-CPU: the micro-ISA of :mod:`mmfree.uisa` in RTL.

:class:`UCpu` executes firmware words exactly as
:class:`mmfree.model.serial.SerialMachine` does (``tests/test_ucpu_cocotb.py``
compares them instruction by instruction); see ``docs/ice40-core.md``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from mmfree import uisa
from mmfree.uisa import Op

from .scalar import bitlen

__all__ = ["UCpu", "RES_LAYOUT", "SPACE"]

#: One result beat (``RES``).
RES_LAYOUT = data.StructLayout({"id": 16, "acc": signed(24), "present": 1, "last": 1})

#: ``mem_space`` codes of the memory bus.
SPACE = {"vmem": 0, "cmem": 1, "pmem": 2, "sig": 3, "qbuf": 5}

PC_BITS = ceil_log2(uisa.ROM_WORDS)


class UCpu(wiring.Component):
    """The micro-CPU: firmware ROM, two-port register file, multiplier, shift unit.

    Parameters
    ----------
    rom : sequence of int
        Firmware words (32-bit), at most :data:`mmfree.uisa.ROM_WORDS`. The
        ROM is a block RAM of ``len(rom)`` words rounded up to a power of two.
    writable : bool
        Test only: a full-size ROM with a write port (``rom_we``,
        ``rom_waddr``, ``rom_wdata``), to load programs while idle.

    Ports (directions from the CPU's side)
    --------------------------------------
    start, entry : In(1)
        A pulse on ``start`` while idle runs from ROM word ``entry``
        (0 step, 1 reset). Registers and ``P`` keep their values; ``error``,
        ``scale_m`` and ``scale_e`` are cleared (as the simulator's ``_run``).
    busy : Out(1)
        High from the cycle after ``start`` until ``HALT`` executes.
    error : Out(1)
        Sticky, set by ``ERR``, cleared by ``start``.
    phase : Out(3)
        ``x11[2:0]`` of the last ``PHASE``.
    token : In(16)
        What ``LDIO`` returns (zero-extended; the address is ignored).
    mem_valid, mem_ready, mem_space(3), mem_addr(16), mem_we, mem_wdata(32)
        One request at a time, held until ``mem_valid & mem_ready``.
        ``mem_addr`` is ``(ra + imm16)[15:0]``; ``mem_space`` is
        :data:`SPACE` (``STV`` 0, ``STQ`` 5 with the byte in ``mem_wdata[7:0]``).
    mem_rvalid, mem_rdata(32)
        A load's answer, one cycle or more after its request was accepted
        (cmem and pmem zero-extended 16 bits; ``LDC`` sign-extends here).
    mcfg_valid, mcfg_waddr(16), mcfg_geom(18)
        ``MCFG``: one-cycle pulse with ``ra[15:0]``, ``rb[17:0]``.
    mat_start : Out(1), mat_busy : In(1)
        ``MATRIX`` pulses ``mat_start`` and waits, from the next cycle, until
        ``mat_busy`` is low.
    res : Out(stream.Signature(RES_LAYOUT))
        ``RES``: id ``ra[15:0]``, acc ``rb[23:0]``, present ``ra >= 0``,
        last ``x11[0]``; held until ``ready``.
    scale_m : Out(16), scale_e : Out(signed(18))
        Set by ``SCALE`` (``ra[15:0]``, ``rb[17:0]``).

    Timing
    ------
    Cycles per instruction, from its decode cycle to the next instruction's
    (the next word is fetched in the last cycle; ``start`` is followed by
    the first decode): 3 for branches; 2 for ALU, I-type, ``LDIO``, jumps,
    ``MCFG``, ``SCALE``, ``PHASE``, ``ERR``, and for ``STV``, ``STQ``,
    ``RES`` plus the cycles waiting for ``ready``; ``MAXABS`` 2, or 4 when
    ``rb < 0``; ``MUL``, ``MAC``, ``MULI`` 3; ``SHR``,
    ``SHRP`` and ``MULS`` 4 + ``q``, where ``q = amt // 8`` with
    ``amt = s`` (``s >= 0``) or ``32 + s`` (``s < 0``); loads 2 + the read
    latency + the cycles waiting for ``mem_ready``; ``MATRIX`` 3 + the
    cycles ``mat_busy`` is high. ``busy`` falls after ``HALT``'s 2 cycles.

    Datapath: one 33-bit adder (ALU, compares, branch conditions,
    addresses); a signed 32 x 32 multiplier (four SB_MAC16) into a 64-bit
    product register, which also carries ``SHR``'s source (``ra * 1``); a
    64-bit ``P`` adder; the shift unit: a 3-stage 65-bit arithmetic right
    shifter into a register that then shifts 8 bits per cycle, and a
    rounding, saturating and clamping stage behind it. The register file
    is two 32 x 32 block RAMs; nothing is cleared but ``error`` and the scale.
    """

    def __init__(self, rom, *, writable: bool = False):
        words = list(rom)
        if not words:
            raise ValueError("UCpu needs at least one ROM word")
        if len(words) > uisa.ROM_WORDS:
            raise ValueError(f"rom has {len(words)} words; the ROM holds {uisa.ROM_WORDS}")
        for k, w in enumerate(words):
            if not isinstance(w, int) or not 0 <= w <= uisa.MASK32:
                raise ValueError(f"rom word {k} = {w!r} is not a 32-bit unsigned integer")
        self._rom = words
        self._writable = bool(writable)
        self.rom_depth = uisa.ROM_WORDS if writable else 1 << ceil_log2(len(words))
        members = {
            "start": In(1), "entry": In(1), "busy": Out(1), "error": Out(1), "phase": Out(3),
            "token": In(16),
            "mem_valid": Out(1), "mem_ready": In(1), "mem_space": Out(3), "mem_addr": Out(16),
            "mem_we": Out(1), "mem_wdata": Out(32), "mem_rvalid": In(1), "mem_rdata": In(32),
            "mcfg_valid": Out(1), "mcfg_waddr": Out(16), "mcfg_geom": Out(18),
            "mat_start": Out(1), "mat_busy": In(1),
            "res": Out(stream.Signature(RES_LAYOUT)),
            "scale_m": Out(16), "scale_e": Out(signed(18)),
        }
        if writable:
            members.update(rom_we=In(1), rom_waddr=In(PC_BITS), rom_wdata=In(32))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()

        # ------------------------------------------------------------ memories
        m.submodules.rom = rom = memory.Memory(shape=32, depth=self.rom_depth, init=self._rom)
        rom_rd = rom.read_port()
        if self._writable:
            rom_wr = rom.write_port()
            m.d.comb += [rom_wr.addr.eq(self.rom_waddr), rom_wr.data.eq(self.rom_wdata),
                         rom_wr.en.eq(self.rom_we)]
        # two copies of the register file, one per read port; r0 is never written
        m.submodules.rfa = rfa = memory.Memory(shape=32, depth=uisa.NREGS, init=[])
        m.submodules.rfb = rfb = memory.Memory(shape=32, depth=uisa.NREGS, init=[])
        rfa_rd, rfb_rd = rfa.read_port(), rfb.read_port()
        rfa_wr, rfb_wr = rfa.write_port(), rfb.write_port()

        # ------------------------------------------------------------ decode (ROM output, held)
        ir = rom_rd.data
        op_c, rd, ra_f, rb_f, x11 = ir[0:6], ir[6:11], ir[11:16], ir[16:21], ir[21:32]
        op = Signal(6)                                    # the opcode, registered for EXE on
        m.d.sync += op.eq(op_c)
        imm16 = ir[16:32]
        rnd, mode, imm7 = x11[0], x11[1:3], x11[4:11]

        def is_c(*ops):
            return Cat(*(op_c == int(o) for o in ops)).any()

        def is_(*ops):
            return Cat(*(op == int(o) for o in ops)).any()

        is_itype = is_c(*uisa.I_TYPE)
        is_store = is_(Op.STV, Op.STQ)
        is_load_bus = is_(Op.LDV, Op.LDC, Op.LDCU, Op.LDP, Op.LDS)
        is_branch = op_c[3:6] == 0b110                    # 0x30..0x37 (BEQ..BGEU)
        is_jump = is_c(Op.JMP, Op.JAL, Op.JR)
        is_mul = is_(Op.MUL, Op.MAC, Op.MULI, Op.MULS)
        writes_exe = is_(Op.ADD, Op.SUB, Op.AND, Op.OR, Op.XOR, Op.MIN, Op.MAX, Op.MAXABS, Op.BITLEN,
                         Op.ADDS, Op.ADDI, Op.ANDI, Op.ORI, Op.LUI, Op.JAL, Op.LDIO)

        pc = Signal(PC_BITS)
        P = Signal(signed(64))
        prod = Signal(signed(64))
        z = Signal(65)                                     # shifter output, before rounding
        busy = Signal()

        a = rfa_rd.data
        b = rfb_rd.data
        rd0 = Signal()                                    # MAXABS: read r0 on port A (for 0 - rb)
        negst = Signal()                                  # MAXABS: write 0 - rb
        m.d.comb += [rfa_rd.addr.eq(Mux(rd0, 0, ra_f)), rfb_rd.addr.eq(Mux(is_c(Op.STV, Op.STQ), rd, rb_f))]

        def pre(value, name):
            # decoded in DEC, registered for EXE on (the word is held until the next fetch)
            r = Signal(len(value), name=name)
            m.d.sync += r.eq(value)
            return r

        # ------------------------------------------------------------ operand B
        # rb; imm16 zero- or sign-extended; imm16 << 16 (LUI); 1 (SHR shifts the product ra * 1)
        is_lui, is_shr = op_c == int(Op.LUI), op_c == int(Op.SHR)
        s_b = pre(~is_itype & ~is_shr, "s_b")
        s_lo = pre(is_itype & ~is_lui, "s_lo")
        s_sext = pre(is_itype & ~is_c(Op.ANDI, Op.ORI, Op.LUI), "s_sext")
        s_lui, s_one = pre(is_lui, "s_lui"), pre(is_shr, "s_one")
        opb = Signal(32)
        m.d.comb += opb.eq((b & s_b.replicate(32))
                           | Cat(imm16 & s_lo.replicate(16), (imm16[15] & s_sext).replicate(16))
                           | Cat(Const(0, 16), imm16 & s_lui.replicate(16)) | s_one)

        # ------------------------------------------------------------ adder and compares
        # a - opb (or a + opb) in 33 bits; signed compares flip both sign bits.
        # MAXABS compares a with |b| as a - b (b >= 0) or a + b (b < 0): the borrow is a < |b|
        is_maxabs = pre(op_c == int(Op.MAXABS), "d_maxabs")
        sub = pre(is_c(Op.SUB, Op.MIN, Op.MAX) | is_branch, "d_sub") | (is_maxabs & (~b[31] | negst))
        flip = pre(is_c(Op.MIN, Op.MAX, Op.BLT, Op.BGE), "d_flip")
        fa = a ^ Cat(Const(0, 31), flip)
        fb = (opb ^ Cat(Const(0, 31), flip)) ^ sub.replicate(32)
        sum33 = Signal(33)
        m.d.comb += sum33.eq(fa + fb + sub)
        ssum = sum33[0:32]
        lt = ~sum33[32]                                   # borrow: a < opb
        lt_r = Signal()                                   # lt of the cycle before
        m.d.sync += lt_r.eq(lt)
        eq = ssum == 0                                    # BEQ/BNE: a - b

        # ------------------------------------------------------------ ALU result
        # an AND-OR of sources, each zero unless selected: logic unit (AND, OR = AND | XOR, XOR,
        # pass opb, pass a: MIN/MAX/MAXABS), adder (ADDS saturates), bitlen, pc + 1, token
        sel_b = Mux(op == int(Op.MIN), ~lt, lt)
        is_sel = is_(Op.MIN, Op.MAX, Op.MAXABS)
        c_and = is_(Op.AND, Op.ANDI, Op.OR, Op.ORI).replicate(32)
        c_xor = is_(Op.XOR, Op.OR, Op.ORI).replicate(32)
        c_b = (is_(Op.LUI) | (is_sel & sel_b & ~negst)).replicate(32)
        c_a = (is_sel & ~sel_b & ~negst).replicate(32)
        logic = (a & opb & c_and) | ((a ^ opb) & c_xor) | (opb & c_b) | (a & c_a)
        sat_add = is_(Op.ADDS) & (a[31] == b[31]) & (ssum[31] != a[31])
        adder = Mux(sat_add, Mux(a[31], 1 << 31, (1 << 31) - 1), ssum) & (
            is_(Op.ADD, Op.SUB, Op.ADDI, Op.ADDS) | negst).replicate(32)
        blen = bitlen(m, a, "blen")
        pc1 = Signal(PC_BITS + 1)
        m.d.comb += pc1.eq(pc + 1)
        alu = Signal(32)
        m.d.comb += alu.eq(logic | adder | (blen & is_(Op.BITLEN).replicate(6))
                           | (pc1 & is_(Op.JAL).replicate(10)) | (self.token & is_(Op.LDIO).replicate(16)))

        # ------------------------------------------------------------ multiplier
        m.d.sync += prod.eq(a.as_signed() * opb.as_signed())

        # ------------------------------------------------------------ shift unit, stage 1
        # source X: P (SHRP) or the product (MULS; SHR: ra * 1); amount s = rb + imm7 (MULS: imm7);
        # s < 0 shifts sat32(X) << 32 right by 32 + s. In MULW z = X >> amt[2:0], then 8 per cycle.
        s7 = Signal(7)                                    # registered: the shift starts in MULW
        m.d.sync += s7.eq(Mux(op == int(Op.MULS), 0, b[0:7]) + imm7)
        neg = s7[6]
        src = Mux(op == int(Op.SHRP), P, prod)
        fits = src[31:64].all() | ~src[31:64].any()
        sat_src = Mux(fits, src[0:32], Mux(src[63], 1 << 31, (1 << 31) - 1))
        w = Mux(neg, Cat(Const(0, 33), sat_src), Cat(Const(0, 1), src))
        amt = s7[0:6] ^ Cat(Const(0, 5), neg)
        for k in range(3):
            step, stage = 1 << k, Signal(65, name=f"shift{k}")
            m.d.comb += stage.eq(Mux(amt[k], Cat(w[step:], w[64].replicate(step)), w))
            w = stage
        shf = Signal()                                    # in SHF: z >>= 8
        m.d.sync += z.eq(Mux(shf, Cat(z[8:], z[64].replicate(8)), w))
        shf_n = Signal(3)
        shf_done = shf_n == amt[3:6]

        # ------------------------------------------------------------ shift unit, stage 2
        # r = (z >> 1) + (round & z[0]); low word rl, high word z[64:33] (+ carry)
        rl33 = Signal(33)
        m.d.comb += rl33.eq(z[1:33] + (rnd & z[0]))
        rl, co = rl33[0:32], rl33[32]
        h = z[33:65]
        fits32 = Mux(co | rl[31], h.all(), ~h.any())
        zneg = z[64]
        hi8 = rl[7:32]
        fits8 = fits32 & (hi8.all() | ~hi8.any())
        sign8 = Mux(fits32, rl[31], zneg)
        shres = Signal(32)
        with m.Switch(mode):
            with m.Case(uisa.Mode.WRAP):
                m.d.comb += shres.eq(rl)
            with m.Case(uisa.Mode.SAT):
                m.d.comb += shres.eq(Mux(fits32, rl, Mux(zneg, 1 << 31, (1 << 31) - 1)))
            with m.Default():
                m.d.comb += shres.eq(Mux(fits8, rl, Mux(sign8, Const(-128, 32), 127)))

        # ------------------------------------------------------------ loads
        rdata = self.mem_rdata
        ldres = Cat(rdata[0:16], Mux(op == int(Op.LDC), rdata[15].replicate(16), rdata[16:32]))

        # ------------------------------------------------------------ bus, engine and result ports
        space = Signal(3)
        with m.Switch(op):
            with m.Case(Op.LDC, Op.LDCU):
                m.d.comb += space.eq(SPACE["cmem"])
            with m.Case(Op.LDP):
                m.d.comb += space.eq(SPACE["pmem"])
            with m.Case(Op.LDS):
                m.d.comb += space.eq(SPACE["sig"])
            with m.Case(Op.STQ):
                m.d.comb += space.eq(SPACE["qbuf"])
        m.d.comb += [
            self.mem_space.eq(space), self.mem_addr.eq(ssum[0:16]), self.mem_we.eq(is_store),
            self.mem_wdata.eq(b),
            self.mcfg_waddr.eq(a[0:16]), self.mcfg_geom.eq(b[0:18]),
            self.res.payload.id.eq(a[0:16]), self.res.payload.acc.eq(b[0:24]),
            self.res.payload.present.eq(~a[31]), self.res.payload.last.eq(x11[0]),
            self.busy.eq(busy),
        ]

        # ------------------------------------------------------------ register write, fetch
        wen = Signal()
        wdata = Signal(32)
        m.d.comb += [rfa_wr.addr.eq(rd), rfb_wr.addr.eq(rd), rfa_wr.data.eq(wdata), rfb_wr.data.eq(wdata),
                     rfa_wr.en.eq(wen & (rd != 0)), rfb_wr.en.eq(wen & (rd != 0))]
        fetch = Signal()
        fetch_addr = Signal(PC_BITS)
        m.d.comb += [rom_rd.addr.eq(fetch_addr), rom_rd.en.eq(fetch)]
        # fetch_addr is next_pc (pc + 1 for every instruction that is not a taken jump), entry when idle
        m.d.sync += pc.eq(Mux(fetch, fetch_addr, pc))

        # branches decide in EXE and fetch in BR (the condition is registered)
        taken = Signal()
        m.d.sync += taken.eq(Mux(op[1:3] == 0, eq, lt) ^ op[0])
        target = Mux(op == int(Op.JR), a, x11)
        d_branch = pre(is_branch, "d_branch")
        next_pc = Mux((d_branch & taken) | pre(is_jump, "d_jump"), target, pc1)

        rf_en = Signal()
        m.d.comb += [rfa_rd.en.eq(rf_en), rfb_rd.en.eq(rf_en)]

        m.d.comb += fetch_addr.eq(next_pc)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [fetch.eq(self.start), fetch_addr.eq(self.entry)]
                with m.If(self.start):
                    m.d.sync += [busy.eq(1), self.error.eq(0), self.scale_m.eq(0), self.scale_e.eq(0)]
                    m.next = "DEC"
            with m.State("DEC"):
                m.d.comb += rf_en.eq(1)
                m.next = "EXE"
            with m.State("EXE"):
                m.d.comb += [wdata.eq(alu), wen.eq(writes_exe)]
                with m.If(is_maxabs & b[31]):              # b < 0: rd = a here, or 0 - b in NEG
                    m.d.comb += wen.eq(~lt)
                    m.next = "RD0"
                with m.Elif(is_load_bus | is_store):
                    m.d.comb += self.mem_valid.eq(1)
                    with m.If(self.mem_ready):
                        with m.If(is_store):
                            m.d.comb += fetch.eq(1)
                            m.next = "DEC"
                        with m.Else():
                            m.next = "LDW"
                with m.Elif(op == int(Op.RES)):
                    m.d.comb += self.res.valid.eq(1)
                    with m.If(self.res.ready):
                        m.d.comb += fetch.eq(1)
                        m.next = "DEC"
                with m.Elif(op == int(Op.MATRIX)):
                    m.d.comb += self.mat_start.eq(1)
                    m.next = "MAT"
                with m.Elif(is_mul | is_(Op.SHR, Op.SHRP)):
                    m.next = "MULW"
                with m.Elif(d_branch):
                    m.next = "BR"
                with m.Elif(op == int(Op.HALT)):
                    m.d.sync += busy.eq(0)
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += fetch.eq(1)
                    m.d.comb += self.mcfg_valid.eq(op == int(Op.MCFG))
                    with m.If(op == int(Op.SCALE)):
                        m.d.sync += [self.scale_m.eq(a[0:16]), self.scale_e.eq(b[0:18])]
                    with m.If(op == int(Op.PHASE)):
                        m.d.sync += self.phase.eq(x11[0:3])
                    with m.If(op == int(Op.ERR)):
                        m.d.sync += self.error.eq(1)
                    m.next = "DEC"
            with m.State("MULW"):
                with m.If(is_(Op.MULS, Op.SHR, Op.SHRP)):
                    m.d.sync += shf_n.eq(0)
                    m.next = "SHF"
                with m.Else():
                    m.d.sync += P.eq(Mux(op == int(Op.MAC), P, 0) + prod)
                    m.d.comb += fetch.eq(1)
                    m.next = "DEC"
            with m.State("BR"):
                m.d.comb += fetch.eq(1)
                m.next = "DEC"
            with m.State("RD0"):
                m.d.comb += [rf_en.eq(1), rd0.eq(1)]
                m.next = "NEG"
            with m.State("NEG"):
                m.d.comb += [negst.eq(1), fetch.eq(1), wen.eq(lt_r), wdata.eq(alu)]
                m.next = "DEC"
            with m.State("SHF"):
                m.d.comb += [wdata.eq(shres), shf.eq(1)]
                m.d.sync += shf_n.eq(shf_n + 1)
                with m.If(shf_done):
                    m.d.comb += [fetch.eq(1), wen.eq(1)]
                    m.next = "DEC"
            with m.State("LDW"):
                m.d.comb += wdata.eq(ldres)
                with m.If(self.mem_rvalid):
                    m.d.comb += [fetch.eq(1), wen.eq(1)]
                    m.next = "DEC"
            with m.State("MAT"):
                with m.If(~self.mat_busy):
                    m.d.comb += fetch.eq(1)
                    m.next = "DEC"
        return m
