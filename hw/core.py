"""The accelerator core: sequencer, memories, vector passes, TAC array, epilogue and top-k.

One :class:`Core` runs the compiled program (docs/isa.md) one token at a
time and equals :class:`mmfree.model.machine.GoldenMachine` bit for bit. Its
ports are the contract of :mod:`mmfree.hw.coreif`.

Datapath of one LINEAR (docs/architecture.md)::

    vmem --b--> [max pre-pass] --> StatsPass --t--> SumSqSqrt ----------+
    cmem --cu,cv--^                     \\--M[q]--> QuantRecip[q] --+--> OutputScale[q] --> scale[q]
                                                                   |
    vmem, cmem --b,cv_q--> QuantPass (R, sh of q) --codes--> qbuf[q]
    wmem --tiles--> WeightDecoder -> TACArray <--codes-- qbuf
    TACArray --row blocks--> feeder --elements--> Dequant x3 --> ADD | MLGRU | GLU | WRITE --> collector --> vmem
                                    \\--(TOPK)--> TopK --> result

Memory organisation: ``vmem`` and ``cmem`` are ``vec_lanes`` words wide (one
read gives a vector slice; the compiler starts every region on a multiple of
``vec_lanes``), with per-word write enables; ``qbuf`` holds three vectors of
int8 codes, ``cols`` per word, written ``vec_lanes`` codes at a time; ``wmem``
one tile per word; ``pmem`` one 64-bit instruction word per address. Every
memory has one read and one write port (simple dual-port block RAM).

Contract
--------
* ``rows``, ``cols`` and ``vec_lanes`` are powers of two and ``vec_lanes``
  divides ``rows`` and ``cols``: the vector path (statistics, quantization,
  collector, vmem/cmem words) is ``vec_lanes`` wide, the TAC array
  ``rows x cols``. A row block of the array is ``rows / vec_lanes`` vmem
  words; a qbuf word takes ``cols / vec_lanes`` quantizer beats. Every memory
  depth fixed.
* Throughput: the array takes one tile per cycle while the epilogue keeps up
  (it handles one element per cycle, so a LINEAR whose row blocks take fewer
  than ``rows`` tiles is epilogue bound).
* Per LINEAR, serially: instruction fetch (one cycle per word), the block
  shift (free when the base vector is the previous instruction's result,
  otherwise a max pre-pass of ``ceil(n/L)`` cycles), the statistics pass
  (``nvec`` cycles per beat: one per C16 vector it reads), the scalar units,
  one quantization pass per quantizer (``ceil(n/L)`` cycles plus the pass's
  latency), then the matrix, overlapped with dequantization and the
  epilogue, and the epilogue's drain.
* Cycle counters (``coreif``): ``embed`` EMBED; ``stats`` max pre-pass,
  statistics and scalar units; ``quant`` quantization passes; ``matrix``
  tile streaming of non-head LINEARs; ``drain`` instruction fetch and the
  epilogue drain after the last tile; ``head`` the head's tile streaming,
  drain and the top-k readout.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, DomainRenamer, Module, Mux, Signal, signed, unsigned
from amaranth.lib import cdc, data, fifo, memory, wiring

from mmfree import isa
from mmfree.numerics import ACC_BITS, BS_BITS
from mmfree.protocol import COUNTER_NAMES, MemoryId
from mmfree.targets import Target

from .coreif import COUNTER_BITS, CoreSignature
from .floorplan import COPY
from .elementwise import GLUCell, MLGRUCell, ResidualAdd, Dequant
from .quantizer import QuantPass, StatsPass
from .scalar import OutputScale, QuantRecip, SumSqSqrt, bitlen
from .tac import DecodingTAC, PipelinedTAC
from .topk import TopK

__all__ = ["Core"]

V32 = signed(32)
#: Words per weight-memory bank: one ECP5 DP16KD deep (2048 x 9 bits). Each bank's output is registered
#: before the bank select, so no read path runs from a block RAM across the die into a multiplexer.
WMEM_BANK_WORDS = 2048
#: Register stages between the weight banks' output registers and the array, with a matrix clock.
HAUL = 2
#: With a matrix clock, the weight banks' column groups: 8 block RAMs of 2048 x 9 bits each.
WMEM_GROUP_BITS = 72
#: with a matrix clock, copies of the array's code register (each by its rows)
A_COPIES = 4
_CNT = {name: i for i, name in enumerate(COUNTER_NAMES)}


def _log2(n: int) -> int:
    return n.bit_length() - 1


def _bitlen32(m: Module, v, name: str) -> Signal:
    """``bitlen`` of an unsigned 32-bit value (0 for 0), combinational, logarithmic depth."""
    return bitlen(m, v, name)


class Core(wiring.Component):
    """The accelerator core for one target (see the module docstring).

    Parameters
    ----------
    target : mmfree.targets.Target
        Lane arrangement, memory shapes, ``topk`` and ``max_input``; every
        memory depth must be set (size the ``sim`` target to the model).

    matrix_domain : str
        Clock domain of the tile streams: the weight and qbuf read ports,
        the weight read pipeline, the code sequencer and the TAC array
        (default ``"sync"``, one clock for everything). Another name puts
        them in that domain, which the parent defines (a faster clock; the
        ULX3S's two-clock build: 100 MHz beside 30): the LINEAR's start, the quantizer's
        progress, the row-block results, the end of the tiles and the
        decoder's error cross through synchronizers and an asynchronous
        FIFO, so any ratio of the two clocks gives the same results.

    Attributes
    ----------
    memories : dict
        ``name -> (width, depth)`` in words as seen by the program (vmem and
        cmem in elements, not wide words), for INFO and the loaders.
    """

    def __init__(self, target: Target, *, matrix_domain: str = "sync"):
        if not isinstance(target, Target):
            raise TypeError(f"target must be a mmfree.targets.Target, not {target!r}")
        if not isinstance(matrix_domain, str) or not matrix_domain.isidentifier():
            raise ValueError(f"matrix_domain must be a clock domain name, not {matrix_domain!r}")
        self.matrix_domain = matrix_domain
        L = target.vec_lanes
        for what, v in (("rows", target.rows), ("cols", target.cols), ("vec_lanes", L)):
            if v & (v - 1):
                raise ValueError(f"target {target.name}: {what} must be a power of two, got {v}")
        if target.rows % L or target.cols % L:
            raise ValueError(f"target {target.name}: vec_lanes must divide rows and cols, got "
                             f"{target.rows} x {target.cols} with vec_lanes {L}")
        for mem in target.memories:
            if mem.depth is None:
                raise ValueError(f"target {target.name}: memory {mem.name} has no depth; size it to the model first")
        if target.max_input is None or target.max_input < 1:
            raise ValueError(f"target {target.name}: max_input must be set")
        for name in ("cmem", "vmem"):
            if target.memory(name).depth % L:
                raise ValueError(f"target {target.name}: {name} depth must be a multiple of vec_lanes ({L})")
        self.target = target
        self.memories = {m.name: (m.width, m.depth) for m in target.memories}
        wdepth = self.memories["wmem"][1]
        #: ``(submodule name, first word, words)`` of each weight-memory bank (``wmem`` when there is one)
        self.wmem_banks = [("wmem", 0, wdepth)] if wdepth <= WMEM_BANK_WORDS else \
            [(f"wmem{k}", a, min(WMEM_BANK_WORDS, wdepth - a)) for k, a in enumerate(range(0, wdepth, WMEM_BANK_WORDS))]
        #: ``(submodule name, bank, first word, words, first bit, end bit)`` of each weight-memory part: one per
        #: bank, or with a matrix clock each bank in column groups of WMEM_GROUP_BITS (a few block RAMs, each
        #: group with its own address counter and output register next to it)
        wbits = self.memories["wmem"][0]
        cols = [(0, wbits)] if matrix_domain == "sync" else \
            [(lo, min(lo + WMEM_GROUP_BITS, wbits)) for lo in range(0, wbits, WMEM_GROUP_BITS)]
        self.wmem_parts = [(name if len(cols) == 1 else f"{name}_{g}", k, start, depth, lo, hi)
                           for k, (name, start, depth) in enumerate(self.wmem_banks)
                           for g, (lo, hi) in enumerate(cols)]
        data_bits = max(w for w, _ in self.memories.values())
        super().__init__(CoreSignature(data_bits))

    # ------------------------------------------------------------------
    def elaborate(self, platform):
        t = self.target
        L = t.vec_lanes                                # vector lanes
        LB = _log2(L)
        R, C = t.rows, t.cols                          # TAC tile
        RB, CB = _log2(R), _log2(C)
        RVB, CVB = RB - LB, CB - LB                    # vmem words per row block, quantizer beats per qbuf word (log2)
        K = t.topk
        m = Module()

        wbits, wdepth = self.memories["wmem"]
        cdepth = self.memories["cmem"][1] // L
        vdepth = self.memories["vmem"][1] // L
        pdepth = self.memories["pmem"][1]
        qd = -(-t.max_input // C)                      # qbuf words per slot

        # ---------------------------------------------------------- memories
        # the weight memory in banks of WMEM_BANK_WORDS (one block RAM deep), read together, each bank one
        # memory or (a matrix clock) column groups
        nbanks = len(self.wmem_banks)
        w_banks = []                     # per part: read port, write port, first word, words, bank, bits
        for name, k, start, depth, lo, hi in self.wmem_parts:
            m.submodules[name] = mem = memory.Memory(shape=hi - lo, depth=depth, init=[])
            w_banks.append((mem.read_port(domain=self.matrix_domain), mem.write_port(), start, depth, k, lo, hi))
        m.submodules.cmem = cmem = memory.Memory(shape=16 * L, depth=cdepth, init=[])
        m.submodules.vmem = vmem = memory.Memory(shape=32 * L, depth=vdepth, init=[])
        m.submodules.pmem = pmem = memory.Memory(shape=64, depth=pdepth, init=[])
        m.submodules.qbuf = qbuf = memory.Memory(shape=8 * C, depth=3 * qd, init=[])
        c_rd, c_wr = cmem.read_port(), cmem.write_port(granularity=16)
        v_rd, v_wr = vmem.read_port(), vmem.write_port(granularity=32)
        p_rd, p_wr = pmem.read_port(), pmem.write_port()
        q_rd, q_wr = qbuf.read_port(domain=self.matrix_domain), qbuf.write_port(granularity=8 * L if CVB else None)

        c_lanes = c_rd.data
        v_lanes = v_rd.data

        def c_lane(i):
            return c_lanes.word_select(i, 16)

        def v_lane(i):
            return v_lanes.word_select(i, 32)

        # ---------------------------------------------------------- units
        m.submodules.stats = stats = StatsPass(L, 3)
        m.submodules.quant = quant = QuantPass(L)
        m.submodules.sqrt = sqrt = SumSqSqrt()
        recips = [QuantRecip() for _ in range(3)]
        scales = [OutputScale() for _ in range(3)]
        dqs = [Dequant(ACC_BITS, 18) for _ in range(3)]
        for q in range(3):
            m.submodules[f"recip{q}"] = recips[q]
            m.submodules[f"oscale{q}"] = scales[q]
            m.submodules[f"dequant{q}"] = dqs[q]
        md = self.matrix_domain
        split = md != "sync"             # the tile streams run on their own clock
        # with a clock of their own the tile streams are free running, flow-controlled where tiles are issued
        tac = PipelinedTAC(R, C, t.packing, a_copies=min(R, A_COPIES)) if split else DecodingTAC(R, C, t.packing)
        m.submodules.tac = DomainRenamer(md)(tac)
        m.submodules.mlgru = mlgru = MLGRUCell()
        m.submodules.glu = glu = GLUCell()
        m.submodules.radd = radd = ResidualAdd()
        # second element lane of the single-segment epilogues (WRITE, ADD, TOPK)
        m.submodules.dequant_b = dq_b = Dequant(ACC_BITS, 18)
        m.submodules.radd_b = radd_b = ResidualAdd()
        m.submodules.topk_b = topk_b = TopK(K, 16, ACC_BITS)
        m.submodules.topk = topk = TopK(K, 16, ACC_BITS)

        # ---------------------------------------------------------- counters
        ctr = [Signal(COUNTER_BITS, name=f"ctr_{n}") for n in COUNTER_NAMES]
        for i, c in enumerate(ctr):
            m.d.comb += self.counters[i].eq(c)
        m.d.sync += ctr[_CNT["cycles"]].eq(ctr[_CNT["cycles"]] + 1)
        count = Signal(range(len(COUNTER_NAMES)))   # class of this cycle (0: none)
        count_en = Signal()
        with m.If(count_en):
            for i in range(2, len(COUNTER_NAMES)):
                with m.If(count == i):
                    m.d.sync += ctr[i].eq(ctr[i] + 1)

        # ---------------------------------------------------------- instruction registers
        token = Signal(16)
        w0 = Signal(64)
        w1 = Signal(64)
        w2 = Signal(64)
        w3 = Signal(64)
        qw = [Signal(64, name=f"qword{q}") for q in range(3)]
        sw = [Signal(64, name=f"sword{s}") for s in range(3)]
        error = Signal()
        tac_error = Signal()             # the decoder's error flag, in sync
        m.d.comb += self.error.eq(error | tac_error)

        op = w0[0:8]
        epi = w0[8:12]
        nq = w0[12:14]
        ns = w0[14:16]
        unit_cu = w0[16]
        has_lb = w0[17]
        # LINEAR fields
        n = w0[24:48]
        wbase = w1[0:32]
        cu_addr = w1[32:64]
        src = w2[0:24]
        dst = w2[24:48]
        aux = w3[0:24]
        lb_addr = w3[32:64]
        cv_addr = Array([w[0:32] for w in qw])
        k_m = [w[32:48] for w in qw]
        k_e = [w[48:64] for w in qw]
        seg_q = Array([w[0:2] for w in sw])
        rows = sw[0][8:32]
        # EMBED fields
        e_code16 = w0[8]
        e_dst = w0[16:40]
        e_n = w0[40:64]
        e_codes = w1[0:32]
        e_scales = w1[32:64]

        # the epilogue's decoded flags, registers loaded with w0 in LOADI (equal to epi == ... at every cycle)
        epi_is = {e: Signal(name=f"epi_is_{e.name.lower()}", init=int(e == 0)) for e in isa.Epilogue}
        is_head = Signal()
        m.d.comb += is_head.eq(epi_is[isa.Epilogue.TOPK])
        dual = Signal()                  # two elements per cycle through the epilogue (set below)
        # Counts derived from the instruction words, registered with them in LOADI (the words change only
        # there), so they equal the combinational functions of w0/sw at every cycle without their adders.
        nb = Signal(24)                  # beats of the input (ceil(n / L))
        nbc = Signal(24)                 # column blocks of the input (ceil(n / C))
        nrb = Signal(24)                 # row blocks of the output (ceil(rows / R))
        rb_tiles = Signal(26)            # tiles per row block: ns * nbc (no multiplier)
        nb_m1 = Signal((nb - 1).shape(), init=-1 if (nb - 1).shape().signed else (1 << len(nb - 1)) - 1)
        nbc_m1 = Signal((nbc - 1).shape(), init=-1 if (nbc - 1).shape().signed else (1 << len(nbc - 1)) - 1)
        rb_last = Signal((rb_tiles - 1).shape(),
                         init=-1 if (rb_tiles - 1).shape().signed else (1 << len(rb_tiles - 1)) - 1)

        # alignment: vector operands must start on a wide word
        misaligned = Signal()
        m.d.comb += misaligned.eq((src[:LB] != 0) | (dst[:LB] != 0) | (aux[:LB] != 0) |
                                  (cu_addr[:LB] != 0) | (lb_addr[:LB] != 0) |
                                  (qw[0][:LB] != 0) | (qw[1][:LB] != 0) | (qw[2][:LB] != 0)) if LB else \
            misaligned.eq(0)

        # ---------------------------------------------------------- block shift tracking
        trk_valid = Signal()
        trk_dst = Signal(24)
        trk_n = Signal(24)
        trk_max = Signal(32)
        run_max = Signal(32)             # max |value| written to dst by the current instruction
        sb = Signal(signed(6))
        blen = _bitlen32(m, trk_max, "blen")
        sb_next = Signal(signed(7))
        m.d.comb += sb_next.eq(Mux(trk_max == 0, 0, blen - BS_BITS))
        # registered copy for DECODE: trk_max is written when an instruction ends and DECODE comes at least
        # two cycles later (LOADI in between), so the register has caught up by then
        sb_next_r = Signal(signed(7))
        m.d.sync += sb_next_r.eq(sb_next)

        # ---------------------------------------------------------- per-LINEAR scalars
        t_stat = Signal(48)
        m_stat = [Signal(31, name=f"mstat{q}") for q in range(3)]
        sqrt_v = Signal(16)
        et_v = Signal(signed(6))
        sqrt_ok = Signal()
        r_v = [Signal(15, name=f"r{q}") for q in range(3)]
        m16_v = [Signal(16, name=f"m16_{q}") for q in range(3)]
        sh_v = [Signal(signed(5), name=f"sh{q}") for q in range(3)]
        recip_ok = [Signal(name=f"recip_ok{q}") for q in range(3)]
        scale_req = [Signal(name=f"scale_req{q}") for q in range(3)]
        scale_ok = [Signal(name=f"scale_ok{q}") for q in range(3)]
        scale_m = [Signal(16, name=f"scale_m{q}") for q in range(3)]
        scale_e = [Signal(signed(18), name=f"scale_e{q}") for q in range(3)]
        head_m = Signal(16)
        head_e = Signal(signed(18))
        have_head = Signal()
        start_scalar = Signal()

        for q in range(3):
            used = Signal(name=f"qused{q}")
            m.d.comb += used.eq(q < nq)
            m.d.comb += [recips[q].req.payload.eq(m_stat[q]), recips[q].resp.ready.eq(1)]
            with m.If(start_scalar & used):
                m.d.sync += recips[q].req.valid.eq(1)
            with m.If(recips[q].req.valid & recips[q].req.ready):
                m.d.sync += recips[q].req.valid.eq(0)
            with m.If(recips[q].resp.valid):
                m.d.sync += [r_v[q].eq(recips[q].resp.payload.r), m16_v[q].eq(recips[q].resp.payload.m16),
                             sh_v[q].eq(recips[q].resp.payload.sh), recip_ok[q].eq(1)]
            # output scale once sqrt and reciprocal are known
            sreq = scales[q].req
            m.d.comb += [sreq.payload.k_m.eq(k_m[q]), sreq.payload.k_e.eq(k_e[q]), sreq.payload.m16.eq(m16_v[q]),
                         sreq.payload.sh.eq(sh_v[q]), sreq.payload.sqrt.eq(sqrt_v), sreq.payload.et.eq(et_v),
                         scales[q].resp.ready.eq(1)]
            with m.If(sqrt_ok & recip_ok[q] & ~scale_req[q]):
                m.d.sync += [sreq.valid.eq(1), scale_req[q].eq(1)]
            with m.If(sreq.valid & sreq.ready):
                m.d.sync += sreq.valid.eq(0)
            with m.If(scales[q].resp.valid):
                m.d.sync += [scale_m[q].eq(scales[q].resp.payload.m), scale_e[q].eq(scales[q].resp.payload.e),
                             scale_ok[q].eq(1)]
        m.d.comb += [sqrt.req.payload.eq(t_stat), sqrt.resp.ready.eq(1)]
        with m.If(start_scalar):
            m.d.sync += sqrt.req.valid.eq(1)
        with m.If(sqrt.req.valid & sqrt.req.ready):
            m.d.sync += sqrt.req.valid.eq(0)
        with m.If(sqrt.resp.valid):
            m.d.sync += [sqrt_v.eq(sqrt.resp.payload.sqrt), et_v.eq(sqrt.resp.payload.et), sqrt_ok.eq(1)]
        scales_ready = Signal()
        m.d.comb += scales_ready.eq(Cat(*[scale_ok[q] | (q >= nq) for q in range(3)]).all())
        recips_ready = Signal()
        m.d.comb += recips_ready.eq(Cat(*[recip_ok[q] | (q >= nq) for q in range(3)]).all())
        clear_scalars = Signal()
        with m.If(clear_scalars):
            m.d.sync += [sqrt_ok.eq(0)] + [s.eq(0) for s in recip_ok + scale_req + scale_ok]

        # ---------------------------------------------------------- vector read loops (max, stats, quant)
        # One generic loop: beat c, vector slot k (0: b + first C16 vector).
        rd_c = Signal(24)
        rd_k = Signal(2)
        rd_q = Signal(2)                 # quantizer of the quant pass
        nvec = Signal(3)                 # C16 vectors per stats beat
        m.d.comb += nvec.eq(Mux(unit_cu, nq, nq + 1))
        vec_addr = Signal(32)            # C16 vector of slot rd_k (stats) / quantizer rd_q (quant)
        # tag of the read issued last cycle
        tg_valid = Signal()
        tg_c = Signal(24)
        tg_k = Signal(2)
        tg_last = Signal()               # last slot of its beat
        b_reg = Signal(32 * L)
        slot = [Signal(16 * L, name=f"slot{k}") for k in range(4)]

        # lane mask of beat tg_c: element index < n
        lane_ok = Signal(L)
        for i in range(L):
            m.d.comb += lane_ok[i].eq(Cat(Const(i, LB) if LB else Const(0, 0), tg_c) < n)

        b_now = Signal(32 * L)
        m.d.comb += b_now.eq(Mux(tg_k == 0, v_lanes, b_reg))
        b_masked = Signal(32 * L)
        for i in range(L):
            m.d.comb += b_masked.word_select(i, 32).eq(Mux(lane_ok[i], b_now.word_select(i, 32), 0))
        slot_now = [Signal(16 * L, name=f"slot_now{k}") for k in range(4)]
        for k in range(4):
            m.d.comb += slot_now[k].eq(Mux(tg_k == k, c_lanes, slot[k]))
        with m.If(tg_valid):
            with m.If(tg_k == 0):
                m.d.sync += b_reg.eq(v_lanes)
            for k in range(4):
                with m.If(tg_k == k):
                    m.d.sync += slot[k].eq(c_lanes)

        # stats beat
        sp = stats.i.payload
        m.d.comb += [stats.sb.eq(sb), stats.unit_cu.eq(unit_cu), stats.o.ready.eq(1)]
        for i in range(L):
            m.d.comb += sp.b[i].eq(b_masked.word_select(i, 32))
            m.d.comb += sp.cu[i].eq(slot_now[0].word_select(i, 16))
            for q in range(3):
                src_slot = Mux(unit_cu, slot_now[q].word_select(i, 16), slot_now[q + 1].word_select(i, 16)) \
                    if q < 3 else None
                m.d.comb += sp.cv[q][i].eq(src_slot)
        m.d.comb += [sp.first.eq(tg_c == 0), sp.last.eq(tg_c == nb_m1)]
        stats_done = Signal()
        with m.If(stats.o.valid):
            m.d.sync += [t_stat.eq(stats.o.payload.t), stats_done.eq(1)]
            for q in range(3):
                m.d.sync += m_stat[q].eq(stats.o.payload.m[q])

        # quant beat
        qp = quant.i.payload
        # The passes of several quantizers follow each other without a gap: the
        # pass reads sh in its 4th and R in its 5th cycle after accepting an
        # element (hw/quantizer.py), so those inputs follow the element's
        # quantizer through a delay line.
        tg_q = Signal(2)
        q_dly = [Signal(2, name=f"q_dly{k}") for k in range(5)]
        m.d.comb += q_dly[0].eq(tg_q)
        for k in range(1, 5):
            m.d.sync += q_dly[k].eq(q_dly[k - 1])
        wq = Signal(2)                   # quantizer whose codes are being written
        m.d.comb += [quant.sb.eq(sb), quant.sh.eq(Array(sh_v)[q_dly[3]]), quant.r.eq(Array(r_v)[q_dly[4]]),
                     quant.o.ready.eq(1)]
        for i in range(L):
            m.d.comb += [qp.b[i].eq(b_masked.word_select(i, 32)), qp.cv[i].eq(c_lane(i))]
        q_out_c = Signal(24)             # quantizer beats written (L codes each; C // L per qbuf word)
        m.d.comb += [q_wr.addr.eq(Array([Const(q * qd, range(3 * qd + 1)) for q in range(3)])[wq] + (q_out_c >> CVB)),
                     q_wr.data.eq(quant.o.payload.as_value().replicate(1 << CVB))]
        if CVB:
            m.d.comb += q_wr.en.eq(Mux(quant.o.valid, 1 << q_out_c[:CVB], 0))
        else:
            m.d.comb += q_wr.en.eq(quant.o.valid)
        with m.If(quant.o.valid):
            m.d.sync += q_out_c.eq(q_out_c + 1)

        # max pre-pass
        # Three register stages: |b| per lane (after the read, the lane mask and the negation), the first
        # half of the lanes' maximum tree, the rest; pre_max takes the beat's maximum the cycle after.
        # MAXP exits once the last beat has left the lane registers (one cycle later than a single-cycle
        # pass; compiled programs never run MAXP, see tests/test_core_maxp_cocotb.py), and MAXP_SB, the
        # cycle that sets sb anyway, folds the last beat's maximum into trk_max.
        pre_max = Signal(32)
        lane_abs = []
        abs_v = Signal()
        m.d.sync += abs_v.eq(0)
        for i in range(L):
            a = Signal(32, name=f"pre_abs{i}")
            x = b_masked.word_select(i, 32).as_signed()
            m.d.sync += a.eq(Mux(x < 0, -x, x))
            lane_abs.append(a)
        # maximum over the lanes as a balanced tree (log2(L) compare-and-select levels), registered after
        # the first half of its levels
        def max_levels(level, count, lvl0):
            for lvl in range(lvl0, lvl0 + count):
                nxt_level = []
                for i in range(0, len(level), 2):
                    nxt = Signal(32, name=f"pre_max_l{lvl}_{i // 2}")
                    m.d.comb += nxt.eq(Mux(level[i + 1] > level[i], level[i + 1], level[i]))
                    nxt_level.append(nxt)
                level = nxt_level
            return level
        first = (LB + 1) // 2
        mid = []
        for i, v in enumerate(max_levels(lane_abs, first, 0)):
            r = Signal(32, name=f"pre_mid{i}")
            m.d.sync += r.eq(v)
            mid.append(r)
        mid_v = Signal()
        m.d.sync += mid_v.eq(0)
        level = max_levels(mid, LB - first, first)
        beat_max = Signal(32)
        beat_max_v = Signal()
        m.d.sync += [beat_max.eq(level[0]), beat_max_v.eq(0)]
        beat_new = Signal()
        m.d.comb += beat_new.eq(beat_max_v & (beat_max > pre_max))
        # MAXP_SB: trk_max = max(pre_max, last beat) and sb from it; bitlen is monotonic, so the bit length of
        # the maximum is the larger of the two bit lengths (no compare in front of the priority encoders)
        bl_pre = _bitlen32(m, pre_max, "bl_pre")
        bl_beat = _bitlen32(m, beat_max, "bl_beat")
        bl_fin = Signal(range(33))
        m.d.comb += bl_fin.eq(Mux(beat_max_v & (bl_beat > bl_pre), bl_beat, bl_pre))
        sb_fin = Signal(signed(7))
        m.d.comb += sb_fin.eq(Mux(bl_fin == 0, 0, bl_fin - BS_BITS))

        # ---------------------------------------------------------- tile streams into the TAC (domain md)
        # The sync side starts a LINEAR's matrix (mat_start, in SCALAR), counts the qbuf words the
        # quantization passes complete (q_total, free running) and waits for mat_done in MATRIX. The md side
        # takes copies of the LINEAR's counts at the start, so none of its paths reads a sync register.
        mat_start = Signal()
        mat_done = Signal()
        QB = (3 * qd).bit_length() + 1   # counts of qbuf words, modulo 2^QB (a LINEAR has at most 3 qd)
        q_total = Signal(QB)             # qbuf words completed since reset (wraps)
        word_done = Signal()
        m.d.comb += word_done.eq(quant.o.valid & ((q_out_c[:CVB] == (1 << CVB) - 1 if CVB else 1) |
                                                  (q_out_c == nb_m1)))
        with m.If(word_done):
            m.d.sync += q_total.eq(q_total + 1)
        if split:
            m.submodules.mat_start_cdc = start_cdc = cdc.PulseSynchronizer("sync", md)
            m.d.comb += start_cdc.i.eq(mat_start)
            # registered twice more: the second register is a copy for the sequencer's counters, and
            # each weight part has its own (start_b, below), as far away as its block RAMs
            start_x0 = Signal()
            start_x = Signal(reset_less=True, attrs=COPY)
            m.d[md] += [start_x0.eq(start_cdc.o), start_x.eq(start_x0)]
            # q_total in Gray code: every sample the md side takes is a count the sync side had
            q_gray = Signal(QB)
            m.d.sync += q_gray.eq(q_total ^ (q_total >> 1))
            q_gray_x = Signal(QB)
            m.submodules.q_total_cdc = cdc.FFSynchronizer(q_gray, q_gray_x, o_domain=md)
            # Gray to binary in two register stages of at most two LUT levels: bit i is the parity of
            # q_gray_x[i:], split at bit H into the parities of [i:H] and [H:]
            H = QB // 2
            q_par_lo = [Signal(name=f"q_par_lo{i}") for i in range(H)]
            q_par_hi = [Signal(name=f"q_par_hi{i}") for i in range(QB - H)]
            m.d[md] += [q_par_lo[i].eq(q_gray_x[i:H].xor()) for i in range(H)]
            m.d[md] += [q_par_hi[j].eq(q_gray_x[H + j:].xor()) for j in range(QB - H)]
            q_total_x = Signal(QB)
            m.d[md] += q_total_x.eq(Cat(*[q_par_lo[i] ^ q_par_hi[0] for i in range(H)], *q_par_hi))
            q_base = Signal(QB)          # q_total when this LINEAR's matrix started: stable long before the
            with m.If(mat_start):        # start pulse arrives
                m.d.sync += q_base.eq(q_total)
            q_base_src = q_base
        else:
            start_x = mat_start
            q_total_x = q_total
            q_base_src = q_total         # taken on the start's own edge
        mat_run = Signal()
        w_done = Signal()
        a_done = Signal()
        # Counters of the md side, all narrow and counting down to zero (no wide compares on its paths):
        # a valid program has rows / R and the tiles of a row block each at most wdepth (checked in DECODE)
        # and inputs of at most max_input (at most qd column blocks per slot).
        TB = wdepth.bit_length()
        CQ = max(1, (qd - 1).bit_length())
        x_nbc_m1 = Signal(CQ)            # md copies of the LINEAR's counts, taken at the start
        x_nbc_z = Signal()               # ... x_nbc_m1 == 0
        x_rb_last = Signal(TB)
        x_rb_z = Signal()                # ... x_rb_last == 0
        x_ns_m1 = Signal(2)
        x_ibase = Array([Signal(QB, name=f"x_ibase{s}") for s in range(3)])        # seg_q[s] * nbc
        x_abase = Array([Signal(range(3 * qd), name=f"x_abase{s}") for s in range(3)])  # qbuf address of seg_q[s]
        x_q_base = Signal(QB)
        # The weight words: each bank has its own copy of the address counter (no one net reaches every
        # bank's block RAMs); w_step reads the word at w_addr and advances.
        WBB = _log2(WMEM_BANK_WORDS)
        w_step = Signal()
        w_addr = Signal(32)              # the next word's address, a counter (no adder before the block RAMs)
        # With a matrix clock each part's counter is loaded beside the sequencer's start_x, from copies of
        # the start and the base kept apart (COPY), so that it can sit by its block RAMs; the first tile is
        # issued three cycles after the start at the earliest (codes_ok), its word read two cycles later.
        # (Copies have no reset: Yosys cannot fold a reset into a kept flip-flop, and the reset is a
        # global net that reaches LUTs slowly.)
        w_step_b = [Signal(name=f"w_step_b{k}", reset_less=split, attrs=COPY if split else {})    # ... per part
                    for k in range(len(w_banks))]
        w_addr_b = [Signal(WBB if nbanks > 1 else 32, name=f"w_addr_b{k}", reset_less=split)
                    for k in range(len(w_banks))]
        for k, (rd, *_) in enumerate(w_banks):
            load, base = start_x, wbase
            if split:
                load = Signal(name=f"start_b{k}", reset_less=True, attrs=COPY)
                base = Signal(len(w_addr_b[k]), name=f"wbase_b{k}", reset_less=True, attrs=COPY)
                m.d[md] += [load.eq(start_x0), base.eq(wbase)]
            m.d.comb += [rd.addr.eq(w_addr_b[k]), rd.en.eq(1)]
            with m.If(load):
                m.d[md] += w_addr_b[k].eq(base)
            with m.Elif(w_step_b[k]):
                m.d[md] += w_addr_b[k].eq(w_addr_b[k] + 1)
        with m.If(w_step):
            m.d[md] += w_addr.eq(w_addr + 1)
        # The code words: (row block, segment, column block) in the order of the tiles; a_step reads the word
        # at a_addr and advances. The counters' zero flags are registers, set from compares of the value
        # before (no compare between a counter and the enables it drives).
        a_step = Signal()
        a_cb_left = Signal(CQ)           # column blocks of the segment after this one
        a_cb_z = Signal()                # ... is zero
        a_s = Signal(2)
        a_s_last = Signal()              # a_s is the last segment
        a_rb_left = Signal(TB)           # row blocks left, this one included
        a_rb_one = Signal()              # ... is one
        a_addr = Signal(range(3 * qd))   # the next code word's qbuf address
        a_idx = Signal(QB)               # ... and its index among the LINEAR's qbuf words (slot * nbc + column block)
        a_at0 = Signal()                 # ... is its segment's first
        m.d.comb += q_rd.addr.eq(a_addr)
        with m.If(a_step):
            with m.If(a_cb_z):
                m.d[md] += [a_cb_left.eq(x_nbc_m1), a_cb_z.eq(x_nbc_z), a_at0.eq(1)]
                with m.If(a_s_last):
                    m.d[md] += [a_s.eq(0), a_s_last.eq(x_ns_m1 == 0), a_rb_left.eq(a_rb_left - 1),
                                a_rb_one.eq(a_rb_left == 2), a_done.eq(a_rb_one),
                                a_idx.eq(x_ibase[0]), a_addr.eq(x_abase[0])]
                with m.Else():
                    m.d[md] += [a_s.eq(a_s + 1), a_s_last.eq(a_s + 1 == x_ns_m1),
                                a_idx.eq(x_ibase[a_s + 1]), a_addr.eq(x_abase[a_s + 1])]
            with m.Else():
                m.d[md] += [a_cb_left.eq(a_cb_left - 1), a_cb_z.eq(a_cb_left == 1), a_idx.eq(a_idx + 1),
                            a_addr.eq(a_addr + 1), a_at0.eq(0)]
        # codes of (slot, column block) are in qbuf: the quantization passes run ahead of the matrix and
        # complete their words in slot order, so the word a_idx is there once more words are complete
        if split:
            # One tile per cycle is issued here: its weight word and its code word are read together, and
            # its tags follow the reads in registers. Nothing after the issue waits (PipelinedTAC): the issue
            # checks that the codes are complete and that the array will have room, both as registers set
            # a cycle ahead from the values the counters take.
            D = tac.result_depth
            issue = Signal()
            codes_ok = Signal()
            credit_ok = Signal(init=1)
            blocks = Signal(range(D + 1))        # row blocks whose last tile is issued, not yet taken from the array
            m.d.comb += [issue.eq(mat_run & ~a_done & codes_ok & credit_ok), a_step.eq(issue),
                         w_done.eq(1), q_rd.en.eq(1)]
            # the weight words are read two cycles after their codes: the issue is registered in the
            # sequencer (w_step0), and each part's counter steps on a copy of that register, kept apart
            # by its block RAMs, so the issue's net stays in the sequencer
            w_step0 = Signal()
            m.d[md] += [w_step0.eq(issue), w_step.eq(w_step0), *(s.eq(w_step0) for s in w_step_b)]
            # the words available, registered (one md cycle later than the count; zero at the start), and
            # compares of it with the indices a_idx can take next, registered too: a count a cycle old is
            # never more than the words there are, so the flags err only on the safe side
            q_avail = Signal(QB)
            q_avail_m1 = Signal(signed(QB + 1))
            m.d[md] += [q_avail.eq(Mux(start_x, 0, q_total_x - x_q_base)),
                        q_avail_m1.eq(Mux(start_x, -1, q_total_x - x_q_base - 1))]
            ok_seg = Array([Signal(name=f"ok_seg{k}") for k in range(3)] + [Const(0)])   # x_ibase[k] < q_avail
            m.d[md] += [ok_seg[k].eq(x_ibase[k] < q_avail) for k in range(3)]
            ok_hold, ok_inc, ok_adv = Signal(), Signal(), Signal()
            m.d.comb += [ok_hold.eq(a_idx < q_avail), ok_inc.eq(a_idx < q_avail_m1),
                         ok_adv.eq(Mux(a_cb_z, Mux(a_s_last, ok_seg[0], ok_seg[a_s + 1]), ok_inc))]
            # the flags are a start's own until two cycles after it (x_ibase and q_avail are new then)
            start_x1 = Signal()
            m.d[md] += [start_x1.eq(start_x), codes_ok.eq(~start_x & ~start_x1 & Mux(issue, ok_adv, ok_hold))]
            blocks_next = Signal(range(D + 2))
            m.d.comb += blocks_next.eq(blocks + (issue & a_cb_z) - (tac.o.valid & tac.o.ready))
            m.d[md] += [blocks.eq(blocks_next), credit_ok.eq(blocks_next < D)]
            # the tile's tags (first, last, valid) in registers beside the reads; the bank of the word the
            # banks read (two cycles after the issue), then the banks' words registered next to them, each zero
            # unless its bank holds the tile (the bank select is an OR). Data registers have no reset.
            nbb = max(1, (nbanks - 1).bit_length())
            tags = Cat(issue, a_at0, a_cb_z)
            for h in range(4):
                reg = Signal(3, name=f"t{h + 1}_tags")
                m.d[md] += reg.eq(tags)
                tags = reg
            # (one bank-select register per part, next to its block RAMs)
            t2_bank = [Signal(name=f"t2_bank{i}", reset_less=True, attrs=COPY) for i in range(len(w_banks))]
            m.d[md] += [t2_bank[i].eq(w_addr[WBB:WBB + nbb] == part[4] if nbanks > 1 else 1)
                        for i, part in enumerate(w_banks)]
            p2_data = [Signal(len(rd.data), name=f"w_part_q{i}", reset_less=True)
                       for i, (rd, *_) in enumerate(w_banks)]
            q2, q3, q4 = (Signal(8 * C, name=f"q{h}", reset_less=True) for h in (2, 3, 4))
            for i, (rd, *_) in enumerate(w_banks):
                m.d[md] += p2_data[i].eq(Mux(t2_bank[i], rd.data, 0))
            m.d[md] += [q2.eq(q_rd.data), q3.eq(q2), q4.eq(q3)]
            # HAUL more register stages on the way to the array: the block RAMs are spread over the die,
            # and one stage per net keeps each hop short (the placer spreads the stages along the way)
            hauled = [*p2_data, q4, tags]
            for h in range(HAUL):
                regs = [Signal(len(x), name=f"haul{h}_{i}", reset_less=i < len(hauled) - 1)
                        for i, x in enumerate(hauled)]
                m.d[md] += [r.eq(x) for r, x in zip(regs, hauled)]
                hauled = regs
            *parts, codes, tags = hauled
            word = 0
            for k in range(nbanks):
                word = word | Cat(*(d for d, part in zip(parts, w_banks) if part[4] == k))
            m.d.comb += [tac.i.valid.eq(tags[0]), tac.i.p.w.eq(word), tac.i.p.a.eq(codes),
                         tac.i.p.first.eq(tags[1]), tac.i.p.last.eq(tags[2])]
        else:
            # Weight read pipeline, never stalled: the banks' outputs are registered next to them, the bank
            # select muxes them into a second register, and a small FIFO in front of the decoder takes the
            # words. A word is read only when the FIFO will have room for it (w_inflight counts the words
            # read and not yet taken), so no ready signal reaches the block RAMs.
            # FIFO depth: a word is readable 4 cycles after its read; 5 keep one per cycle.
            WQ = 5
            m.submodules.wfifo = wfifo = fifo.SyncFIFO(width=wbits, depth=WQ)
            w_inflight = Signal(range(WQ + 1))
            w_k_left = Signal(TB)            # tiles of the row block after this one
            w_k_z = Signal()                 # ... is zero
            w_rb_left = Signal(TB)           # row blocks left, this one included
            w_rb_one = Signal()              # ... is one
            m.d.comb += w_step.eq(mat_run & ~w_done & (w_inflight != WQ))
            m.d.comb += [sb.eq(w_step) for sb in w_step_b]
            p1_v, p2_v = Signal(), Signal()
            p1_sel = Signal(range(max(2, nbanks)))
            p2_sel = Signal.like(p1_sel)
            p2_data = [Signal(wbits, name=f"w_bank_q{k}") for k in range(len(w_banks))]     # one part per bank
            for k, (rd, *_) in enumerate(w_banks):
                m.d.sync += p2_data[k].eq(rd.data)
            m.d.sync += [p1_v.eq(w_step), p1_sel.eq(w_addr[WBB:] if nbanks > 1 else 0),
                         p2_v.eq(p1_v), p2_sel.eq(p1_sel)]
            m.d.sync += [wfifo.w_en.eq(p2_v),
                         wfifo.w_data.eq(Array(p2_data)[p2_sel] if nbanks > 1 else p2_data[0])]
            m.d.comb += [tac.w.valid.eq(wfifo.r_rdy), tac.w.payload.eq(wfifo.r_data), wfifo.r_en.eq(tac.w.ready)]
            m.d.sync += w_inflight.eq(w_inflight + w_step - (wfifo.r_rdy & wfifo.r_en))
            with m.If(w_step):
                with m.If(w_k_z):
                    m.d.sync += [w_k_left.eq(x_rb_last), w_k_z.eq(x_rb_z), w_rb_left.eq(w_rb_left - 1),
                                 w_rb_one.eq(w_rb_left == 2), w_done.eq(w_rb_one)]
                with m.Else():
                    m.d.sync += [w_k_left.eq(w_k_left - 1), w_k_z.eq(w_k_left == 1)]
            with m.If(start_x):
                m.d.sync += [w_k_left.eq(rb_last), w_k_z.eq(rb_last == 0),
                             w_rb_left.eq(nrb), w_rb_one.eq(nrb == 1), w_done.eq(nrb == 0)]
            # the code stream: a register of (codes, first, last) in front of the array, refilled as it drains
            a_valid = Signal()
            a_first = Signal()
            a_last = Signal()
            q_rd_en_mat = Signal()
            codes_ok = Signal()
            m.d.comb += codes_ok.eq(a_idx < (q_total_x - x_q_base)[:QB])
            m.d.comb += [q_rd_en_mat.eq(~a_valid | tac.a.ready), q_rd.en.eq(q_rd_en_mat),
                         a_step.eq(q_rd_en_mat & mat_run & ~a_done & codes_ok),
                         tac.a.valid.eq(a_valid), tac.a.payload.a.eq(q_rd.data),
                         tac.a.payload.first.eq(a_first), tac.a.payload.last.eq(a_last)]
            with m.If(q_rd_en_mat):
                m.d.sync += [a_valid.eq(mat_run & ~a_done & codes_ok), a_first.eq(a_at0), a_last.eq(a_cb_z)]
        # the end of the tiles, and the start (last, so that it wins)
        with m.If(mat_run & w_done & a_done):
            m.d[md] += mat_run.eq(0)
        with m.If(start_x):
            slot_idx = Array([Const(0, QB), nbc[:QB], (nbc << 1)[:QB]])
            slot_addr = Array([Const(q * qd, range(3 * qd)) for q in range(3)])
            m.d[md] += [mat_run.eq(1), w_addr.eq(wbase),
                        a_cb_left.eq(nbc_m1), a_cb_z.eq(nbc_m1 == 0), a_s.eq(0), a_s_last.eq(ns == 1),
                        a_rb_left.eq(nrb), a_rb_one.eq(nrb == 1), a_done.eq(nrb == 0), a_at0.eq(1),
                        x_rb_z.eq(rb_last == 0), x_nbc_z.eq(nbc_m1 == 0),
                        a_idx.eq(slot_idx[seg_q[0]]), a_addr.eq(slot_addr[seg_q[0]]),
                        x_nbc_m1.eq(nbc_m1), x_rb_last.eq(rb_last), x_ns_m1.eq(ns - 1), x_q_base.eq(q_base_src)]
            m.d[md] += [x_ibase[s].eq(slot_idx[seg_q[s]]) for s in range(3)]
            m.d[md] += [x_abase[s].eq(slot_addr[seg_q[s]]) for s in range(3)]
        # back to sync: the end of the tiles, the row-block results, the decoder's error
        if split:
            start_tgl = Signal()
            done_tgl = Signal()
            done_tgl_s = Signal()
            with m.If(mat_start):
                m.d.sync += start_tgl.eq(~start_tgl)
            with m.If(mat_run & w_done & a_done):
                m.d[md] += done_tgl.eq(~done_tgl)
            m.submodules.mat_done_cdc = cdc.FFSynchronizer(done_tgl, done_tgl_s, o_domain="sync")
            m.d.comb += mat_done.eq(done_tgl_s == start_tgl)
            m.submodules.acc_cdc = acc_cdc = fifo.AsyncFIFO(width=R * ACC_BITS, depth=4, r_domain="sync",
                                                             w_domain=md)
            # room for a row block, registered, so the TAC's output register enables start at a flip-flop;
            # w_level is a register, a cycle behind the writes: the room counts the last two cycles' writes
            acc_room = Signal(init=1)
            acc_wr = Signal()
            acc_wr_1 = Signal()
            m.d.comb += acc_wr.eq(tac.o.valid & acc_room)
            m.d[md] += [acc_wr_1.eq(acc_wr), acc_room.eq(acc_cdc.w_level + acc_wr_1 + acc_wr < acc_cdc.depth)]
            m.d.comb += [acc_cdc.w_data.eq(tac.o.payload), acc_cdc.w_en.eq(acc_wr), tac.o.ready.eq(acc_room)]
            acc_valid, acc_payload, acc_ready = acc_cdc.r_rdy, acc_cdc.r_data, acc_cdc.r_en
            m.submodules.error_cdc = cdc.FFSynchronizer(tac.error, tac_error, o_domain="sync")
            m.submodules.error_clear_cdc = clear_cdc = cdc.PulseSynchronizer("sync", md)
            m.d.comb += [clear_cdc.i.eq(self.cmd.valid & self.cmd.ready), tac.error_clear.eq(clear_cdc.o)]
        else:
            m.d.comb += mat_done.eq(w_done & a_done)
            acc_valid, acc_payload, acc_ready = tac.o.valid, tac.o.payload, tac.o.ready
            m.d.comb += [tac_error.eq(tac.error), tac.error_clear.eq(self.cmd.valid & self.cmd.ready)]

        # ---------------------------------------------------------- feeder: row blocks / embedding -> elements
        # element stream into the dequantizers (or the top-k)
        el_valid = Signal()
        el_ready = Signal()
        el_acc = [Signal(signed(ACC_BITS), name=f"el_acc{s}") for s in range(3)]
        el_m = [Signal(16, name=f"el_m{s}") for s in range(3)]
        el_e = [Signal(signed(18), name=f"el_e{s}") for s in range(3)]
        el_aux = Signal(32)
        el_lb = Signal(16)
        el_acc_b = Signal(signed(ACC_BITS))
        el_aux_b = Signal(32)

        f_mode_embed = Signal()
        if L >= 2:
            # EMBED with int8 codes: one cmem word holds two codes, both go out together
            m.d.comb += dual.eq(Mux(f_mode_embed, ~e_code16,
                                    epi_is[isa.Epilogue.WRITE] | epi_is[isa.Epilogue.ADD] |
                                    epi_is[isa.Epilogue.TOPK]))
        f_run = Signal()
        f_rb = Signal(24)                # row block (LINEAR) / element index (EMBED)
        f_s = Signal(2)
        f_r = Signal(range(R))
        accbuf = [[Signal(data.ArrayLayout(signed(ACC_BITS), R), name=f"accbuf{b}_{s}") for s in range(3)]
                  for b in range(2)]
        auxw = [Signal(32 * R, name=f"auxw{b}") for b in range(2)]
        lbw = [Signal(16 * R, name=f"lbw{b}") for b in range(2)]
        f_done = Signal()
        emb_code = Signal(signed(16))
        emb_code_b = Signal(signed(8))
        emb_m = Signal(16)
        emb_e = Signal(signed(16))

        side = fifo.SyncFIFOBuffered(width=80, depth=16)
        m.submodules.side = side

        # Credit flow through the epilogue: an element enters the dequantizers only while fewer than EQ
        # elements are between them and the collector (in the pipelines or in the result FIFO below).
        # The pipelines' outputs are then always taken, so no ready signal runs back through them (their
        # stall enables are constant) and the collector's ready only reaches the result FIFO.
        EQ = 48                          # > the longest path, dequantizer 7 + MLGRU 27 cycles
        el_inflight = Signal(range(EQ + 1))
        credit_ok = Signal()
        m.d.comb += credit_ok.eq(el_inflight != EQ)
        # dequantizers in lockstep; the op stage takes their outputs together with the side FIFO
        dq_ready = dqs[0].i.ready
        el_go = Signal()
        m.d.comb += el_go.eq(el_valid & side.w_rdy & credit_ok)
        for s in range(3):
            m.d.comb += [dqs[s].i.valid.eq(el_go),
                         dqs[s].i.payload.acc.eq(el_acc[s]), dqs[s].i.payload.m.eq(el_m[s]),
                         dqs[s].i.payload.e.eq(el_e[s])]
        m.d.comb += [side.w_data.eq(Cat(el_aux, el_lb, el_aux_b)), side.w_en.eq(el_go & dq_ready)]
        m.d.comb += [dq_b.i.valid.eq(el_go), dq_b.i.payload.acc.eq(el_acc_b),
                     dq_b.i.payload.m.eq(el_m[0]), dq_b.i.payload.e.eq(el_e[0])]

        topk_mode = Signal()
        tk_id = Signal(16)
        # The top-k units take their candidates from a register stage (the feeder's accumulator mux no
        # longer runs into every slot's compare). The units never stall while candidates arrive (they are
        # ready until a flush), and the flush comes at least three cycles after the feeder's last element,
        # so the stage costs no cycles.
        tk_free = Signal()
        tk_free_b = Signal()
        m.d.comb += [tk_free.eq(~topk.i.valid | topk.i.ready), tk_free_b.eq(~topk_b.i.valid | topk_b.i.ready)]
        with m.If(topk.i.ready):
            m.d.sync += topk.i.valid.eq(0)
        with m.If(topk_b.i.ready):
            m.d.sync += topk_b.i.valid.eq(0)

        # element handshake: dequant path or top-k
        with m.If(topk_mode):
            m.d.comb += el_ready.eq(topk.i.ready)
        with m.Else():
            m.d.comb += el_ready.eq(dq_ready & side.w_rdy & credit_ok)

        # ---------------------------------------------------------- op stage
        dq_o_valid = dqs[0].o.valid
        side_aux = side.r_data[0:32]
        side_lb = side.r_data[32:48]
        side_aux_b = side.r_data[48:80]
        join_valid = Signal()
        m.d.comb += join_valid.eq(dq_o_valid & side.r_rdy)
        op_ready = Signal()
        m.d.comb += op_ready.eq(1)       # the op stage never stalls (credit flow, above)
        for s in range(3):
            m.d.comb += dqs[s].o.ready.eq(join_valid & op_ready)
        m.d.comb += dq_b.o.ready.eq(join_valid & op_ready)
        m.d.comb += side.r_en.eq(join_valid & op_ready)
        y = [dqs[s].o.payload for s in range(3)]

        m.d.comb += [mlgru.i.payload.i.eq(y[0]), mlgru.i.payload.f.eq(y[1]), mlgru.i.payload.g.eq(y[2]),
                     mlgru.i.payload.h.eq(side_aux), mlgru.i.payload.lb.eq(side_lb),
                     mlgru.i.payload.has_lb.eq(has_lb),
                     glu.i.payload.a.eq(y[0]), glu.i.payload.b.eq(y[1]),
                     radd.i.payload.a.eq(side_aux), radd.i.payload.b.eq(y[0]),
                     radd_b.i.payload.a.eq(side_aux_b), radd_b.i.payload.b.eq(dq_b.o.payload)]
        mode_embed_op = f_mode_embed
        # results of the op stage, always taken
        pipe_valid = Signal()
        pipe_y = Signal(32)
        pipe_y_b = Signal(32)
        pipe_h = Signal(32)
        m.d.comb += [u.o.ready.eq(1) for u in (mlgru, glu, radd, radd_b)]
        with m.If(mode_embed_op | epi_is[isa.Epilogue.WRITE]):
            m.d.comb += [pipe_valid.eq(join_valid), pipe_y.eq(y[0]), pipe_y_b.eq(dq_b.o.payload)]
        with m.Elif(epi_is[isa.Epilogue.ADD]):
            m.d.comb += [radd.i.valid.eq(join_valid), radd_b.i.valid.eq(join_valid),
                         pipe_valid.eq(radd.o.valid), pipe_y.eq(radd.o.payload), pipe_y_b.eq(radd_b.o.payload)]
        with m.Elif(epi_is[isa.Epilogue.GLU]):
            m.d.comb += [glu.i.valid.eq(join_valid), pipe_valid.eq(glu.o.valid), pipe_y.eq(glu.o.payload)]
        with m.Elif(epi_is[isa.Epilogue.MLGRU]):
            m.d.comb += [mlgru.i.valid.eq(join_valid), pipe_valid.eq(mlgru.o.valid),
                         pipe_y.eq(mlgru.o.payload.bo), pipe_h.eq(mlgru.o.payload.h)]
        # the result FIFO: results wait here while the collector is busy; when it is empty a result goes
        # straight through (no cycle added)
        m.submodules.rfifo = rfifo = fifo.SyncFIFO(width=96, depth=EQ)
        res_valid = Signal()
        res_ready = Signal()
        res_y = Signal(32)
        res_y_b = Signal(32)
        res_h = Signal(32)
        m.d.comb += [res_valid.eq(rfifo.r_rdy | pipe_valid),
                     Cat(res_y, res_y_b, res_h).eq(Mux(rfifo.r_rdy, rfifo.r_data, Cat(pipe_y, pipe_y_b, pipe_h))),
                     rfifo.w_data.eq(Cat(pipe_y, pipe_y_b, pipe_h)),
                     rfifo.w_en.eq(pipe_valid & (rfifo.r_rdy | ~res_ready)),
                     rfifo.r_en.eq(res_ready)]
        el_take = Signal()
        m.d.comb += el_take.eq(el_go & dq_ready & ~topk_mode)
        m.d.sync += el_inflight.eq(el_inflight + el_take - (res_valid & res_ready))

        # ---------------------------------------------------------- collector: elements -> vmem words
        col_r = Signal(range(L))
        col_rb = Signal(24)
        col_word = Signal(32 * L)
        col_hword = Signal(32 * L)
        col_wr_h = Signal()              # pending h word write (next cycle)
        col_done = Signal()
        col_rows = Signal(24)            # valid elements of the vector being written
        col_dst = Signal(24)
        col_nrb = Signal(24)
        col_nrb_m1 = Signal((col_nrb - 1).shape(), init=-1)     # col_nrb - 1, set with it
        col_mask = Signal(L)
        for i in range(L):
            m.d.comb += col_mask[i].eq(Cat(Const(i, LB) if LB else Const(0, 0), col_rb) < col_rows)
        sh_go = Signal()                 # the shadow statistics can take the collector's element
        m.d.comb += res_ready.eq(~col_wr_h & ~col_done & sh_go)
        # run_max follows the written elements one cycle behind (the pair's maximum is registered first);
        # run_max_now folds in the pending one for the readers
        run_cand = Signal(32)
        run_cand_v = Signal()
        run_max_now = Signal(32)
        m.d.comb += run_max_now.eq(Mux(run_cand_v & (run_cand > run_max), run_cand, run_max))
        m.d.sync += [run_max.eq(run_max_now), run_cand_v.eq(0)]
        res_abs = Signal(32)
        ys = res_y.as_signed()
        m.d.comb += res_abs.eq(Mux(ys < 0, -ys, ys))
        lane_valid_now = Signal()
        m.d.comb += lane_valid_now.eq(Cat(col_r, col_rb) < col_rows if LB else col_rb < col_rows)
        lane_valid_b = Signal()
        m.d.comb += lane_valid_b.eq(dual & ((Cat(col_r, col_rb) + 1) < col_rows))
        res_abs_b = Signal(32)
        ys_b = res_y_b.as_signed()
        m.d.comb += res_abs_b.eq(Mux(ys_b < 0, -ys_b, ys_b))
        word_next = Signal(32 * L)
        hword_next = Signal(32 * L)
        m.d.comb += [word_next.eq(col_word), hword_next.eq(col_hword)]
        with m.Switch(col_r):
            for i in range(L):
                with m.Case(i):
                    m.d.comb += [word_next.word_select(i, 32).eq(res_y), hword_next.word_select(i, 32).eq(res_h)]
                    if i + 1 < L:
                        with m.If(dual):
                            m.d.comb += word_next.word_select(i + 1, 32).eq(res_y_b)
        last_lane = Signal()
        m.d.comb += last_lane.eq(Mux(dual, col_r == L - 2, col_r == L - 1))

        # vmem write port arbitration: collector / zeroing / load. The winner's address, data and lane
        # enables are registered before the block RAMs (the collector's logic and the RAMs' pins are apart on
        # the die); nothing reads a vmem word within a cycle of its write (the next instruction's first read
        # comes after LOADI and DECODE).
        vw_addr = Signal.like(v_wr.addr)
        vw_data = Signal.like(v_wr.data)
        vw_en = Signal.like(v_wr.en)
        m.d.sync += [v_wr.addr.eq(vw_addr), v_wr.data.eq(vw_data), v_wr.en.eq(vw_en)]
        load_go = Signal()
        m.d.comb += load_go.eq(self.load.valid & self.load.ready)
        wr_zero = Signal()
        zero_addr = Signal(range(vdepth + 1))
        with m.If(res_valid & res_ready):
            m.d.sync += [col_word.eq(word_next), col_hword.eq(hword_next)]
            pair_max = Signal(32)
            m.d.comb += pair_max.eq(Mux(lane_valid_b & (res_abs_b > res_abs), res_abs_b,
                                        Mux(lane_valid_now, res_abs, 0)))
            m.d.sync += [run_cand.eq(pair_max), run_cand_v.eq(1)]
            with m.If(last_lane):
                m.d.sync += col_r.eq(0)
            with m.Else():
                m.d.sync += col_r.eq(col_r + 1 + dual)
        with m.If(wr_zero):
            m.d.comb += [vw_addr.eq(zero_addr), vw_data.eq(0), vw_en.eq((1 << L) - 1)]
        with m.Elif(res_valid & res_ready & last_lane):
            m.d.comb += [vw_addr.eq((col_dst >> LB) + col_rb), vw_data.eq(word_next), vw_en.eq(col_mask)]
            with m.If(epi_is[isa.Epilogue.MLGRU] & ~f_mode_embed):
                m.d.sync += col_wr_h.eq(1)
            with m.Else():
                m.d.sync += col_rb.eq(col_rb + 1)
                with m.If(col_rb == col_nrb_m1):
                    m.d.sync += col_done.eq(1)
        with m.Elif(col_wr_h):
            m.d.comb += [vw_addr.eq((aux >> LB) + col_rb), vw_data.eq(col_hword), vw_en.eq(col_mask)]
            m.d.sync += [col_wr_h.eq(0), col_rb.eq(col_rb + 1)]
            with m.If(col_rb == col_nrb_m1):
                m.d.sync += col_done.eq(1)
        with m.Elif(load_go & (self.load.payload.mem == MemoryId.VMEM)):
            m.d.comb += [vw_addr.eq(self.load.payload.addr >> LB), vw_en.eq(1 << self.load.payload.addr[:LB]
                                                                                  if LB else 1)]
            m.d.comb += vw_data.eq(self.load.payload.data[:32].replicate(L))
        # other memories' load writes
        for _, wr, start, depth, _, lo, hi in w_banks:
            m.d.comb += [wr.addr.eq(self.load.payload.addr - start), wr.data.eq(self.load.payload.data[lo:hi]),
                         wr.en.eq(load_go & (self.load.payload.mem == MemoryId.WMEM) &
                                  (self.load.payload.addr >= start) & (self.load.payload.addr < start + depth))]
        m.d.comb += [
                     c_wr.addr.eq(self.load.payload.addr >> LB),
                     c_wr.data.eq(self.load.payload.data[:16].replicate(L)),
                     c_wr.en.eq(Mux(load_go & (self.load.payload.mem == MemoryId.CMEM),
                                    (1 << self.load.payload.addr[:LB]) if LB else 1, 0)),
                     p_wr.addr.eq(self.load.payload.addr), p_wr.data.eq(self.load.payload.data[:64]),
                     p_wr.en.eq(load_go & (self.load.payload.mem == MemoryId.PMEM))]

        # ---------------------------------------------------------- feeder logic
        # Two row-block buffers: the next row block's accumulators and aux/lb
        # words are collected while the current one is emitted.
        c_rb = Signal(24)                # row block whose TAC beats come next
        c_s = Signal(2)
        r_idx = Signal(24 + RVB)         # aux/lb word read next: row block r_rb, word r_sub of it
        r_rb = r_idx[RVB:]
        r_sub = r_idx[:RVB]
        beats_ok = Signal(2)
        aux_ok = Signal(2)
        f_cap = Signal()                 # aux/lb read data arrives this cycle
        f_capb = Signal()
        f_capsub = Signal(max(RVB, 1))
        f_caplast = Signal()             # ... the row block's last word
        feeder_hold = Signal()           # the vector read ports are busy elsewhere
        f_rd_issue = Signal()
        set_beats, set_aux, clr_buf = Signal(2), Signal(2), Signal(2)
        c_buf = c_rb[0]
        r_buf = r_rb[0]
        m.d.comb += acc_ready.eq(f_run & ~f_mode_embed & (c_rb < nrb) & ~beats_ok.bit_select(c_buf, 1))
        with m.If(f_run & ~f_mode_embed & acc_valid & acc_ready):
            for b_ in range(2):
                for s_ in range(3):
                    with m.If((c_buf == b_) & (c_s == s_)):
                        m.d.sync += accbuf[b_][s_].eq(acc_payload)
            with m.If(c_s == ns - 1):
                m.d.sync += [c_s.eq(0), c_rb.eq(c_rb + 1)]
                m.d.comb += set_beats.eq(Mux(c_buf, 2, 1))
            with m.Else():
                m.d.sync += c_s.eq(c_s + 1)
        m.d.comb += f_rd_issue.eq(f_run & ~f_mode_embed & ~feeder_hold & (r_rb < nrb) &
                                  ~aux_ok.bit_select(r_buf, 1) & ~(f_cap & f_caplast & (f_capb == r_buf)))
        with m.If(f_rd_issue):
            m.d.sync += r_idx.eq(r_idx + 1)
        m.d.sync += [f_cap.eq(f_rd_issue), f_capb.eq(r_buf), f_caplast.eq(r_sub == (1 << RVB) - 1 if RVB else 1)]
        if RVB:
            m.d.sync += f_capsub.eq(r_sub)
        with m.If(f_cap):
            for b_ in range(2):
                with m.If(f_capb == b_):
                    if RVB:
                        m.d.sync += [auxw[b_].word_select(f_capsub, 32 * L).eq(v_lanes),
                                     lbw[b_].word_select(f_capsub, 16 * L).eq(c_lanes)]
                    else:
                        m.d.sync += [auxw[b_].eq(v_lanes), lbw[b_].eq(c_lanes)]
            with m.If(f_caplast):
                m.d.comb += set_aux.eq(Mux(f_capb, 2, 1))
        m.d.sync += [beats_ok.eq((beats_ok | set_beats) & ~clr_buf), aux_ok.eq((aux_ok | set_aux) & ~clr_buf)]
        e_buf = f_rb[0]
        e_full = Signal()
        m.d.comb += e_full.eq(beats_ok.bit_select(e_buf, 1) & aux_ok.bit_select(e_buf, 1))
        # element of the current row block (LINEAR)
        sel_scale = [Signal(2, name=f"segq{s}") for s in range(3)]
        for s in range(3):
            m.d.comb += sel_scale[s].eq(seg_q[s])
        with m.If(f_mode_embed):
            m.d.comb += [el_acc[0].eq(emb_code), el_m[0].eq(emb_m), el_e[0].eq(emb_e), el_acc_b.eq(emb_code_b)]
        with m.Else():
            for s in range(3):
                m.d.comb += [el_acc[s].eq(Mux(e_buf, accbuf[1][s][f_r], accbuf[0][s][f_r])),
                             el_m[s].eq(Array(scale_m)[sel_scale[s]]), el_e[s].eq(Array(scale_e)[sel_scale[s]])]
            m.d.comb += [el_aux.eq(Mux(e_buf, auxw[1], auxw[0]).word_select(f_r, 32)),
                         el_lb.eq(Mux(e_buf, lbw[1], lbw[0]).word_select(f_r, 16))]
            f_r_b = Signal(range(R))
            m.d.comb += f_r_b.eq(f_r + 1)
            m.d.comb += [el_acc_b.eq(Mux(e_buf, accbuf[1][0][f_r_b], accbuf[0][0][f_r_b])),
                         el_aux_b.eq(Mux(e_buf, auxw[1], auxw[0]).word_select(f_r_b, 32))]
        m.d.comb += tk_id.eq(Cat(f_r, f_rb) if RB else f_rb)
        adv = Signal()                   # the feeder's element leaves this cycle
        with m.If(f_run & ~f_mode_embed & e_full):
            with m.If(topk_mode):
                # padded rows never enter the top-k
                m.d.comb += el_valid.eq(0)
                m.d.comb += adv.eq(((tk_id >= rows) | tk_free) & ((tk_id + 1 >= rows) | tk_free_b))
                with m.If(adv):
                    m.d.sync += [topk.i.valid.eq(tk_id < rows), topk_b.i.valid.eq(tk_id + 1 < rows),
                                 topk.i.payload.id.eq(tk_id), topk.i.payload.acc.eq(el_acc[0]),
                                 topk_b.i.payload.id.eq(tk_id + 1), topk_b.i.payload.acc.eq(el_acc_b)]
            with m.Else():
                m.d.comb += el_valid.eq(scales_ready)
                m.d.comb += adv.eq(scales_ready & el_ready)
            with m.If(adv):
                with m.If(Mux(dual, f_r == R - 2, f_r == R - 1)):
                    m.d.sync += [f_rb.eq(f_rb + 1), f_r.eq(0)]
                    m.d.comb += clr_buf.eq(Mux(e_buf, 2, 1))
                    with m.If(f_rb + 1 == nrb):
                        m.d.sync += [f_done.eq(1), f_run.eq(0)]
                with m.Else():
                    m.d.sync += f_r.eq(f_r + 1 + dual)
        # the reads of the row block r_rb (issued with f_rd_issue)
        f_rd_v = Signal(24)
        # the lower-bound words are read only for an MLGRU with lower bounds; otherwise the cmem port
        # stays with the shadow statistics' loader
        need_lb = Signal()
        m.d.comb += need_lb.eq(epi_is[isa.Epilogue.MLGRU] & has_lb)
        f_rd_c = Signal(32)
        m.d.comb += [f_rd_v.eq((aux >> LB) + r_idx), f_rd_c.eq((lb_addr >> LB) + r_idx)]

        # embedding: one element per cycle; stage 1 reads cmem, stage 2 holds the code
        e_j = Signal(24)                 # next element to read
        e_tag = Signal()                 # read data of element e_tj is on the port
        e_tj = Signal(24)
        e_tword = Signal(32)
        e_hold = Signal()                # an element waits in emb_code for the dequantizer
        e_stride = Signal(24)
        e_end = Signal(24)               # elements emitted: whole vmem words (the collector masks the rest)
        m.d.comb += e_end.eq(((e_n + L - 1) >> LB) << LB)
        m.d.comb += e_stride.eq(Mux(e_code16, e_n, (e_n + 1) >> 1))
        e_row = Signal(32)
        e_mul = Signal(16)               # e_row = codes + token * stride, one bit of token per cycle
        e_add = Signal(32)
        with m.If(e_mul != 0):
            m.d.sync += [e_mul.eq(e_mul >> 1), e_add.eq(e_add << 1)]
            with m.If(e_mul[0]):
                m.d.sync += e_row.eq(e_row + e_add)
        e_word = Signal(32)
        m.d.comb += e_word.eq(Mux(e_code16, e_row + e_j, e_row + (e_j >> 1)))
        e_sel_word = Signal(16)
        m.d.comb += e_sel_word.eq(c_lanes.word_select(e_tword[:LB] if LB else Const(0, 1), 16))
        e_go = Signal()                  # the EMBED state runs the pipeline
        e_adv = Signal()                 # stage 2 can take the read data
        with m.If(e_go):
            m.d.comb += [el_valid.eq(e_hold), e_adv.eq(~e_tag | ~e_hold | el_ready), c_rd.en.eq(e_adv)]
            with m.If(e_hold & el_ready):
                m.d.sync += e_hold.eq(0)
            with m.If(e_adv):
                with m.If(e_tag):
                    m.d.sync += [e_hold.eq(1),
                                 emb_code_b.eq(e_sel_word[8:16].as_signed()),
                                 emb_code.eq(Mux(e_code16, e_sel_word.as_signed(),
                                                 Mux(e_tj[0], e_sel_word[8:16].as_signed(),
                                                     e_sel_word[0:8].as_signed())))]
                m.d.sync += e_tag.eq(e_j < e_end)
                with m.If(e_j < e_end):
                    m.d.sync += [e_tj.eq(e_j), e_tword.eq(e_word), e_j.eq(e_j + 1 + dual)]
            with m.If((e_j == e_end) & ~e_tag & (~e_hold | el_ready)):
                m.d.sync += [f_run.eq(0), f_done.eq(1)]

        # ---------------------------------------------------------- read port address muxes
        v_rd_addr = Signal(vdepth.bit_length() + 1)
        c_rd_addr = Signal(32)
        m.d.comb += [v_rd.addr.eq(v_rd_addr), c_rd.addr.eq(c_rd_addr), ]

        # ---------------------------------------------------------- instruction prefetch
        # Fetches the next instruction into nbuf (one word per cycle) while the
        # current one runs; LOADI takes it.
        fpc = Signal(16)                 # address of the instruction in nbuf / being fetched
        f_iss = Signal(4)                # next word to read
        ftag_v = Signal()
        ftag = Signal(4)
        nbuf = [Signal(64, name=f"nbuf{k}") for k in range(10)]
        nbuf_arr = Array(nbuf)
        n_len = Signal(4)
        n_len_ok = Signal()
        n_valid = Signal()
        n_take = Signal()
        n_nq = nbuf[0][12:14]
        fetch_restart = Signal()
        fetch_on = Signal()              # a step is running
        m.d.comb += p_rd.addr.eq(fpc + f_iss)
        f_issue = Signal()
        m.d.comb += f_issue.eq(fetch_on & ~n_valid & (f_iss < 10) & ~(n_len_ok & (f_iss >= n_len)))
        m.d.sync += [ftag_v.eq(f_issue), ftag.eq(f_iss)]
        with m.If(f_issue):
            m.d.sync += f_iss.eq(f_iss + 1)
        d_len = Signal(4)
        with m.Switch(p_rd.data[0:8]):
            with m.Case(isa.Op.EMBED):
                m.d.comb += d_len.eq(2)
            with m.Case(isa.Op.LINEAR):
                m.d.comb += d_len.eq(4 + p_rd.data[12:14] + p_rd.data[14:16])
            with m.Default():
                m.d.comb += d_len.eq(1)
        with m.If(ftag_v & ~n_valid):
            for k in range(10):
                with m.If(ftag == k):
                    m.d.sync += nbuf[k].eq(p_rd.data)
            with m.If(ftag == 0):
                m.d.sync += [n_len.eq(d_len), n_len_ok.eq(1)]
                with m.If(d_len == 1):
                    m.d.sync += [n_valid.eq(1), f_iss.eq(0), ftag_v.eq(0)]
            with m.Elif(n_len_ok & (ftag + 1 == n_len)):
                m.d.sync += [n_valid.eq(1), f_iss.eq(0), ftag_v.eq(0)]
        with m.If(n_take):
            m.d.sync += [n_valid.eq(0), n_len_ok.eq(0), fpc.eq(fpc + n_len)]
        stepping = Signal()
        fetch_stop = Signal()
        m.d.comb += fetch_on.eq(stepping)
        with m.If(fetch_restart):
            m.d.sync += [fpc.eq(0), f_iss.eq(0), ftag_v.eq(0), n_valid.eq(0), n_len_ok.eq(0), stepping.eq(1)]
        with m.If(fetch_stop):
            m.d.sync += stepping.eq(0)

        # ---------------------------------------------------------- shadow statistics
        # The next LINEAR's statistics pass, computed on this instruction's
        # results as the collector writes them, with the block shift predicted
        # from the previous token (``pred``, per LINEAR of the step). When the
        # prediction equals the real block shift the next LINEAR skips its
        # statistics pass; otherwise it runs it: the result is the same.
        # With fewer than 16 vector lanes a mispredicted statistics pass is long (ceil(n / L) beats) and
        # multipliers are left over, so the shadow pass runs for the predicted block shift and its two
        # neighbours (from the previous token, the block shift of a LINEAR stays the same 55 % of the time
        # and moves by one 38 %, ecp5 model); at 16 lanes the ULX3S has no DSPs for two more.
        sh_offs = (0, -1, 1) if L < 16 else (0,)
        sstats_all = [StatsPass(2, 3) for _ in sh_offs]
        for k, u in enumerate(sstats_all):
            m.submodules["sstats" if k == 0 else f"sstats{k}"] = u
        sstats = sstats_all[0]
        m.submodules.pred = pred = memory.Memory(shape=7, depth=128, init=[])
        pred_rd, pred_wr = pred.read_port(), pred.write_port()
        lin_cnt = Signal(7)              # LINEARs begun in this step = index of the next one
        m.d.comb += pred_rd.addr.eq(lin_cnt)
        sh_armed = Signal()
        sh_dead = Signal()
        sh_ok = Signal()
        sh_sb = Signal(signed(6))
        sh_t_all = [Signal(48, name=f"sh_t_{k}") for k in range(len(sh_offs))]
        sh_m_all = [[Signal(31, name=f"sh_m{q}_{k}") for q in range(3)] for k in range(len(sh_offs))]
        n_unit = nbuf[0][16]
        n_nvec = Signal(3)
        m.d.comb += n_nvec.eq(Mux(n_unit, n_nq, n_nq + 1))
        n_cu = nbuf[1][32:64]
        n_cv = Array([nbuf[4 + q][0:32] for q in range(3)])
        arm_ok = Signal()
        m.d.comb += arm_ok.eq((nbuf[0][0:8] == isa.Op.LINEAR) & (nbuf[2][0:24] == dst) & (nbuf[0][24:48] == rows) &
                              pred_rd.data[6] & (n_nq != 0))
        sh_decide = Signal()             # set where the current instruction may arm the shadow
        with m.If(sh_decide & ~sh_armed & ~sh_dead & n_valid):
            with m.If(arm_ok):
                m.d.sync += [sh_armed.eq(1), sh_sb.eq(pred_rd.data[0:6])]
            with m.Else():
                m.d.sync += sh_dead.eq(1)
        # vector loader: the next LINEAR's cu/cv slices of row block sl_rb, double buffered
        sl_rb = Signal(24)
        sl_k = Signal(2)
        sl_full = Signal(2)
        sl_tv = Signal()
        sl_tk = Signal(2)
        sl_tb = Signal()
        svec = [[Signal(16 * L, name=f"svec{b}_{k}") for k in range(4)] for b in range(2)]
        sl_port = Signal()               # the cmem read port is the loader's this cycle
        sl_issue = Signal()
        m.d.comb += sl_issue.eq(sh_armed & sl_port & (sl_rb < col_nrb) & ~sl_full.bit_select(sl_rb[0], 1))
        sl_addr = Signal(32)
        with m.If(n_unit):
            m.d.comb += sl_addr.eq(n_cv[sl_k])
        with m.Else():
            m.d.comb += sl_addr.eq(Mux(sl_k == 0, n_cu, n_cv[sl_k - 1]))
        sl_rd_addr = Signal(32)
        m.d.comb += sl_rd_addr.eq((sl_addr >> LB) + sl_rb)
        m.d.sync += [sl_tv.eq(sl_issue), sl_tk.eq(sl_k), sl_tb.eq(sl_rb[0])]
        sl_last = Signal()
        m.d.comb += sl_last.eq(sl_k == n_nvec - 1)
        with m.If(sl_issue):
            with m.If(sl_last):
                m.d.sync += [sl_k.eq(0), sl_rb.eq(sl_rb + 1)]
            with m.Else():
                m.d.sync += sl_k.eq(sl_k + 1)
        sl_set = Signal(2)
        sl_clr = Signal(2)
        with m.If(sl_tv):
            for b in range(2):
                for k in range(4):
                    with m.If((sl_tb == b) & (sl_tk == k)):
                        m.d.sync += svec[b][k].eq(c_lanes)
            with m.If(sl_tk == n_nvec - 1):
                m.d.comb += sl_set.eq(Mux(sl_tb, 2, 1))
        col_b = col_rb[0]
        with m.If(sh_armed & res_valid & res_ready & last_lane):
            m.d.comb += sl_clr.eq(Mux(col_b, 2, 1))
        m.d.sync += sl_full.eq((sl_full | sl_set) & ~sl_clr)
        m.d.comb += sh_go.eq(sh_dead | (sh_armed & sl_full.bit_select(col_b, 1)))
        # the element into the shadow statistics pass
        ssp = sstats.i.payload
        cur = [Signal(16 * L, name=f"svec_cur{k}") for k in range(4)]
        for k in range(4):
            m.d.comb += cur[k].eq(Mux(col_b, svec[1][k], svec[0][k]))
        lane_cu = [Signal(signed(16), name=f"sh_lane{k}") for k in range(4)]
        lane_cu_b = [Signal(signed(16), name=f"sh_lane_b{k}") for k in range(4)]
        col_r_b = Signal(range(L))
        m.d.comb += col_r_b.eq(col_r + 1)
        for k in range(4):
            m.d.comb += [lane_cu[k].eq(cur[k].word_select(col_r, 16)), lane_cu_b[k].eq(cur[k].word_select(col_r_b, 16))]
        m.d.comb += [sstats.unit_cu.eq(n_unit), sstats.o.ready.eq(1),
                     sstats.i.valid.eq(sh_armed & res_valid & res_ready),
                     ssp.b[0].eq(Mux(lane_valid_now, res_y, 0)), ssp.cu[0].eq(lane_cu[0]),
                     ssp.b[1].eq(Mux(lane_valid_b, res_y_b, 0)), ssp.cu[1].eq(lane_cu_b[0]),
                     ssp.first.eq((col_rb == 0) & (col_r == 0)),
                     ssp.last.eq((col_rb == col_nrb_m1) & last_lane)]
        for q in range(3):
            m.d.comb += [ssp.cv[q][0].eq(Mux(n_unit, lane_cu[q], lane_cu[q + 1])),
                         ssp.cv[q][1].eq(Mux(n_unit, lane_cu_b[q], lane_cu_b[q + 1]))]
        sh_sb_k = [Signal(signed(7), name=f"sh_sb_{k}") for k in range(len(sh_offs))]
        for k, (off, u) in enumerate(zip(sh_offs, sstats_all)):
            m.d.comb += [sh_sb_k[k].eq(sh_sb + off), u.sb.eq(sh_sb_k[k])]
            if k:                        # the neighbours see what the first one sees
                m.d.comb += [u.unit_cu.eq(n_unit), u.o.ready.eq(1), u.i.valid.eq(sstats.i.valid),
                             u.i.payload.eq(ssp)]
            with m.If(u.o.valid):        # all finish together (same latency)
                m.d.sync += sh_t_all[k].eq(u.o.payload.t)
                for q in range(3):
                    m.d.sync += sh_m_all[k][q].eq(u.o.payload.m[q])
        with m.If(sstats.o.valid):
            m.d.sync += sh_ok.eq(1)
        sh_reset = Signal()
        with m.If(sh_reset):
            m.d.sync += [sh_armed.eq(0), sh_dead.eq(0), sh_ok.eq(0), sl_rb.eq(0), sl_k.eq(0), sl_full.eq(0),
                         sl_tv.eq(0)]
        sh_kill = Signal()               # this instruction cannot feed a shadow pass
        with m.If(sh_kill):
            m.d.sync += [sh_armed.eq(0), sh_dead.eq(1), sh_ok.eq(0), sl_rb.eq(0), sl_k.eq(0), sl_full.eq(0),
                         sl_tv.eq(0)]

        # ---------------------------------------------------------- result stream (top-k readout)
        # The two top-k lists (even and odd rows) merge into one, best first, into an output register
        # (one result per cycle): no path from a list's read multiplexer through the compare into the link.
        ta, tb = topk.o.payload, topk_b.o.payload
        a_better = Signal()
        m.d.comb += a_better.eq(ta.present & (~tb.present | (ta.acc > tb.acc) | ((ta.acc == tb.acc) & (ta.id < tb.id))))
        m_cnt = Signal(range(K + 1))     # results picked
        out_v = Signal()
        out = Signal(topk.o.payload.shape())
        m.d.comb += [self.result.valid.eq(out_v),
                     self.result.payload.id.eq(out.id), self.result.payload.acc.eq(out.acc),
                     self.result.payload.present.eq(out.present), self.result.payload.last.eq(out.last),
                     self.result.payload.m.eq(head_m), self.result.payload.e.eq(head_e)]
        topk_clear = Signal()
        topk_flush = Signal()
        m.d.comb += [topk.clear.eq(topk_clear), topk.flush.eq(topk_flush),
                     topk_b.clear.eq(topk_clear), topk_b.flush.eq(topk_flush)]

        # ---------------------------------------------------------- main sequencer
        m.d.comb += [self.load.ready.eq(0), self.cmd.ready.eq(0)]
        busy = Signal()
        m.d.comb += self.busy.eq(busy)

        with m.FSM(name="seq"):
            with m.State("IDLE"):
                m.d.comb += [self.load.ready.eq(1), self.cmd.ready.eq(1)]
                with m.If(self.load.valid & (self.load.payload.mem == MemoryId.VMEM)):
                    m.d.sync += trk_valid.eq(0)
                with m.If(self.cmd.valid):
                    m.d.sync += [busy.eq(1), error.eq(0), trk_valid.eq(0)]
                    with m.If(self.cmd.payload.reset):
                        m.d.sync += zero_addr.eq(0)
                        m.next = "ZERO"
                    with m.Else():
                        m.d.sync += [token.eq(self.cmd.payload.token), have_head.eq(0), lin_cnt.eq(0)]
                        m.d.comb += [topk_clear.eq(1), fetch_restart.eq(1)]
                        m.next = "LOADI"
            with m.State("ZERO"):
                m.d.comb += wr_zero.eq(1)
                m.d.sync += zero_addr.eq(zero_addr + 1)
                with m.If(zero_addr == vdepth - 1):
                    m.d.sync += busy.eq(0)
                    m.next = "IDLE"
            with m.State("LOADI"):
                # take the prefetched instruction
                m.d.comb += [count_en.eq(1), count.eq(_CNT["drain"])]
                # (a shadow statistics pass finishes a few cycles after the last write)
                with m.If(n_valid & (~sh_armed | sh_ok)):
                    m.d.comb += n_take.eq(1)
                    m.d.sync += [w0.eq(nbuf[0]), w1.eq(nbuf[1]), w2.eq(nbuf[2]), w3.eq(nbuf[3])]
                    for q in range(3):
                        m.d.sync += qw[q].eq(nbuf[4 + q])
                    for s_ in range(3):
                        m.d.sync += sw[s_].eq(nbuf_arr[4 + n_nq + s_])
                    nb_n, nbc_n, nrb_n, rbt_n = Signal(24), Signal(24), Signal(24), Signal(26)
                    ns_n = nbuf[0][14:16]
                    m.d.comb += [nb_n.eq((nbuf[0][24:48] + L - 1) >> LB),
                                 nbc_n.eq((nbuf[0][24:48] + C - 1) >> CB),
                                 nrb_n.eq((nbuf_arr[4 + n_nq][8:32] + R - 1) >> RB),
                                 rbt_n.eq(Mux(ns_n == 1, nbc_n, Mux(ns_n == 2, nbc_n << 1, (nbc_n << 1) + nbc_n)))]
                    m.d.sync += [nb.eq(nb_n), nbc.eq(nbc_n), nrb.eq(nrb_n), rb_tiles.eq(rbt_n), nb_m1.eq(nb_n - 1),
                                 nbc_m1.eq(nbc_n - 1), rb_last.eq(rbt_n - 1)]
                    m.d.sync += [f.eq(nbuf[0][8:12] == e) for e, f in epi_is.items()]
                    with m.If(fpc + n_len > pdepth):
                        m.d.sync += error.eq(1)
                        m.next = "END"
                    with m.Else():
                        m.next = "DECODE"
            with m.State("DECODE"):
                m.d.comb += [count_en.eq(1), count.eq(_CNT["drain"])]
                m.d.sync += run_max.eq(0)
                m.d.comb += clear_scalars.eq(1)
                with m.Switch(op):
                    with m.Case(isa.Op.EMBED):
                        m.d.comb += sh_kill.eq(1)
                        m.d.sync += [f_mode_embed.eq(1), f_done.eq(0), e_j.eq(0), e_tag.eq(0),
                                     e_hold.eq(0), col_r.eq(0), col_rb.eq(0), col_done.eq(0), col_wr_h.eq(0),
                                     col_rows.eq(e_n), col_dst.eq(e_dst), col_nrb.eq((e_n + L - 1) >> LB), col_nrb_m1.eq(((e_n + L - 1) >> LB)[:24] - 1),
                                     e_row.eq(e_codes), e_mul.eq(token), e_add.eq(e_stride)]
                        m.next = "EMBED_SCALE"
                    with m.Case(isa.Op.LINEAR):
                        # the matrix's counters are sized for what fits: rows / R and a row block's tiles up
                        # to the weight memory's words, inputs up to max_input
                        with m.If(misaligned | (nq == 0) | (ns == 0) | (n == 0) | (rows == 0) |
                                  (n > t.max_input) | (nrb > wdepth) | (rb_tiles > wdepth)):
                            m.d.sync += error.eq(1)
                            m.next = "END"
                        with m.Elif(trk_valid & (trk_dst == src) & (trk_n == n)):
                            m.d.sync += sb.eq(sb_next_r)
                            m.d.comb += [pred_wr.addr.eq(lin_cnt), pred_wr.data.eq(Cat(sb_next_r[:6], 1)),
                                         pred_wr.en.eq(1)]
                            hit = Signal(len(sh_offs))
                            m.d.comb += hit.eq(Cat(*[sh_ok & (v == sb_next_r) for v in sh_sb_k]))
                            with m.If(hit.any()):
                                # a shadow pass computed this instruction's statistics
                                for k in range(len(sh_offs)):
                                    with m.If(hit[k]):
                                        m.d.sync += t_stat.eq(sh_t_all[k])
                                        for q in range(3):
                                            m.d.sync += m_stat[q].eq(sh_m_all[k][q])
                                m.d.comb += start_scalar.eq(1)
                                m.next = "SCALAR"
                            with m.Else():
                                m.next = "STATS"
                        with m.Else():
                            m.d.sync += [pre_max.eq(0), rd_c.eq(0)]
                            m.next = "MAXP"
                        m.d.comb += sh_reset.eq(1)
                        m.d.sync += lin_cnt.eq(lin_cnt + 1)
                        m.d.sync += [rd_c.eq(0), rd_k.eq(0), tg_valid.eq(0), stats_done.eq(0),
                                     col_r.eq(0), col_rb.eq(0), col_done.eq(0), col_wr_h.eq(0),
                                     col_rows.eq(rows), col_dst.eq(dst), col_nrb.eq(nrb << RVB),
                                     col_nrb_m1.eq((nrb << RVB) - 1),
                                     f_mode_embed.eq(0), f_done.eq(0), f_rb.eq(0)]
                    with m.Case(isa.Op.END):
                        m.next = "END"
                    with m.Default():
                        m.d.sync += error.eq(1)
                        m.next = "END"
            with m.State("EMBED_SCALE"):
                # the row's PF scale: two cmem words at scales + 2 token
                m.d.comb += [count_en.eq(1), count.eq(_CNT["embed"])]
                m.d.comb += c_rd_addr.eq((e_scales + (token << 1)) >> LB)
                m.next = "EMBED_SCALE_M"
            with m.State("EMBED_SCALE_M"):
                m.d.comb += [count_en.eq(1), count.eq(_CNT["embed"])]
                sa = Signal(32)
                m.d.comb += sa.eq(e_scales + (token << 1))
                m.d.sync += emb_m.eq(c_lanes.word_select(sa[:LB] if LB else Const(0, 1), 16))
                m.d.comb += c_rd_addr.eq((sa + 1) >> LB)
                m.next = "EMBED_SCALE_E"
            with m.State("EMBED_SCALE_E"):
                m.d.comb += [count_en.eq(1), count.eq(_CNT["embed"])]
                sa1 = Signal(32)
                m.d.comb += sa1.eq(e_scales + (token << 1) + 1)
                m.d.sync += [emb_e.eq(c_lanes.word_select(sa1[:LB] if LB else Const(0, 1), 16)), f_run.eq(1)]
                m.next = "EMBED"
            with m.State("EMBED"):
                m.d.comb += [count_en.eq(1), count.eq(_CNT["embed"])]
                m.d.comb += [c_rd_addr.eq(e_word >> LB), e_go.eq(f_run & (e_mul == 0))]
                with m.If(f_done & col_done):
                    m.d.sync += [trk_valid.eq(1), trk_dst.eq(e_dst), trk_n.eq(e_n), trk_max.eq(run_max_now)]
                    m.next = "LOADI"
            with m.State("MAXP"):
                # block shift from a pass over the base vector
                m.d.comb += [count_en.eq(1), count.eq(_CNT["stats"])]
                m.d.comb += v_rd_addr.eq((src >> LB) + rd_c)
                m.d.sync += [tg_valid.eq(rd_c < nb), tg_c.eq(rd_c), tg_k.eq(0)]
                with m.If(rd_c < nb):
                    m.d.sync += rd_c.eq(rd_c + 1)
                m.d.sync += [abs_v.eq(tg_valid), mid_v.eq(abs_v), beat_max_v.eq(mid_v)]
                with m.If(beat_new):
                    m.d.sync += pre_max.eq(beat_max)
                with m.If((rd_c == nb) & ~tg_valid & ~abs_v):
                    m.d.sync += [rd_c.eq(0), rd_k.eq(0), tg_valid.eq(0)]
                    m.next = "MAXP_SB"
            with m.State("MAXP_SB"):
                m.d.comb += [count_en.eq(1), count.eq(_CNT["stats"])]
                m.d.sync += [trk_max.eq(Mux(beat_new, beat_max, pre_max)), sb.eq(sb_fin)]
                m.next = "STATS"
            with m.State("STATS"):
                m.d.comb += [count_en.eq(1), count.eq(_CNT["stats"])]
                # slot rd_k of beat rd_c: slot 0 also reads b
                kk = Signal(3)
                m.d.comb += kk.eq(rd_k)
                vaddr = Signal(32)
                with m.If(unit_cu):
                    m.d.comb += vaddr.eq(cv_addr[rd_k])
                with m.Else():
                    m.d.comb += vaddr.eq(Mux(rd_k == 0, cu_addr, cv_addr[rd_k - 1]))
                m.d.comb += [v_rd_addr.eq((src >> LB) + rd_c), c_rd_addr.eq((vaddr >> LB) + rd_c)]
                issuing = Signal()
                m.d.comb += issuing.eq(rd_c < nb)
                m.d.sync += [tg_valid.eq(issuing), tg_c.eq(rd_c), tg_k.eq(rd_k), tg_last.eq(rd_k == nvec - 1)]
                with m.If(issuing):
                    with m.If(rd_k == nvec - 1):
                        m.d.sync += [rd_k.eq(0), rd_c.eq(rd_c + 1)]
                    with m.Else():
                        m.d.sync += rd_k.eq(rd_k + 1)
                m.d.comb += stats.i.valid.eq(tg_valid & tg_last)
                with m.If(stats_done):
                    m.d.comb += start_scalar.eq(1)
                    m.d.sync += [stats_done.eq(0), tg_valid.eq(0)]
                    m.next = "SCALAR"
            with m.State("SCALAR"):
                m.d.comb += [count_en.eq(1), count.eq(_CNT["stats"])]
                with m.If(recips_ready):
                    m.d.comb += mat_start.eq(1)
                    m.d.sync += [rd_q.eq(0), rd_c.eq(0), q_out_c.eq(0), tg_valid.eq(0), wq.eq(0),
                                 f_run.eq(1), c_rb.eq(0), c_s.eq(0), r_idx.eq(0), beats_ok.eq(0), aux_ok.eq(0),
                                 f_r.eq(0), f_cap.eq(0),
                                 topk_mode.eq(is_head)]
                    m.next = "QUANT"
            with m.State("QUANT"):
                m.d.comb += [count_en.eq(1), count.eq(_CNT["quant"])]
                m.d.comb += [v_rd_addr.eq((src >> LB) + rd_c), c_rd_addr.eq((cv_addr[rd_q] >> LB) + rd_c)]
                # the feeder waits for the scales, which come after this pass: no port conflict
                m.d.comb += [feeder_hold.eq(1), sh_decide.eq(~is_head)]
                issuing = Signal()
                m.d.comb += issuing.eq((rd_c < nb) & (rd_q < nq))
                m.d.sync += [tg_valid.eq(issuing), tg_c.eq(rd_c), tg_k.eq(0), tg_q.eq(rd_q)]
                with m.If(issuing):
                    with m.If(rd_c == nb_m1):
                        m.d.sync += [rd_c.eq(0), rd_q.eq(rd_q + 1)]
                    with m.Else():
                        m.d.sync += rd_c.eq(rd_c + 1)
                m.d.comb += quant.i.valid.eq(tg_valid)
                # the codes of quantizer wq arrive in order
                with m.If((q_out_c == nb_m1) & quant.o.valid):
                    with m.If(wq == nq - 1):
                        # every word complete, the last one possibly partial (its other codes meet zero trits)
                        m.d.sync += q_out_c.eq(nbc << CVB)
                        m.next = "MATRIX"
                    with m.Else():
                        m.d.sync += [wq.eq(wq + 1), q_out_c.eq(0)]
            with m.State("MATRIX"):
                m.d.comb += [count_en.eq(1), count.eq(Mux(is_head, _CNT["head"], _CNT["matrix"]))]
                m.d.comb += sh_decide.eq(~is_head)
                m.d.comb += v_rd_addr.eq(f_rd_v)
                with m.If(f_rd_issue & need_lb):
                    m.d.comb += c_rd_addr.eq(f_rd_c)
                with m.Else():
                    m.d.comb += [sl_port.eq(1), c_rd_addr.eq(sl_rd_addr)]
                with m.If(mat_done):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += [count_en.eq(1), count.eq(Mux(is_head, _CNT["head"], _CNT["drain"]))]
                m.d.comb += sh_decide.eq(~is_head)
                m.d.comb += v_rd_addr.eq(f_rd_v)
                with m.If(f_rd_issue & need_lb):
                    m.d.comb += c_rd_addr.eq(f_rd_c)
                with m.Else():
                    m.d.comb += [sl_port.eq(1), c_rd_addr.eq(sl_rd_addr)]
                done = Signal()
                m.d.comb += done.eq(Mux(topk_mode, f_done & scales_ready, f_done & col_done))
                with m.If(done):
                    m.d.sync += topk_mode.eq(0)
                    with m.If(is_head):
                        m.d.sync += [head_m.eq(scale_m[0]), head_e.eq(scale_e[0]), have_head.eq(1)]
                        with m.Switch(seg_q[0]):
                            for q in range(3):
                                with m.Case(q):
                                    m.d.sync += [head_m.eq(scale_m[q]), head_e.eq(scale_e[q])]
                    with m.Else():
                        m.d.sync += [trk_valid.eq(1), trk_dst.eq(dst), trk_n.eq(rows), trk_max.eq(run_max_now)]
                    m.next = "LOADI"
            with m.State("END"):
                m.d.comb += [count_en.eq(1), count.eq(_CNT["head"]), fetch_stop.eq(1)]
                with m.If(~have_head):
                    m.d.sync += error.eq(1)
                m.d.comb += topk_flush.eq(1)
                m.d.sync += [m_cnt.eq(0), out_v.eq(0)]
                m.next = "RESULT"
            with m.State("RESULT"):
                m.d.comb += [count_en.eq(1), count.eq(_CNT["head"])]
                with m.If(self.result.ready):
                    m.d.sync += out_v.eq(0)
                with m.If((~out_v | self.result.ready) & topk.o.valid & topk_b.o.valid & (m_cnt != K)):
                    m.d.comb += [topk.o.ready.eq(a_better), topk_b.o.ready.eq(~a_better)]
                    m.d.sync += [out.eq(Mux(a_better, ta.as_value(), tb.as_value())), out.last.eq(m_cnt == K - 1),
                                 out_v.eq(1), m_cnt.eq(m_cnt + 1)]
                with m.If(self.result.valid & self.result.ready):
                    with m.If(out.last):
                        m.d.sync += [busy.eq(0), ctr[_CNT["tokens"]].eq(ctr[_CNT["tokens"]] + 1)]
                        m.next = "IDLE"
        return m

