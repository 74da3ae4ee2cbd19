"""Pipelined epilogue arithmetic, one element per cycle, bit-exact with the golden model.

Every block here is a fixed-latency pipeline with one stream in and one out
(:func:`~mmfree.hw.sigmoid.stream_pipeline`): ``i.ready = ~o.valid | o.ready``,
the whole pipeline stalls while the output is held, and with ``o.ready`` high
an element leaves every cycle, ``LATENCY`` cycles after it entered.

| block | computes | latency | multipliers (product width) | ECP5 (yosys, OOC nextpnr) |
|---|---|---|---|---|
| :class:`Dequant` | ``sat32(rshr(acc * m, -e))`` | 7 | 24 x 16 (40): 17 x 16 in a DSP, 7 x 16 in LUTs | 1 DSP, ~140 MHz |
| :class:`MLGRUCell` | :func:`mmfree.model.golden.mlgru` | 27 | 3 x 10 x 11 (LUTs), 17 x 17, 4 x 32 x 17 (49), 32 x 32 (63) | 3 BRAM, 13 DSP, ~135 MHz |
| :class:`GLUCell` | :func:`mmfree.model.golden.glu` | 14 | 10 x 11 (LUTs), 32 x 17 (49), 32 x 32 (63) | 1 BRAM, 6 DSP, ~135 MHz |
| :class:`ResidualAdd` | ``sat32(a + b)`` | 1 | none | 33 FF |

(DSP = MULT18X18D, BRAM = DP16KD; every multiplier wider than 18 x 18 is
split into registered partial products, :meth:`~mmfree.hw.sigmoid.Pipe.mul`,
and no multiplier has an adder in front of it or a comparator behind it, so
the blocks stand alone at 135 MHz or more on an LFE5U-85F.)

Scales and flags travel in the payload next to the data they apply to, so
they may change from one element to the next (the LINEAR segments i, f, g
interleave row blocks with three different scales) without draining the
pipeline; the feeder keeps them in per-segment registers.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree import numerics as nx

from .sigmoid import (P16, V32, Pipe, SigmoidCore, SiLUCore, rshr_const, sat, shift_add_groups, stream_pipeline,
                      tree_sum)

__all__ = ["Dequant", "MLGRUCell", "GLUCell", "ResidualAdd"]


class Dequant(wiring.Component):
    """Dequantization ``y = sat32(rshr(acc * m, -e))`` (docs/numerics.md section 4.6).

    Parameters
    ----------
    acc_bits : int
        Width of the signed accumulator input (24 = ``ACC``; 16 serves int16
        embedding codes). 2..32.
    exp_bits : int
        Width of the signed exponent ``e`` (18 holds every exponent
        :class:`mmfree.hw.scalar.OutputScale` produces; 16 is the ISA's
        stored embedding scale). 2..32.

    Contract
    --------
    * ``i``: stream of ``{acc: signed(acc_bits), m: unsigned(16), e: signed(exp_bits)}``;
      ``(m, e)`` is the PF scale (any 16-bit ``m``). ``o``: stream of ``signed(32)``.
    * Latency ``LATENCY`` = 7, throughput one element per cycle, backpressure
      as every block of this module.
    * Stages: 1 operands and the clamped shift count ``s = -e`` (clamped to
      [-32, acc_bits + 16], where the result no longer changes);
      2-3 ``acc * m`` (acc_bits x 16 -> acc_bits + 16 bits; for 24 bits the
      low 17 x 16 in one 18 x 18 multiplier, the high 7 x 16 as two
      shift-and-add partial sums in LUTs, and a registered adder); 4-5 two-level barrel
      shift ``w = (v << 33) >> (s + 32)`` (coarse by 8, then fine), which is
      ``v >> (s - 1)`` for ``s >= 1`` and ``v << (1 - s)`` otherwise;
      6 ``(w + 1) >> 1``; 7 saturation to 32 bits.
    """

    LATENCY = 7

    def __init__(self, acc_bits: int = nx.ACC_BITS, exp_bits: int = 18):
        for name, v in (("acc_bits", acc_bits), ("exp_bits", exp_bits)):
            if not isinstance(v, int) or isinstance(v, bool) or not 2 <= v <= 32:
                raise ValueError(f"{name} must be an integer in 2..32, got {v!r}")
        self.acc_bits = acc_bits
        self.exp_bits = exp_bits
        layout = data.StructLayout({"acc": signed(acc_bits), "m": unsigned(nx.MANT_BITS), "e": signed(exp_bits)})
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(V32))})

    def elaborate(self, platform):
        m = Module()
        en = stream_pipeline(m, self.i, self.o, self.LATENCY)
        p = Pipe(m, en)
        pl = self.i.payload
        s_lo, s_hi = -32, self.acc_bits + nx.MANT_BITS
        s = -pl.e
        sc = Mux(s < s_lo, s_lo, Mux(s > s_hi, s_hi, s))
        acc1 = p.reg(pl.acc, name="dq_acc")
        m1 = p.reg(pl.m, name="dq_m")
        amt1 = p.reg(sc + 32, shape=range(0, s_hi + 33), name="dq_amt")       # 0 .. acc_bits + 48
        if 17 < self.acc_bits <= 25:
            # acc's low 17 bits x m in a block multiplier, its high (<= 8) bits x m in LUTs: two
            # registered partial sums (one 18 x 18 multiplier instead of two), added in the next stage
            lo = p.reg(acc1[:17] * m1, name="dq_v_lo")
            hw = signed(self.acc_bits - 17 + nx.MANT_BITS + 1)
            hi = [p.reg(g, shape=hw, name=f"dq_v_hi{k}")
                  for k, g in enumerate(shift_add_groups(m1, acc1[17:].as_signed(), 2))]
            v = p.reg(lo + (tree_sum(hi) << 17), shape=signed(self.acc_bits + nx.MANT_BITS + 2), name="dq_v_sum")
        else:
            v, stages = p.mul(acc1, m1, name="dq_v")
            v = p.delay(v, 2 - stages, "dq_v_pad")          # same latency for every acc_bits
        amt = p.delay(amt1, 2, "dq_amt")
        wide = signed(self.acc_bits + nx.MANT_BITS + 33)
        w_c = p.reg((v << 33) >> Cat(Const(0, 3), amt[3:]), shape=wide, name="dq_w_coarse")
        w_f = p.reg(w_c >> p.reg(amt[:3], name="dq_amt_fine"), shape=wide, name="dq_w_fine")
        r = p.reg((w_f + 1) >> 1, name="dq_round")
        m.d.comb += self.o.payload.eq(p.reg(sat(r), shape=V32, name="dq_y"))
        return m


MLGRU_IN = data.StructLayout({"i": V32, "f": V32, "g": V32, "h": V32, "lb": unsigned(16), "has_lb": unsigned(1)})
MLGRU_OUT = data.StructLayout({"h": V32, "bo": V32})
PAIR_V32 = data.StructLayout({"a": V32, "b": V32})


class MLGRUCell(wiring.Component):
    """MLGRU update of one channel, exactly :func:`mmfree.model.golden.mlgru`.

    Per element::

        f  = sigmoid_q(f_pre);  if has_lb: f = lb + rshr((2^16 - lb) * f, 16)
        i  = rshr(silu_q(i_pre) * (2^16 - f), 16)
        h  = sat32(rshr(h_prev * f, 16) + i)
        bo = sat32(rshr(g_pre * silu_q(h), 16))

    Contract
    --------
    * ``i``: stream of ``MLGRU_IN = {i, f, g, h: signed(32), lb: unsigned(16),
      has_lb: 1}`` (pre-activations, the previous state and the layer's P16
      lower bound of this channel). ``o``: stream of ``MLGRU_OUT = {h, bo:
      signed(32)}`` (the new state and the input of the ``o`` projection).
    * Latency ``LATENCY`` = 27, throughput one element per cycle. The chain
      sigmoid(f) -> f -> h -> silu(h) is sequential within an element and
      pipelined across elements.
    * Schedule (register stages counted from acceptance): sigmoid(f_pre)
      1..6 and silu(i_pre) 1..9 in parallel; lower-bound product 7, ``f`` 8;
      ``silu_i * (2^16 - f)`` and ``h_prev * f`` 10..11 (two stages each),
      rounded 12, ``h`` 13; silu(h) 14..22; ``g * silu(h)`` 23..25 (three
      stages), rounded 26, saturated ``bo`` 27.
    * Resources: three sigmoid tables (each a 1024 x 17 ROM with two read
      ports: one dual-port block RAM), multipliers: 3 x (10 x 11, in LUTs), 17 x 17
      (34-bit), 4 x (32 x 17) (49-bit: two in the SiLUs, two for ``i``/``h``),
      1 x (32 x 32) (63-bit); on an ECP5 3 DP16KD, 13 MULT18X18D and about
      3.3 k flip-flops, most of them delay lines (``g`` waits 22 stages for
      silu(h)).
    """

    LATENCY = 27

    def __init__(self):
        super().__init__({"i": In(stream.Signature(MLGRU_IN)), "o": Out(stream.Signature(MLGRU_OUT))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.sig_f = sig_f = SigmoidCore()
        m.submodules.silu_i = silu_i = SiLUCore()
        m.submodules.silu_h = silu_h = SiLUCore()
        en = stream_pipeline(m, self.i, self.o, self.LATENCY)
        p = Pipe(m, en)
        pl = self.i.payload
        one = nx.ONE
        # t = 0: sigmoid(f_pre) and silu(i_pre) start
        m.d.comb += [sig_f.en.eq(en), sig_f.x.eq(pl.f), silu_i.en.eq(en), silu_i.x.eq(pl.i),
                     silu_h.en.eq(en)]
        t_fs = SigmoidCore.LATENCY
        fs = sig_f.y
        lb = p.delay(pl.lb, t_fs, "lb")
        omlb = p.delay(p.reg((one - pl.lb).as_unsigned()[:17], name="omlb"), t_fs - 1, "omlb")   # 2^16 - lb
        has = p.delay(pl.has_lb, t_fs, "has_lb")
        # lower bound: f = lb + rshr((2^16 - lb) * f, 16)   (17 x 17 -> 34 bits)
        plb, n = p.mul(omlb, fs, name="lb_prod")
        fs, lb, has = (p.delay(v, n, name) for v, name in ((fs, "fs"), (lb, "lb_d"), (has, "has_d")))
        f = p.reg(Mux(has, lb + rshr_const(plb, nx.FRAC), fs), shape=P16, name="f")
        t_f = t_fs + n + 1
        # i = rshr(silu_i * (2^16 - f), 16) and rshr(h_prev * f, 16)   (32 x 17 -> 49 bits each)
        # 2^16 - f gets a register stage of its own, so no subtractor sits in front of a multiplier
        t_op = max(t_f + 1, SiLUCore.LATENCY)
        omf = p.delay(p.reg((one - f).as_unsigned()[:17], name="omf"), t_op - t_f - 1, "omf")
        f = p.delay(f, t_op - t_f, "f_d")
        si = p.delay(silu_i.y, t_op - SiLUCore.LATENCY, "silu_i_d")
        h_prev = p.delay(pl.h, t_op, "h_prev")
        pi, n = p.mul(si, omf, name="i_prod")
        ph, n2 = p.mul(h_prev, f, name="h_prod")
        assert n == n2
        i_ = p.reg(rshr_const(pi, nx.FRAC), shape=V32, name="i")        # |x p / 2^16| <= |x|: fits
        hf = p.reg(rshr_const(ph, nx.FRAC), shape=V32, name="hf")
        h_new = p.reg(sat(hf + i_), shape=V32, name="h_new")
        t_h = t_op + n + 2
        # bo = sat32(rshr(g * silu(h), 16))   (32 x 32 -> 63 bits)
        m.d.comb += silu_h.x.eq(h_new)
        t_sh = t_h + SiLUCore.LATENCY
        g = p.delay(pl.g, t_sh, "g")
        pb, n = p.mul(g, silu_h.y, name="bo_prod")
        bo = p.reg(sat(p.reg(rshr_const(pb, nx.FRAC), name="bo_round")), shape=V32, name="bo")
        assert t_sh + n + 2 == self.LATENCY, t_sh + n + 2
        h_out = p.delay(h_new, self.LATENCY - t_h, "h_out")
        m.d.comb += [self.o.payload.h.eq(h_out), self.o.payload.bo.eq(bo)]
        return m


class GLUCell(wiring.Component):
    """GLU product ``sat32(rshr(silu_q(gate) * up, 16))``, exactly :func:`mmfree.model.golden.glu`.

    Contract
    --------
    * ``i``: stream of ``PAIR_V32 = {a: signed(32), b: signed(32)}`` with
      ``a = gate``, ``b = up``. ``o``: stream of ``signed(32)``.
    * Latency ``LATENCY`` = 14 (SiLU 9, the 32 x 32 product in three stages,
      rounding, saturation), throughput one element per cycle.
    * Resources: one sigmoid table (one dual-port block RAM), multipliers
      10 x 11 (in LUTs), 32 x 17 (49-bit), 32 x 32 (63-bit): 6 MULT18X18D on an ECP5.
    """

    LATENCY = SiLUCore.LATENCY + 5

    def __init__(self):
        super().__init__({"i": In(stream.Signature(PAIR_V32)), "o": Out(stream.Signature(V32))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.silu = silu = SiLUCore()
        en = stream_pipeline(m, self.i, self.o, self.LATENCY)
        p = Pipe(m, en)
        m.d.comb += [silu.en.eq(en), silu.x.eq(self.i.payload.a)]
        up = p.delay(self.i.payload.b, SiLUCore.LATENCY, "up")
        prod, n = p.mul(silu.y, up, name="glu_prod")              # 32 x 32 -> 63 bits, 3 stages
        assert SiLUCore.LATENCY + n + 2 == self.LATENCY
        r = p.reg(rshr_const(prod, nx.FRAC), name="glu_round")
        m.d.comb += self.o.payload.eq(p.reg(sat(r), shape=V32, name="glu_y"))
        return m


class ResidualAdd(wiring.Component):
    """Residual add ``sat32(a + b)``.

    Contract
    --------
    * ``i``: stream of ``PAIR_V32 = {a, b: signed(32)}``; ``o``: stream of ``signed(32)``.
    * Latency ``LATENCY`` = 1, throughput one element per cycle. No multipliers.
    """

    LATENCY = 1

    def __init__(self):
        super().__init__({"i": In(stream.Signature(PAIR_V32)), "o": Out(stream.Signature(V32))})

    def elaborate(self, platform):
        m = Module()
        en = stream_pipeline(m, self.i, self.o, self.LATENCY)
        p = Pipe(m, en)
        m.d.comb += self.o.payload.eq(p.reg(sat(self.i.payload.a + self.i.payload.b), shape=V32, name="add_y"))
        return m
