"""Sigmoid and SiLU pipelines (docs/numerics.md section 5), bit-exact with :mod:`mmfree.numerics`.

``sigmoid_q`` is a 1025-entry table with linear interpolation; here the table
lives in one 1024 x 17-bit :class:`~amaranth.lib.memory.Memory` read through
two ports (``T[idx]`` and ``T[idx+1]``, the last entry ``T[1024]`` being a
constant), which maps onto one true-dual-port block RAM (ECP5 DP16KD in
1024 x 18 mode). ``silu_q`` reuses it: ``rshr(x * sigmoid_q(x), 16)``.

The module also holds the small pipeline helpers the other epilogue blocks
(:mod:`mmfree.hw.elementwise`, :mod:`mmfree.hw.quantizer`) are built from:
every pipeline is a chain of registers that all advance on one enable, and a
stream wrapper turns that enable into a valid/ready handshake with
backpressure (:func:`stream_pipeline`).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree import numerics as nx

__all__ = ["Sigmoid", "SiLU", "SigmoidCore", "SiLUCore", "stream_pipeline", "Pipe", "sat", "rshr_const", "tree_sum",
           "shift_add_groups"]

V32 = signed(32)
P16 = unsigned(17)      #: P16 values span 0..65536 inclusive, so 17 bits

_X_LO = nx.SIG_X_MIN * nx.ONE                 # -16.0 in V32
_X_HI = -nx.SIG_X_MIN * nx.ONE - 1            # 16.0 - 2^-16
_XO_BITS = (-2 * nx.SIG_X_MIN * nx.ONE - 1).bit_length()     # 21
_IDX_BITS = _XO_BITS - nx.SIG_FRAC_BITS                    # 10
_TABLE = [int(v) for v in nx.SIG_TABLE]
_DELTAS = [b - a for a, b in zip(_TABLE, _TABLE[1:])]


# --------------------------------------------------------------------------
# helpers shared by the epilogue blocks

def sat(value, bits: int = 32):
    """Saturate an expression to ``signed(bits)`` (combinational).

    For a signed value this checks that the bits from ``bits - 1`` up are all
    equal (a shallow reduction, no comparator carry chain).
    """
    v = Value.cast(value)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if not v.shape().signed:
        return Mux(v > hi, hi, v)
    if len(v) <= bits:
        return v
    top = v[bits - 1:]
    return Mux(top.all() | ~top.any(), v[:bits].as_signed(), Mux(v[-1], lo, hi))


def rshr_const(value, s: int):
    """``rshr(value, s)`` for a constant ``s >= 1``: ``(value + 2^(s-1)) >> s`` (arithmetic)."""
    return (value + (1 << (s - 1))) >> s


def tree_sum(terms):
    """Sum of ``terms`` as a balanced adder tree (``ceil(log2(n))`` adders deep, not ``n - 1``)."""
    terms = [Value.cast(t) for t in terms]
    if not terms:
        return Const(0, 1)
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def shift_add_groups(a, b, groups: int = 2, extra: int = 0):
    """``a * b + extra`` for a narrow ``b``, in LUTs: ``groups`` partial sums whose total is the product.

    One partial product per bit of ``b`` (``b``'s sign bit, if signed, counts
    negative), split into ``groups`` runs of bits, each summed by a balanced
    tree; ``extra`` (a constant) joins the first group. For products too
    small to be worth an 18 x 18 block multiplier: the caller registers the
    groups and adds them in its next stage.
    """
    a, b = Value.cast(a), Value.cast(b)
    n = len(b)
    terms = []
    for i in range(n):
        t = a << i
        if b.shape().signed and i == n - 1:
            t = -t
        terms.append(Mux(b[i], t, 0))
    per = -(-n // groups)
    out = [terms[g * per:(g + 1) * per] for g in range(groups)]
    if extra:
        out[0] = out[0] + [Const(extra)]
    return [tree_sum(g) for g in out if g]


class Pipe:
    """Builds registers that all advance on one enable (a stallable fixed-latency datapath).

    Parameters
    ----------
    m : Module
        The module the registers are added to (``sync`` domain).
    en : Value
        Pipeline advance; registers hold their value while it is low.
    """

    def __init__(self, m: Module, en):
        self.m = m
        self.en = en

    def reg(self, value, shape=None, name: str | None = None) -> Signal:
        """One register stage of ``value`` (its own shape unless ``shape`` is given)."""
        value = Const.cast(value) if isinstance(value, int) else value
        sig = Signal(shape if shape is not None else value.shape(), name=name)
        with self.m.If(self.en):
            self.m.d.sync += sig.eq(value)
        return sig

    def mul(self, a, b, name: str = "mul"):
        """Registered product ``a * b`` built from multiplier-sized pieces; returns ``(product, stages)``.

        Operands up to 18 bits signed (17 unsigned) go straight into one
        18 x 18 multiplier and the product is registered (1 stage). A wider
        operand (up to 35 bits) is split into its low 17 bits (unsigned) and
        the rest, every partial product is registered, and the partial sums
        follow in registered adders: 2 stages for two partial products, 3 for
        four. So no path holds more than one DSP and one carry chain, which is
        what keeps these pipelines above 100 MHz on an ECP5.
        """
        ca, cb = _chunks(a), _chunks(b)
        parts = [(self.reg(x * y, name=f"{name}_pp{k}"), sx + sy)
                 for k, ((x, sx), (y, sy)) in enumerate((pa, pb) for pa in ca for pb in cb)]
        if len(parts) == 1:
            return parts[0][0], 1
        if len(parts) == 2:
            (lo, _), (hi, shift) = parts
            return self.reg((hi << shift) + lo, name=f"{name}_sum"), 2
        (ll, _), (lh, s1), (hl, s2), (hh, s3) = parts        # a_lo*b_lo, a_lo*b_hi, a_hi*b_lo, a_hi*b_hi
        outer = self.reg((hh << s3) + ll, name=f"{name}_outer")
        if s1 == s2:
            mid = self.reg(lh + hl, name=f"{name}_mid")
            return self.reg(outer + (mid << s1), name=f"{name}_sum"), 3
        mid = self.reg((lh << s1) + (hl << s2), name=f"{name}_mid")
        return self.reg(outer + mid, name=f"{name}_sum"), 3

    def delay(self, value, n: int, name: str = "dly"):
        """``value`` delayed by ``n`` register stages (``n = 0`` returns it unchanged)."""
        for k in range(n):
            value = self.reg(value, name=f"{name}_{k + 1}")
        return value


_MUL_BITS = 18          #: signed operand width of one multiplier (ECP5 MULT18X18D, iCE40 SB_MAC16 is 16)


def _chunks(x):
    """Split a value into multiplier-sized ``(piece, shift)`` pairs, low piece unsigned."""
    shape = x.shape()
    width = shape.width + (0 if shape.signed else 1)         # as a signed operand
    if width <= _MUL_BITS:
        return [(x, 0)]
    lo_bits = _MUL_BITS - 1
    hi = x[lo_bits:]
    hi = hi.as_signed() if shape.signed else hi
    if shape.width - lo_bits + (0 if shape.signed else 1) > _MUL_BITS:
        raise ValueError(f"operand of {shape.width} bits is too wide for two multiplier pieces")
    return [(x[:lo_bits], 0), (hi, lo_bits)]


def stream_pipeline(m: Module, i, o, latency: int):
    """Handshake for a fixed-latency pipeline between stream ports ``i`` and ``o``.

    Returns the advance enable ``en = ~o.valid | o.ready`` (also ``i.ready``):
    the whole pipeline moves by one stage whenever the output register is
    empty or being taken, so a stalled consumer stops every stage and nothing
    is lost. Throughput is one element per cycle while ``o.ready`` is high.
    ``o.valid`` is a register; ``i.ready`` depends combinationally on
    ``o.ready`` (never on ``i.valid``).
    """
    if latency < 1:
        raise ValueError(f"pipeline latency must be >= 1, got {latency}")
    en = Signal(name="pipe_en")
    valid = Signal(latency, name="pipe_valid")
    m.d.comb += [en.eq(~o.valid | o.ready), i.ready.eq(en), o.valid.eq(valid[-1])]
    with m.If(en):
        m.d.sync += valid.eq(Cat(i.valid, valid[:-1]))
    return en


# --------------------------------------------------------------------------
# raw (enable-driven) cores

class SigmoidCore(Elaboratable):
    """Stallable ``sigmoid_q`` datapath without a handshake (building block).

    ``y`` is ``sigmoid_q`` of the ``x`` presented ``LATENCY`` enabled cycles
    earlier. Owns one 1024 x 17 table memory with two read ports.

    Attributes
    ----------
    en : Signal, in
        Advance; everything (memory read ports included) holds while low.
    x : Signal(signed(32)), in
        V32 argument, sampled on an enabled clock edge.
    y : Signal(unsigned(17)), out
        P16 result (0..65536).
    """

    LATENCY = 6

    def __init__(self):
        self.en = Signal()
        self.x = Signal(V32)
        self.y = Signal(P16)
        self.table = memory.Memory(shape=P16, depth=len(_TABLE) - 1, init=_TABLE[:-1])
        self._rd0 = self.table.read_port(domain="sync")
        self._rd1 = self.table.read_port(domain="sync")

    def elaborate(self, platform):
        m = Module()
        m.submodules.table = self.table
        p = Pipe(m, self.en)
        # stage 1: clamp, offset, split into index and interpolation fraction
        xc = Mux(self.x < _X_LO, _X_LO, Mux(self.x > _X_HI, _X_HI, self.x))
        xo = Signal(_XO_BITS)
        m.d.comb += xo.eq(xc - _X_LO)
        idx1 = p.reg(xo[nx.SIG_FRAC_BITS:], name="sig_idx")
        frac1 = p.reg(xo[:nx.SIG_FRAC_BITS], name="sig_frac")
        # stage 2: table reads T[idx], T[idx+1] (T[1024] is a constant)
        rd0, rd1 = self._rd0, self._rd1
        m.d.comb += [rd0.en.eq(self.en), rd1.en.eq(self.en),
                     rd0.addr.eq(idx1), rd1.addr.eq(idx1 + 1)]
        last = p.delay(idx1 == (1 << _IDX_BITS) - 1, 2, name="sig_last")
        frac = p.delay(frac1, 2, name="sig_frac")
        # stage 3: block RAM outputs registered as they are (its clock-to-out is slow)
        t0 = p.reg(rd0.data, name="sig_t0")
        t1 = p.reg(rd1.data, name="sig_t1")
        # stage 4: T[idx] and the delta (range taken from the table; T[1024] is a constant)
        d = p.reg(Mux(last, _TABLE[-1], t1) - t0, shape=range(min(_DELTAS), max(_DELTAS) + 1), name="sig_d")
        t0 = p.reg(t0, name="sig_t0_4")
        frac = p.reg(frac, name="sig_frac4")
        # stage 5: interpolation product (10-bit delta x 11-bit fraction) plus the rounding constant, in
        # LUTs (no block multiplier for so small a product): two registered partial sums
        t0 = p.reg(t0, name="sig_t0_5")
        pw = unsigned(len(d) + len(frac) + 1)
        parts = [p.reg(g, shape=pw, name=f"sig_prod{k}")
                 for k, g in enumerate(shift_add_groups(frac, d, 2, extra=1 << (nx.SIG_FRAC_BITS - 1)))]
        # stage 6: rounding shift and sum (rshr(d * frac, 11) + T[idx])
        prod = Signal(pw, name="sig_prod_sum")
        m.d.comb += prod.eq(tree_sum(parts))
        m.d.comb += self.y.eq(p.reg(t0 + (prod >> nx.SIG_FRAC_BITS), shape=P16, name="sig_y"))
        return m


class SiLUCore(Elaboratable):
    """Stallable ``silu_q`` datapath: ``rshr(x * sigmoid_q(x), 16)`` (32 x 17-bit product).

    ``y`` is ``silu_q`` of the ``x`` presented ``LATENCY`` enabled cycles earlier.

    Attributes
    ----------
    en : Signal, in
    x : Signal(signed(32)), in
    y : Signal(signed(32)), out
        Never saturates: ``|silu_q(x)| <= |x|``.
    """

    LATENCY = SigmoidCore.LATENCY + 3

    def __init__(self):
        self.en = Signal()
        self.x = Signal(V32)
        self.y = Signal(V32)

    def elaborate(self, platform):
        m = Module()
        m.submodules.sigmoid = sig = SigmoidCore()
        p = Pipe(m, self.en)
        m.d.comb += [sig.en.eq(self.en), sig.x.eq(self.x)]
        xd = p.delay(self.x, SigmoidCore.LATENCY, name="silu_x")
        prod, stages = p.mul(xd, sig.y, name="silu_prod")          # 32s x 17u -> 49 bits, 2 stages
        assert SigmoidCore.LATENCY + stages + 1 == self.LATENCY
        m.d.comb += self.y.eq(p.reg(rshr_const(prod, nx.FRAC), shape=V32, name="silu_y"))
        return m


# --------------------------------------------------------------------------
# stream components

class Sigmoid(wiring.Component):
    """Pipelined ``sigmoid_q``: V32 stream in, P16 stream out, bit-exact.

    Contract
    --------
    * ``i``: stream of ``signed(32)`` (V32). ``o``: stream of ``unsigned(17)``
      (P16, 0..65536).
    * Latency ``LATENCY`` = 6 cycles from an accepted input to its output
      becoming valid (with ``o.ready`` held high); throughput one element per
      cycle.
    * Backpressure: ``i.ready = ~o.valid | o.ready``; a stalled output freezes
      the whole pipeline, no element is dropped or duplicated.
    * Resources: one 1024 x 17 ROM with two read ports (one dual-port block
      RAM), one 10 x 11-bit product in LUTs (shift and add, two partial sums);
      on an ECP5 1 DP16KD, no MULT18X18D.

    Stages: 1 clamp to [-16, 16) and split ``xo`` into a 10-bit index and an
    11-bit fraction; 2 table reads; 3 the read data registered unchanged (the
    block RAM's clock-to-out is most of a 10 ns cycle); 4 ``T[idx+1] - T[idx]``;
    5 delta x fraction; 6 ``T[idx] + rshr(product, 11)``.
    """

    LATENCY = SigmoidCore.LATENCY

    def __init__(self):
        super().__init__({"i": In(stream.Signature(V32)), "o": Out(stream.Signature(P16))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = SigmoidCore()
        en = stream_pipeline(m, self.i, self.o, self.LATENCY)
        m.d.comb += [core.en.eq(en), core.x.eq(self.i.payload), self.o.payload.eq(core.y)]
        return m


class SiLU(wiring.Component):
    """Pipelined ``silu_q``: V32 stream in, V32 stream out, bit-exact.

    Contract
    --------
    * ``i``, ``o``: streams of ``signed(32)``.
    * Latency ``LATENCY`` = 9 cycles (the sigmoid's 6, the 32 x 17-bit product
      in two stages, the rounding shift); ``x`` is carried alongside the
      sigmoid in a 6-stage delay line. Throughput one element per cycle.
    * Backpressure as :class:`Sigmoid`.
    * Resources: the sigmoid's, plus a 32 x 17-bit signed product (49 bits)
      as two 18 x 18 multipliers and a registered adder; 2 MULT18X18D in all
      on an ECP5, one block RAM.
    """

    LATENCY = SiLUCore.LATENCY

    def __init__(self):
        super().__init__({"i": In(stream.Signature(V32)), "o": Out(stream.Signature(V32))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = SiLUCore()
        en = stream_pipeline(m, self.i, self.o, self.LATENCY)
        m.d.comb += [core.en.eq(en), core.x.eq(self.i.payload), self.o.payload.eq(core.y)]
        return m
