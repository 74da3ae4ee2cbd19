"""Per-vector scalar arithmetic of the BitLinear input stage (docs/numerics.md section 4).

Three small sequential units, one per operation, so the sequencer can
overlap them (the square root of the RMS statistic while the quantizer
reciprocals are computed, and so on):

| unit | computes (numpy form) | cycles, request to response |
|---|---|---|
| :class:`QuantRecip` | ``M -> (R, M16, sh)`` as :func:`mmfree.numerics.quantize_a8` | 8 |
| :class:`SumSqSqrt` | ``t -> (sqrt_t, et)``, :func:`mmfree.numerics.sumsq_sqrt` | ``|et|/2 + 18`` (at most 33) |
| :class:`OutputScale` | ``-> (m_S, e_S)``, :func:`mmfree.numerics.output_scale` | ``bitlen(Qr*m_k) + 3`` (34..36 for a normalized ``m_k``) |

Cycle counts run from the clock edge that accepts the request to the first
edge at which ``resp.valid`` is high. Each unit has a request stream ``req``
and a response stream ``resp``: ``req.ready`` is high only while the unit is
idle; a request is accepted on a cycle with ``req.valid & req.ready``; the
response is then computed one step per cycle and held on ``resp``
(``resp.valid`` high) until ``resp.ready``, after which the unit is idle
again. One operation is in flight at a time.
No unit has a combinational divider or square root. ``QuantRecip``, on the
core's critical path once per LINEAR, normalizes with a priority encoder and
a barrel shifter and divides three bits per cycle; the others normalize with
one-bit (two-bit for ``et``) shift loops, divide one bit per cycle and take
the square root digit by digit. The only multiplier is
``OutputScale``'s 17 x 16 ``Qr * m_k`` (one DSP). On an ECP5 (yosys, nextpnr
out of context) the three take about 140, 120 and 160 flip-flops and
200-260 LUTs each and run at 180, 185 and 120 MHz.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree import numerics as nx

__all__ = ["QuantRecip", "SumSqSqrt", "OutputScale", "bitlen",
           "RECIP_RESP", "SQRT_RESP", "SCALE_REQ", "SCALE_RESP", "SH_SHAPE", "ET_SHAPE", "E_SHAPE"]

M_BITS = 31                 #: ``M = max|bs * cv|`` < 2^30 in practice; any 31-bit value is handled
T_BITS = 48                 #: the RMS statistic ``t = sum(u^2)``
SH_SHAPE = signed(5)        #: quantizer shift ``sh = bitlen(M) - 16`` in [-15, 15]
ET_SHAPE = signed(6)        #: ``et`` in [-30, 16], even
E_SHAPE = signed(18)        #: output-scale exponent; exact for every int16 ``k_e``
R_BITS = 15                 #: ``R = round(127 * 2^23 / M16)`` in [16256, 32512]



def bitlen(m: Module, v, name: str = "bitlen") -> Signal:
    """``bitlen`` of an unsigned value (0 for 0), combinational, logarithmic depth.

    A tree of (any bit set, position of the highest) pairs: two halves
    combine as ``any = any_hi | any_lo`` and ``pos = any_hi ? 1:pos_hi :
    0:pos_lo``, so a 32-bit value takes 5 levels of 2:1 muxes (the ORs
    alongside) instead of a 32-step priority chain.
    """
    v = Value.cast(v)
    n = len(v)
    width = 1
    while width < n:
        width *= 2
    cur = Signal(width, name=f"{name}_in")
    m.d.comb += cur.eq(v)

    def enc(lo: int, size: int, depth: int):
        if size == 1:
            return cur[lo], None
        half = size // 2
        a_l, p_l = enc(lo, half, depth + 1)
        a_h, p_h = enc(lo + half, half, depth + 1)
        a = Signal(name=f"{name}_a{depth}_{lo}")
        p = Signal(size.bit_length() - 1, name=f"{name}_p{depth}_{lo}")
        m.d.comb += a.eq(a_l | a_h)
        if p_l is None:
            m.d.comb += p.eq(a_h)
        else:
            m.d.comb += p.eq(Mux(a_h, Cat(p_h, 1), Cat(p_l, 0)))
        return a, p

    out = Signal(range(n + 1), name=name)
    if width == 1:
        m.d.comb += out.eq(cur[0])
        return out
    any_, pos = enc(0, width, 0)
    m.d.comb += out.eq(Mux(any_, pos + 1, 0))
    return out


RECIP_RESP = data.StructLayout({"r": unsigned(R_BITS), "m16": unsigned(16), "sh": SH_SHAPE})
SQRT_RESP = data.StructLayout({"sqrt": unsigned(16), "et": ET_SHAPE})
SCALE_REQ = data.StructLayout({"k_m": unsigned(16), "k_e": signed(16), "m16": unsigned(16), "sh": SH_SHAPE,
                               "sqrt": unsigned(16), "et": ET_SHAPE})
SCALE_RESP = data.StructLayout({"m": unsigned(16), "e": E_SHAPE})


class QuantRecip(wiring.Component):
    """Quantizer normalization and reciprocal, exactly as :func:`mmfree.numerics.quantize_a8`.

    ``sh = bitlen(M) - 16``; ``M16 = shr_floor(M, sh)`` in [2^15, 2^16);
    ``R = round(127 * 2^23 / M16) = ((127 << 24) + M16) // (2 M16)``.
    ``M = 0`` answers ``(R, M16, sh) = (0, 0, 0)``: with ``R = 0`` the
    quantizer's formula gives ``q = 0``, which is the spec's zero-vector rule.

    Contract
    --------
    * ``req``: stream of ``unsigned(31)`` (``M = max|v|``). ``resp``: stream of
      ``RECIP_RESP = {r: unsigned(15), m16: unsigned(16), sh: signed(5)}``.
    * Request/response handshake as described in :mod:`mmfree.hw.scalar`;
      :data:`RECIP_CYCLES` (8) cycles from accepting the request to
      ``resp.valid``, 1 for ``M = 0``. The reciprocal sits on the core's
      critical path once per LINEAR, hence the unrolled division.
    * Datapath: a priority encoder (:func:`bitlen`, 5 levels, taken from the
      request as it is accepted) and a 31-bit barrel shifter normalize in
      one cycle; then a restoring division of three quotient bits per cycle
      (three chained 18-bit subtractors), 18 bits in 6 cycles. No multipliers.
    """

    def __init__(self):
        super().__init__({"req": In(stream.Signature(unsigned(M_BITS))), "resp": Out(stream.Signature(RECIP_RESP))})

    def elaborate(self, platform):
        m = Module()
        x = Signal(M_BITS)
        rem = Signal(18)
        den = Signal(17)
        nbits = Signal(18)
        quo = Signal(18)
        count = Signal(range(7))
        out = self.resp.payload
        # normalization: sh = bitlen(x) - 16, M16 = x >> sh (x << -sh); bitlen is taken from the request
        # and registered with x, so NORM has only the shifter and the adder
        blen = Signal(range(M_BITS + 1))
        blen_req = bitlen(m, self.req.payload, "blen_req")
        sh_c = Signal(SH_SHAPE)
        m.d.comb += sh_c.eq(blen - 16)
        m16_c = Signal(16)
        sr, sl = Signal(5), Signal(5)
        m.d.comb += [sr.eq(blen - 16), sl.eq(16 - blen), m16_c.eq(Mux(blen >= 16, x >> sr, x << sl))]
        num = Signal(32)
        m.d.comb += num.eq((127 << (nx.Q_SHIFT + 1)) + m16_c)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.req.ready.eq(1)
                with m.If(self.req.valid):
                    m.d.sync += [x.eq(self.req.payload), blen.eq(blen_req)]
                    with m.If(self.req.payload == 0):
                        m.d.sync += [out.r.eq(0), out.m16.eq(0), out.sh.eq(0)]
                        m.next = "DONE"
                    with m.Else():
                        m.next = "NORM"
            with m.State("NORM"):
                # N = (127 << 24) + M16 < 2^31, D = 2 M16 >= 2^16: N >> 18 < D, so 18 quotient bits
                # (the first three 0) are the 15 of R
                m.d.sync += [rem.eq(num >> 18), nbits.eq(num[:18]), den.eq(m16_c << 1), count.eq(6), quo.eq(0),
                             out.m16.eq(m16_c), out.sh.eq(sh_c)]
                m.next = "DIV"
            with m.State("DIV"):
                r2 = Cat(nbits[-1], rem)
                ge1 = r2 >= den
                s1 = Mux(ge1, r2 - den, r2)[:18]
                r3 = Cat(nbits[-2], s1)
                ge2 = r3 >= den
                s2 = Mux(ge2, r3 - den, r3)[:18]
                r4 = Cat(nbits[-3], s2)
                ge3 = r4 >= den
                s3 = Mux(ge3, r4 - den, r4)
                m.d.sync += [rem.eq(s3), nbits.eq(nbits << 3), quo.eq(Cat(ge3, ge2, ge1, quo)), count.eq(count - 1)]
                with m.If(count == 1):
                    m.d.sync += out.r.eq(Cat(ge3, ge2, ge1, quo))
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.resp.valid.eq(1)
                with m.If(self.resp.ready):
                    m.next = "IDLE"
        return m


#: Cycles of :class:`QuantRecip` from an accepted non-zero request to ``resp.valid``.
RECIP_CYCLES = 8


class SumSqSqrt(wiring.Component):
    """Square root of the RMS statistic, exactly :func:`mmfree.numerics.sumsq_sqrt`.

    ``et = bitlen(t) - 32`` rounded up to even (0 for ``t = 0``);
    ``sqrt_t = isqrt(shr_floor(t, et))`` in [2^15, 2^16).

    Contract
    --------
    * ``req``: stream of ``unsigned(48)`` (``t``). ``resp``: stream of
      ``SQRT_RESP = {sqrt: unsigned(16), et: signed(6)}``.
    * Request/response handshake as described in :mod:`mmfree.hw.scalar`;
      ``|et|/2 + 18`` cycles to ``resp.valid`` (at most 33), 1 for ``t = 0``.
    * Datapath: a two-bit shifter normalizes ``t`` into [2^30, 2^32) (which
      fixes ``et`` even), then 16 steps of the digit-by-digit square root
      (20-bit remainder, 18-bit trial subtractor). No multipliers.
    """

    def __init__(self):
        super().__init__({"req": In(stream.Signature(unsigned(T_BITS))), "resp": Out(stream.Signature(SQRT_RESP))})

    def elaborate(self, platform):
        m = Module()
        x = Signal(T_BITS)
        et = Signal(ET_SHAPE)
        rem = Signal(20)
        root = Signal(16)
        count = Signal(range(17))
        out = self.resp.payload
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.req.ready.eq(1)
                with m.If(self.req.valid):
                    m.d.sync += [x.eq(self.req.payload), et.eq(0)]
                    with m.If(self.req.payload == 0):
                        m.d.sync += [out.sqrt.eq(0), out.et.eq(0)]
                        m.next = "DONE"
                    with m.Else():
                        m.next = "NORM"
            with m.State("NORM"):
                with m.If(x[32:] != 0):
                    m.d.sync += [x.eq(x >> 2), et.eq(et + 2)]
                with m.Elif(x[30:32] == 0):
                    m.d.sync += [x.eq(x << 2), et.eq(et - 2)]
                with m.Else():
                    m.d.sync += [rem.eq(0), root.eq(0), count.eq(16)]
                    m.next = "SQRT"
            with m.State("SQRT"):
                r2 = Cat(x[30:32], rem)[:20]
                trial = Cat(Const(1, 2), root)
                ge = r2 >= trial
                m.d.sync += [rem.eq(Mux(ge, r2 - trial, r2)), root.eq(Cat(ge, root)), x.eq(x[:30] << 2),
                             count.eq(count - 1)]
                with m.If(count == 1):
                    m.d.sync += [out.sqrt.eq(Cat(ge, root)), out.et.eq(et)]
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.resp.valid.eq(1)
                with m.If(self.resp.ready):
                    m.next = "IDLE"
        return m


class OutputScale(wiring.Component):
    """Per-token dequantization scale, exactly :func:`mmfree.numerics.output_scale`.

    ``Qr = (M16 << 16) // sqrt_t`` (17 bits, restoring division);
    ``(m_S, e_S) = pf_normalize(Qr * m_k, k_e + sh - et/2 - 16)`` with round
    half up to 16 bits and a carry-out renormalization. A zero ``M16``,
    ``sqrt_t`` or ``m_k`` gives ``(0, 0)``.

    Precondition: ``M16`` and ``sqrt_t`` are zero or in [2^15, 2^16), as
    :class:`QuantRecip` and :class:`SumSqSqrt` produce them (then
    ``M16 < 2 sqrt_t`` and ``Qr`` fits 17 bits). ``m_k`` and ``k_e`` may be any
    16-bit values; ``e_S`` is exact for all of them (18 bits).

    Contract
    --------
    * ``req``: stream of ``SCALE_REQ = {k_m: unsigned(16), k_e: signed(16),
      m16: unsigned(16), sh: signed(5), sqrt: unsigned(16), et: signed(6)}``.
      ``resp``: stream of ``SCALE_RESP = {m: unsigned(16), e: signed(18)}``.
    * Request/response handshake as described in :mod:`mmfree.hw.scalar`;
      ``bitlen(P) + 3`` cycles to ``resp.valid`` for ``P = Qr * m_k`` with
      ``bitlen(P) >= 17`` (34 to 36 for a normalized ``m_k``),
      ``36 - bitlen(P)`` below that, 1 for a zero scale.
    * Datapath: 17-step restoring division (17-bit subtractor), one registered
      17 x 16 multiplier (33-bit product, one DSP), a one-bit shifter for the
      normalization and a 17-bit incrementer for the rounding.
    """

    def __init__(self):
        super().__init__({"req": In(stream.Signature(SCALE_REQ)), "resp": Out(stream.Signature(SCALE_RESP))})

    def elaborate(self, platform):
        m = Module()
        rq = self.req.payload
        out = self.resp.payload
        k_m = Signal(16)
        den = Signal(16)
        rem = Signal(17)
        nbits = Signal(17)
        quo = Signal(17)
        prod = Signal(33)
        e = Signal(E_SHAPE)
        count = Signal(range(18))
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.req.ready.eq(1)
                with m.If(self.req.valid):
                    m.d.sync += [k_m.eq(rq.k_m), den.eq(rq.sqrt),
                                 e.eq(rq.k_e + rq.sh - (rq.et >> 1) - nx.FRAC),
                                 # N = M16 << 16; N >> 17 = M16 >> 1 < sqrt_t; then 17 quotient bits
                                 rem.eq(rq.m16 >> 1), nbits.eq(Cat(Const(0, 16), rq.m16[0])),
                                 quo.eq(0), count.eq(17)]
                    with m.If((rq.m16 == 0) | (rq.sqrt == 0) | (rq.k_m == 0)):
                        m.d.sync += [out.m.eq(0), out.e.eq(0)]
                        m.next = "DONE"
                    with m.Else():
                        m.next = "DIV"
            with m.State("DIV"):
                r2 = Cat(nbits[-1], rem)
                ge = r2 >= den
                m.d.sync += [rem.eq(Mux(ge, r2 - den, r2)), nbits.eq(nbits << 1), quo.eq(Cat(ge, quo)),
                             count.eq(count - 1)]
                with m.If(count == 1):
                    m.next = "MUL"
            with m.State("MUL"):
                m.d.sync += prod.eq(quo * k_m)
                m.next = "NORM"
            with m.State("NORM"):
                with m.If(prod[17:] != 0):              # bitlen > 17: floor shift right
                    m.d.sync += [prod.eq(prod >> 1), e.eq(e + 1)]
                with m.Elif(prod[16]):                  # bitlen 17: round half up, carry renormalizes
                    rounded = (prod[:17] + 1)[1:18]     # 17 bits: 2^16 on carry-out
                    m.d.sync += [out.m.eq(Mux(rounded[16], 1 << 15, rounded[:16])),
                                 out.e.eq(e + 1 + rounded[16])]
                    m.next = "DONE"
                with m.Elif(~prod[15]):                 # bitlen < 16: exact shift left
                    m.d.sync += [prod.eq(prod << 1), e.eq(e - 1)]
                with m.Else():                          # bitlen 16: already a mantissa
                    m.d.sync += [out.m.eq(prod[:16]), out.e.eq(e)]
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.resp.valid.eq(1)
                with m.If(self.resp.ready):
                    m.next = "IDLE"
        return m
