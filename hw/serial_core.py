"""The serial core: the iCEBreaker's accelerator, a micro-CPU with a ternary matrix engine.

Where :class:`mmfree.hw.core.Core` spends LUTs on parallel vector units,
this core fits an iCE40 UP5K: the micro-CPU of :mod:`mmfree.hw.ucpu` runs
the firmware of :mod:`mmfree.firmware`, which interprets the same compiled
program (docs/isa.md) with the same arithmetic, one scalar at a time, and
the :class:`~mmfree.hw.matrix_engine.MatrixEngine` streams one 5 x 4 tile
per cycle. :class:`mmfree.model.serial.SerialMachine` is its
instruction-set model; docs/ice40-core.md the design.

Memories::

    SPRAM  32768 x 32  wmem words [0, W); cmem words >= CMEM_EBR, two per word, from word W
    cmem   1536 x 16   block RAM: cmem words below CMEM_EBR
    vmem   1024 x 32   block RAM: words below 976 the program's, the rest the firmware's
    pmem   512 x 16    block RAM: the program, 64-bit words as four quarters
    qbuf   256 x 32    block RAM: activation codes, 4 per word (byte writes)
    sigmoid 512 x 16   block RAM: T[0..511]; T[512] = 32768, T[k > 512] = 65536 - T[1024 - k]

Ports: :class:`mmfree.hw.coreif.CoreSignature` (64-bit load words). LOADs
are accepted while idle; a pmem word takes four cycles (its quarters).
Counters: ``cycles`` since reset and ``tokens`` (steps completed). The
per-class counters (embed ... head) read 0: on a 5,280-LUT device they are
not worth their ~450 LUT4 (here and in the command decoder's readout);
``SerialMachine`` counts instructions per class instead.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, wiring

from mmfree import firmware
from mmfree import numerics as nx
from mmfree.protocol import COUNTER_NAMES, MemoryId
from mmfree.targets import ICE40_CMEM_EBR_WORDS, ICE40_WMEM_WORDS, Target

from .coreif import COUNTER_BITS, CoreSignature
from .matrix_engine import MatrixEngine
from .spram import Spram32
from .ucpu import UCpu

__all__ = ["SerialCore", "check_serial_target"]

VMEM_WORDS = 1024
SPACE_VMEM, SPACE_CMEM, SPACE_PMEM, SPACE_SIG, SPACE_QBUF = 0, 1, 2, 3, 5


def check_serial_target(target: Target) -> None:
    """Raise ``ValueError`` unless ``target`` has the serial core's fixed shape (the icebreaker target's)."""
    want = {"rows": 5, "cols": 4, "packing": "b3", "topk": firmware.TOPK}
    for k, v in want.items():
        if getattr(target, k) != v:
            raise ValueError(f"the serial core needs {k} = {v}, target {target.name} has {getattr(target, k)}")
    if target.max_input is None or target.max_input > firmware.MAX_INPUT:
        raise ValueError(f"the serial core takes inputs up to {firmware.MAX_INPUT}, target {target.name} "
                         f"has max_input {target.max_input}")
    shapes = {m.name: (m.width, m.depth) for m in target.memories}
    need = {"wmem": (32, ICE40_WMEM_WORDS), "vmem": (32, firmware.VMEM_MODEL), "pmem": (64, 128)}
    for k, v in need.items():
        if shapes.get(k) != v:
            raise ValueError(f"the serial core's {k} is {v[1]} x {v[0]} bits, target {target.name} has "
                             f"{shapes.get(k)}")


class SerialCore(wiring.Component):
    """The iCEBreaker's core (see the module docstring).

    Parameters
    ----------
    target : mmfree.targets.Target
        The icebreaker target (5 x 4 tiles, base 3, top-4; checked).
    """

    def __init__(self, target: Target):
        check_serial_target(target)
        self.target = target
        self.memories = {m.name: (m.width, m.depth) for m in target.memories}
        self.cmem_words = self.memories["cmem"][1]
        super().__init__(CoreSignature(64))

    def elaborate(self, platform):
        m = Module()
        m.submodules.cpu = cpu = UCpu(list(firmware.build().words))
        m.submodules.eng = eng = MatrixEngine(firmware.ABUF)
        m.submodules.spram = spram = Spram32()
        m.submodules.vmem = vmem = memory.Memory(shape=32, depth=VMEM_WORDS, init=[])
        m.submodules.cmem = cmem = memory.Memory(shape=16, depth=ICE40_CMEM_EBR_WORDS, init=[])
        m.submodules.pmem = pmem = memory.Memory(shape=16, depth=512, init=[])
        m.submodules.qbuf = qbuf = memory.Memory(shape=32, depth=256, init=[])
        m.submodules.sig = sig = memory.Memory(shape=16, depth=512, init=[int(v) for v in nx.SIG_TABLE[:512]])
        v_rd, v_wr = vmem.read_port(transparent_for=()), vmem.write_port()
        c_rd, c_wr = cmem.read_port(transparent_for=()), cmem.write_port()
        p_rd, p_wr = pmem.read_port(transparent_for=()), pmem.write_port()
        q_rd, q_wr = qbuf.read_port(transparent_for=()), qbuf.write_port(granularity=8)
        s_rd = sig.read_port(transparent_for=())

        # ---------------------------------------------------------------- commands, result, status
        token = Signal(16)
        idle = Signal()
        m.d.comb += idle.eq(~cpu.busy & ~eng.busy)
        accept = Signal()
        m.d.comb += [self.cmd.ready.eq(idle & ~self.load.valid), accept.eq(self.cmd.valid & self.cmd.ready),
                     cpu.start.eq(accept), cpu.entry.eq(self.cmd.payload.reset), cpu.token.eq(token),
                     eng.error_clear.eq(accept)]
        with m.If(accept):
            m.d.sync += token.eq(self.cmd.payload.token)
        started = Signal()
        m.d.sync += started.eq(accept)
        m.d.comb += [self.busy.eq(cpu.busy | started), self.error.eq(cpu.error | eng.error)]
        res = self.result.payload
        m.d.comb += [self.result.valid.eq(cpu.res.valid), cpu.res.ready.eq(self.result.ready),
                     res.id.eq(cpu.res.payload.id), res.acc.eq(cpu.res.payload.acc),
                     res.present.eq(cpu.res.payload.present), res.last.eq(cpu.res.payload.last),
                     res.m.eq(cpu.scale_m), res.e.eq(cpu.scale_e)]

        # ---------------------------------------------------------------- cycle counters
        # cycles and tokens only: the per-class counters would cost ~300 LUT4 here and ~150 in the
        # command decoder's readout; they read 0 (the firmware's PHASE marks the classes regardless)
        ctr = [Signal(COUNTER_BITS, name=f"ctr_{n}") for n in COUNTER_NAMES[:2]]
        m.d.sync += ctr[0].eq(ctr[0] + 1)
        with m.If(self.result.valid & self.result.ready & self.result.payload.last):
            m.d.sync += ctr[1].eq(ctr[1] + 1)
        for i, c in enumerate(ctr):
            m.d.comb += self.counters[i].eq(c)

        # ---------------------------------------------------------------- the matrix engine
        m.d.comb += [eng.cfg_valid.eq(cpu.mcfg_valid), eng.cfg_waddr.eq(cpu.mcfg_waddr),
                     eng.cfg_geom.eq(cpu.mcfg_geom), eng.start.eq(cpu.mat_start), cpu.mat_busy.eq(eng.busy)]

        # ---------------------------------------------------------------- the CPU's loads and stores
        space, addr = cpu.mem_space, cpu.mem_addr
        req = Signal()
        m.d.comb += [cpu.mem_ready.eq(1), req.eq(cpu.mem_valid)]
        rd = req & ~cpu.mem_we
        # cmem word a >= CMEM_EBR: SPRAM word (a + 2 W - CMEM_EBR) >> 1, half a & 1 (one adder, shared
        # with LOADs, which only happen while the CPU is idle)
        c_in = Mux(self.load.valid & ~cpu.busy, self.load.payload.addr[:16], addr)
        c_sp = Signal(17)
        m.d.comb += c_sp.eq(c_in + (2 * ICE40_WMEM_WORDS - ICE40_CMEM_EBR_WORDS))
        in_ebr = Signal()
        m.d.comb += in_ebr.eq(addr < ICE40_CMEM_EBR_WORDS)
        sk = addr[:11]                                       # sigmoid index 0..1024
        s_lo, s_mid = Signal(), Signal()
        m.d.comb += [s_lo.eq(sk < 512), s_mid.eq(sk == 512)]
        # response selects, one cycle later
        r_space, r_ebr, r_half, r_slo, r_smid = Signal(3), Signal(), Signal(), Signal(), Signal()
        m.d.sync += [cpu.mem_rvalid.eq(rd), r_space.eq(space), r_ebr.eq(in_ebr), r_half.eq(addr[0]),
                     r_slo.eq(s_lo), r_smid.eq(s_mid)]
        spram_half = Mux(r_half, spram.rdata[16:], spram.rdata[:16])
        t = s_rd.data
        with m.Switch(r_space):
            with m.Case(SPACE_VMEM):
                m.d.comb += cpu.mem_rdata.eq(v_rd.data)
            with m.Case(SPACE_CMEM):
                m.d.comb += cpu.mem_rdata.eq(Mux(r_ebr, c_rd.data, spram_half))
            with m.Case(SPACE_PMEM):
                m.d.comb += cpu.mem_rdata.eq(p_rd.data)
            with m.Case(SPACE_SIG):
                m.d.comb += cpu.mem_rdata.eq(Mux(r_smid, 1 << 15, Mux(r_slo, t, (1 << 16) - t)))

        # ---------------------------------------------------------------- memory ports: engine, CPU, LOAD
        ld = self.load.payload
        p_quarter = Signal(2)                                # pmem LOADs: one quarter per cycle, the
        p_load = Signal()                                    # word accepted with the last
        m.d.comb += [p_load.eq(self.load.valid & idle & (ld.mem == MemoryId.PMEM)),
                     self.load.ready.eq(idle & ((ld.mem != MemoryId.PMEM) | (p_quarter == 3)))]
        load_acc = Signal()
        m.d.comb += load_acc.eq(self.load.valid & self.load.ready)

        # SPRAM: the engine's tile reads, the CPU's cmem reads above CMEM_EBR, LOAD writes
        m.d.comb += [spram.addr.eq(c_sp[1:])]
        with m.If(eng.busy):
            m.d.comb += spram.addr.eq(eng.w_addr)
        with m.If(load_acc & (ld.mem == MemoryId.WMEM)):
            m.d.comb += [spram.addr.eq(ld.addr[:15]), spram.wdata.eq(ld.data[:32]), spram.wmask.eq(0b11),
                         spram.we.eq(1)]
        with m.If(load_acc & (ld.mem == MemoryId.CMEM) & (ld.addr >= ICE40_CMEM_EBR_WORDS)):
            m.d.comb += [spram.addr.eq(c_sp[1:]), spram.wdata.eq(Cat(ld.data[:16], ld.data[:16])),
                         spram.wmask.eq(Mux(ld.addr[0], 0b10, 0b01)), spram.we.eq(1)]
        # cmem block RAM
        m.d.comb += [c_rd.addr.eq(addr), c_wr.addr.eq(ld.addr), c_wr.data.eq(ld.data[:16]),
                     c_wr.en.eq(load_acc & (ld.mem == MemoryId.CMEM) & (ld.addr < ICE40_CMEM_EBR_WORDS))]
        # vmem: engine drain, CPU stores, LOAD writes
        m.d.comb += [v_rd.addr.eq(addr), v_wr.addr.eq(addr), v_wr.data.eq(cpu.mem_wdata),
                     v_wr.en.eq(req & cpu.mem_we & (space == SPACE_VMEM))]
        with m.If(eng.v_we):
            m.d.comb += [v_wr.addr.eq(eng.v_addr), v_wr.data.eq(eng.v_data.as_signed()), v_wr.en.eq(1)]
        with m.If(load_acc & (ld.mem == MemoryId.VMEM)):
            m.d.comb += [v_wr.addr.eq(ld.addr), v_wr.data.eq(ld.data[:32]), v_wr.en.eq(1)]
        # pmem: LOAD words as four quarters
        m.d.comb += [p_rd.addr.eq(addr), p_wr.addr.eq(Cat(p_quarter, ld.addr[:7])),
                     p_wr.data.eq(ld.data[:64].word_select(p_quarter, 16)), p_wr.en.eq(p_load)]
        with m.If(p_load):
            m.d.sync += p_quarter.eq(p_quarter + 1)
        # qbuf: CPU byte stores, engine reads
        m.d.comb += [q_wr.addr.eq(addr[2:10]), q_wr.data.eq(cpu.mem_wdata[:8].replicate(4)),
                     q_wr.en.eq(Mux(req & cpu.mem_we & (space == SPACE_QBUF), Const(1, 4) << addr[:2], 0)),
                     q_rd.addr.eq(eng.q_addr), eng.q_data.eq(q_rd.data), eng.w_data.eq(spram.rdata)]
        # the sigmoid table
        m.d.comb += s_rd.addr.eq(Mux(s_lo, sk, (1024 - sk)[:9]))
        return m
