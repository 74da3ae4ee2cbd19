"""Vector-unit arithmetic of the BitLinear input stage (docs/numerics.md section 4, steps 1-3).

Two pipelines, ``lanes`` elements per cycle, bit-exact with
:func:`mmfree.model.golden.input_stage`:

* :class:`StatsPass` reads the base vector once and produces the RMS
  statistic ``t = sum(u^2)`` and, for up to three quantizers, ``M = max|v|``.
* :class:`QuantPass` reads it again per quantizer and produces the int8 codes
  once the scalar unit (:class:`mmfree.hw.scalar.QuantRecip`) has turned
  ``M`` into ``(sh, R)``.

Both take the block shift ``sb = bitlen(max|b|) - 15`` (0 for a zero vector)
as a per-vector port: the vector memory tracks ``max|b|`` as the vector is
written. Vectors whose length is not a multiple of ``lanes`` are padded with
zero elements (a zero ``b`` contributes nothing to ``t`` or ``M``, and its
code is 0).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree import numerics as nx

from .sigmoid import V32, Pipe, rshr_const, stream_pipeline

__all__ = ["StatsPass", "QuantPass", "SB_SHAPE", "C16"]

C16 = signed(16)
SB_SHAPE = signed(6)            #: block shift ``sb`` in [-14, 17]
_SB_MIN, _SB_MAX = -14, 17
_SH_MIN, _SH_MAX = -15, 15
T_BITS = 48
M_BITS = 31


def _check_lanes(lanes):
    if not isinstance(lanes, int) or isinstance(lanes, bool) or not 1 <= lanes <= 256:
        raise ValueError(f"lanes must be an integer in 1..256, got {lanes!r}")


def _block_shift(m: Module, p: Pipe, b, sb, name: str):
    """Registered ``shr_floor(b, sb)`` for ``sb`` in [-14, 17] (result fits int16 when ``sb`` is right)."""
    amt = Signal(range(_SB_MAX - _SB_MIN + 1), name=f"{name}_amt")
    m.d.comb += amt.eq(sb - _SB_MIN)
    return p.reg((b << -_SB_MIN) >> amt, shape=signed(16), name=name)


class StatsPass(wiring.Component):
    """Statistics pass: block shift, RMS statistic and absolute maxima.

    Per element ``b`` (V32) with RMS weight ``cu`` and quantizer weights
    ``cv[k]`` (C16)::

        bs = shr_floor(b, sb)                         # int16
        u  = bs if unit_cu else rshr(bs * cu, 15)      # 17 bits signed
        t  = sum(u * u)                               # 48 bits
        M[k] = max |bs * cv[k]|                        # 31 bits

    Parameters
    ----------
    lanes : int
        Elements per cycle, 1..256.
    quants : int
        Number of quantizers whose maxima are tracked, 1..3.

    Contract
    --------
    * Per-vector inputs (hold them while a vector is in the pipeline):
      ``sb: signed(6)`` (in [-14, 17]) and ``unit_cu: 1``.
    * ``i``: stream of ``{b: lanes x signed(32), cu: lanes x signed(16),
      cv: quants x lanes x signed(16), first: 1, last: 1}``; ``first`` on the
      first beat of a vector restarts the sums, ``last`` on its last beat
      makes the result. A one-beat vector has both.
    * ``o``: stream of ``{t: unsigned(48), m: quants x unsigned(31)}``, one
      beat per vector, ``LATENCY`` cycles after the last beat was accepted.
    * Throughput ``lanes`` elements per cycle; ``i.ready = ~o.valid | o.ready``
      (a result that is not taken stalls the pipeline).
    * Latency ``5 + ceil(log2(lanes)) + 1``: 1 operands; 2 ``bs`` (barrel
      shift); 3 the products ``bs * cu``, ``bs * cv[k]`` (16 x 16); 4 ``u`` and
      ``|v|``; 5 ``u^2`` (17 x 17); one stage per level of the lane adder and
      maximum trees; 1 the accumulators.
    * Multipliers: ``lanes * (quants + 2)`` (16 x 16 -> 31 bits for
      ``bs * cu`` and ``bs * cv[k]``, 17 x 17 -> 31 bits for ``u * u``).
    """

    def __init__(self, lanes: int = 1, quants: int = 3):
        _check_lanes(lanes)
        if not isinstance(quants, int) or isinstance(quants, bool) or not 1 <= quants <= 3:
            raise ValueError(f"quants must be an integer in 1..3, got {quants!r}")
        self.lanes = lanes
        self.quants = quants
        self.levels = (lanes - 1).bit_length()
        self.LATENCY = 5 + self.levels + 1
        in_layout = data.StructLayout({
            "b": data.ArrayLayout(V32, lanes), "cu": data.ArrayLayout(C16, lanes),
            "cv": data.ArrayLayout(data.ArrayLayout(C16, lanes), quants), "first": 1, "last": 1})
        out_layout = data.StructLayout({"t": unsigned(T_BITS), "m": data.ArrayLayout(unsigned(M_BITS), quants)})
        super().__init__({"sb": In(SB_SHAPE), "unit_cu": In(1),
                          "i": In(stream.Signature(in_layout)), "o": Out(stream.Signature(out_layout))})

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        p = Pipe(m, en)
        pl = self.i.payload
        L, Q = self.lanes, self.quants
        depth = self.LATENCY - 1            # stages before the accumulators
        valid = Signal(depth)
        first = Signal(depth)
        last = Signal(depth)
        with m.If(en):
            m.d.sync += [valid.eq(Cat(self.i.valid, valid[:-1])), first.eq(Cat(pl.first, first[:-1])),
                         last.eq(Cat(pl.last, last[:-1]))]
        sums, maxs = [], [[] for _ in range(Q)]
        for j in range(L):
            b1 = p.reg(pl.b[j], name=f"b1_{j}")
            cu1 = p.reg(pl.cu[j], name=f"cu1_{j}")
            cv1 = [p.reg(pl.cv[k][j], name=f"cv1_{k}_{j}") for k in range(Q)]
            bs2 = _block_shift(m, p, b1, self.sb, f"bs2_{j}")
            cu2 = p.reg(cu1, name=f"cu2_{j}")
            cv2 = [p.reg(c, name=f"cv2_{k}_{j}") for k, c in enumerate(cv1)]
            pu3 = p.reg(bs2 * cu2, shape=signed(32), name=f"pu3_{j}")
            bs3 = p.reg(bs2, name=f"bs3_{j}")
            pv3 = [p.reg(bs2 * c, shape=signed(32), name=f"pv3_{k}_{j}") for k, c in enumerate(cv2)]
            u4 = p.reg(Mux(self.unit_cu, bs3, rshr_const(pu3, 15)), shape=signed(17), name=f"u4_{j}")
            av4 = [p.reg(Mux(v < 0, -v, v), shape=unsigned(M_BITS), name=f"av4_{k}_{j}") for k, v in enumerate(pv3)]
            sums.append(p.reg(u4 * u4, shape=unsigned(31), name=f"uu5_{j}"))
            for k in range(Q):
                maxs[k].append(p.reg(av4[k], name=f"av5_{k}_{j}"))
        # lane trees, one register stage per level
        for lvl in range(self.levels):
            sums = [p.reg(sums[a] + sums[a + 1], shape=unsigned(31 + lvl + 1), name=f"sum_l{lvl}_{a}")
                    if a + 1 < len(sums) else p.reg(sums[a], shape=unsigned(31 + lvl + 1), name=f"sum_l{lvl}_{a}")
                    for a in range(0, len(sums), 2)]
            maxs = [[p.reg(Mux(ms[a] > ms[a + 1], ms[a], ms[a + 1]), name=f"max_l{lvl}_{k}_{a}")
                     if a + 1 < len(ms) else p.reg(ms[a], name=f"max_l{lvl}_{k}_{a}")
                     for a in range(0, len(ms), 2)] for k, ms in enumerate(maxs)]
        (s,) = sums
        t = Signal(T_BITS)
        mx = [Signal(M_BITS, name=f"mx_{k}") for k in range(Q)]
        t_next = Mux(first[-1], 0, t) + s
        mx_next = [Mux(first[-1] | (ms[0] > mk), ms[0], mk) for mk, ms in zip(mx, maxs)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(en & valid[-1]):
            m.d.sync += [t.eq(t_next)] + [mk.eq(v) for mk, v in zip(mx, mx_next)]
            with m.If(last[-1]):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.t.eq(t_next)]
                m.d.sync += [self.o.payload.m[k].eq(v) for k, v in enumerate(mx_next)]
        return m


class QuantPass(wiring.Component):
    """Quantization pass: int8 codes of one quantizer, exactly :func:`mmfree.numerics.quantize_a8`.

    Per element ``b`` (V32) with quantizer weight ``cv`` (C16)::

        v   = shr_floor(b, sb) * cv                    # 31 bits
        v16 = shr_floor(v, sh)                        # 17 bits
        q   = clamp((v16 * R + 2^22) >> 23, -128, 127)

    A zero vector has ``R = 0`` from :class:`~mmfree.hw.scalar.QuantRecip`,
    which gives ``q = 0``.

    Parameters
    ----------
    lanes : int
        Elements per cycle, 1..256.

    Contract
    --------
    * Per-vector inputs (hold them while a vector is in the pipeline):
      ``sb: signed(6)`` in [-14, 17], ``sh: signed(5)`` in [-15, 15],
      ``r: unsigned(15)``.
    * ``i``: stream of ``{b: lanes x signed(32), cv: lanes x signed(16)}``;
      ``o``: stream of ``lanes x signed(8)``.
    * Latency ``LATENCY`` = 6, throughput ``lanes`` elements per cycle,
      ``i.ready = ~o.valid | o.ready``.
    * Stages: 1 operands; 2 ``bs`` (barrel shift); 3 ``bs * cv`` (16 x 16);
      4 ``v16`` (barrel shift); 5 ``v16 * R`` (17 x 15 -> 32 bits); 6 round
      and clamp. Multipliers: ``2 * lanes``.
    """

    LATENCY = 6

    def __init__(self, lanes: int = 1):
        _check_lanes(lanes)
        self.lanes = lanes
        in_layout = data.StructLayout({"b": data.ArrayLayout(V32, lanes), "cv": data.ArrayLayout(C16, lanes)})
        super().__init__({"sb": In(SB_SHAPE), "sh": In(signed(5)), "r": In(unsigned(15)),
                          "i": In(stream.Signature(in_layout)),
                          "o": Out(stream.Signature(data.ArrayLayout(signed(8), lanes)))})

    def elaborate(self, platform):
        m = Module()
        en = stream_pipeline(m, self.i, self.o, self.LATENCY)
        p = Pipe(m, en)
        pl = self.i.payload
        sh_amt = Signal(range(_SH_MAX - _SH_MIN + 1))
        m.d.comb += sh_amt.eq(self.sh - _SH_MIN)
        half = 1 << (nx.Q_SHIFT - 1)
        for j in range(self.lanes):
            b1 = p.reg(pl.b[j], name=f"b1_{j}")
            cv1 = p.reg(pl.cv[j], name=f"cv1_{j}")
            bs2 = _block_shift(m, p, b1, self.sb, f"bs2_{j}")
            cv2 = p.reg(cv1, name=f"cv2_{j}")
            v3 = p.reg(bs2 * cv2, shape=signed(32), name=f"v3_{j}")
            v16 = p.reg((v3 << -_SH_MIN) >> sh_amt, shape=signed(17), name=f"v16_{j}")
            pr5 = p.reg(v16 * self.r, shape=signed(33), name=f"pr5_{j}")
            qq = (pr5 + half) >> nx.Q_SHIFT
            q6 = p.reg(Mux(qq > nx.A_MAX, nx.A_MAX, Mux(qq < nx.A_MIN, nx.A_MIN, qq)), shape=signed(8),
                       name=f"q6_{j}")
            m.d.comb += self.o.payload[j].eq(q6)
        return m
