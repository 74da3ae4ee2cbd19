"""Weight decoder: packed tile words from the weight memory -> one trit per lane.

The packings are defined once in :mod:`mmfree.packing` (base 3, five trits
per byte; or two bits per trit). This block is their hardware inverse and
sits between the weight memory's read port and the TAC array
(:mod:`mmfree.hw.tac`).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree.packing import B3_MAX_BYTE, B3_TRITS_PER_BYTE, PACKINGS, word_bits

__all__ = ["TRIT", "WeightDecoder", "check_decoder_args", "decode_word", "trit_layout"]

#: Shape of one decoded trit: a 2-bit two's complement value, -1, 0 or +1
#: (bits ``00`` = 0, ``01`` = +1, ``11`` = -1). Read as a pair of enables,
#: bit 0 is "add or subtract" (non-zero) and bit 1 is "subtract" (negative);
#: this is also the ``2b`` packing's own code, so a valid ``2b`` word passes
#: through unchanged.
TRIT = signed(2)

assert B3_MAX_BYTE == 0xf2 and B3_TRITS_PER_BYTE == 5   # the decode below is built for these


def trit_layout(lanes: int) -> data.ArrayLayout:
    """Layout of ``lanes`` decoded trits: element ``i`` (bits ``[2i+1:2i]``) is trit ``i``."""
    return data.ArrayLayout(TRIT, lanes)


def _digits(value: int, n: int) -> list[int]:
    out = []
    for _ in range(n):
        out.append(value % 3)
        value //= 3
    return out


def _interleave(lo, hi):
    """``Cat(lo[0], hi[0], lo[1], hi[1], ...)``: wiring only."""
    return Cat(*(Cat(lo[i], hi[i]) for i in range(len(lo))))


def _b3_table(m: Module, nibble, shift: int, digits: int, bias: int, name: str):
    """Base-3 digits of ``nibble << shift`` plus ``bias`` per digit, two bits per digit (a 16-entry ROM)."""
    width = 2 * digits
    table = 0
    for v in range(16):              # entries 16 bits apart: the index scales by a shift, not a product
        entry = sum((d + bias) << (2 * j) for j, d in enumerate(_digits(v << shift, digits)))
        table |= entry << (16 * v)
    out = Signal(width, name=name)
    m.d.comb += out.eq(Const(table, 256) >> Cat(Const(0, 4), nibble))     # one shift cell, not a case tree
    return out


def _decode_b3_byte(m: Module, byte, name: str, stage=None):
    """Five trits (a 10-bit value, trit ``i`` in bits ``[2i+1:2i]``) and an invalid flag for one byte.

    ``byte = 16 h + l``. Two 16-entry constant tables give the base-3
    digits of ``16 h`` (each plus one) and of ``l``, two bits per digit; one
    binary addition of the two adds them digit by digit: thanks to the +1
    bias a digit sum of 3 or more carries out of its 2-bit field exactly as
    a base-3 carry, and a field that did not carry is one too high, which a
    per-field decrement (no borrow leaves the field) removes. About 27 ECP5
    LUT4s and 6 CCU2C carry cells per byte (~39 LUT4 equivalents), against
    ~136 LUT4s for a flat 256-entry table (measured with ``synth_ecp5``).
    Bytes 243..255 are invalid: they decode to five zero trits.

    ``stage``, if given, registers its argument (``stage(value, name) ->
    Signal``): the decode then takes two cycles, cut after the addition.
    """
    n = B3_TRITS_PER_BYTE
    hi, lo = byte[4:], byte[:4]
    th = _b3_table(m, hi, 4, n, 1, f"{name}_h")            # digits of 16 h, +1 each
    tl = _b3_table(m, lo, 0, 3, 0, f"{name}_l")             # digits of l (15 = 120 in base 3)
    s = Signal(2 * n + 1, name=f"{name}_s")
    m.d.comb += s.eq(th + tl)
    htl = Signal(2 * n, name=f"{name}_htl")
    m.d.comb += htl.eq(th ^ tl)
    # byte > 242 = 0xf2  <=>  hi == 0xf and lo >= 3
    bad = Signal(name=f"{name}_bad")
    m.d.comb += bad.eq(hi.all() & (lo[2] | lo[3] | (lo[0] & lo[1])))
    if stage is not None:
        s, htl, bad = stage(s, f"{name}_s_r"), stage(htl, f"{name}_htl_r"), stage(bad, f"{name}_bad_r")
    x = Signal(2 * n + 1, name=f"{name}_x")
    m.d.comb += x.eq(s ^ htl)                               # x[2i+2]: carry out of field i
    keep = Signal(n, name=f"{name}_k")                      # fields still one too high
    d_lo, d_hi = Signal(n, name=f"{name}_dl"), Signal(n, name=f"{name}_dh")
    m.d.comb += [keep.eq(~x[2::2]), d_lo.eq(s[0:2 * n:2] ^ keep), d_hi.eq(s[1:2 * n:2] ^ (keep & ~s[0:2 * n:2]))]
    # digit 1 -> 01 (+1), digit 2 -> 11 (-1), 0 -> 00; invalid bytes -> 00
    nz, ng = Signal(n, name=f"{name}_nz"), Signal(n, name=f"{name}_ng")
    m.d.comb += [nz.eq(Mux(bad, 0, d_lo | d_hi)), ng.eq(Mux(bad, 0, d_hi))]
    return _interleave(nz, ng), bad


def decode_word(m: Module, word, lanes: int, packing: str, stage=None):
    """The trits (``trit_layout(lanes)`` bits) and the invalid flag of one packed word.

    Combinational; with ``stage`` (``stage(value, name) -> Signal``, a
    register) cut once: after the base-3 addition for ``"b3"``, at the
    input for ``"2b"``. :class:`WeightDecoder` documents the codes.
    """
    trits = Signal(2 * lanes)
    bad = Signal()
    if packing == "2b":
        if stage is not None:
            word = stage(word, "word_r")
        lo, hi = word[0::2], word[1::2]
        ng = Signal(lanes)
        m.d.comb += [ng.eq(hi & lo),                             # 10 is invalid -> 00
                     trits.eq(_interleave(lo, ng)),
                     bad.eq((hi & ~lo).any())]
        return trits, bad
    nbytes = word_bits(lanes, packing) // 8
    rem = lanes - B3_TRITS_PER_BYTE * (nbytes - 1)               # trits in the last byte, 1..5
    codes, bads = [], []
    for b in range(nbytes):
        byte = word[8 * b:8 * b + 8]
        c, e = _decode_b3_byte(m, byte, f"b{b}", stage)
        if b == nbytes - 1 and rem < B3_TRITS_PER_BYTE:
            pad = Signal(name=f"b{b}_pad")
            m.d.comb += pad.eq(byte >= 3 ** rem)                 # non-zero padding trits
            c = c[:2 * rem]
            bads.append(pad if stage is None else stage(pad, f"b{b}_pad_r"))
        codes.append(c)
        bads.append(e)
    m.d.comb += [trits.eq(Cat(*codes)), bad.eq(Cat(*bads).any())]
    return trits, bad


def check_decoder_args(lanes, packing) -> None:
    """Raise ``TypeError``/``ValueError`` for arguments :class:`WeightDecoder` does not take."""
    if isinstance(lanes, bool) or not isinstance(lanes, int):
        raise TypeError(f"lanes must be an integer, not {lanes!r}")
    if lanes < 1:
        raise ValueError(f"lanes must be at least 1, got {lanes}")
    if packing not in PACKINGS:
        raise ValueError(f"packing must be one of {', '.join(repr(p) for p in PACKINGS)}, got {packing!r}")


class WeightDecoder(wiring.Component):
    """Decode one packed tile word per cycle into ``lanes`` trits.

    Parameters
    ----------
    lanes : int
        Trits per tile word (``rows * cols`` of the TAC array), >= 1.
    packing : {"b3", "2b"}
        ``"b3"``: base 3, five trits per byte, ``byte = sum_i digit_i 3^i``
        (first trit least significant), digits 0/1/2 for trits 0/+1/-1, byte 0
        in bits ``[7:0]``; ``"2b"``: trit ``i`` in bits ``[2i+1:2i]`` as
        ``00``/``01``/``11`` for 0/+1/-1. :mod:`mmfree.packing` is the
        definition.

    Attributes
    ----------
    word_bits : int
        Input word width: ``8 * ceil(lanes / 5)`` for ``"b3"``, ``2 * lanes``
        for ``"2b"``.
    latency : int
        1: a word accepted in cycle ``t`` is offered on ``o`` in cycle ``t + 1``.

    Members
    -------
    i : ``In(stream.Signature(word_bits))``
        Packed tile words.
    o : ``Out(stream.Signature(trit_layout(lanes)))``
        Decoded trits: element ``i`` of the payload (bits ``[2i+1:2i]``) is
        trit ``i`` of the tile as a 2-bit signed value (:data:`TRIT`: ``00``
        = 0, ``01`` = +1, ``11`` = -1; never ``10``).
    error : ``Out(1)``
        Sticky: set by the first accepted word that holds an invalid code
        (``"2b"``: a ``10`` code, which decodes to 0; ``"b3"``: a byte above
        242, which decodes to five 0 trits, or non-zero padding trits in the
        last byte, which are dropped). Cleared only by ``error_clear`` or
        reset.
    error_clear : ``In(1)``
        Clears ``error`` (an invalid word accepted in the same cycle sets it
        again).

    Notes
    -----
    One register stage holds the decoded trits; ``i.ready = ~o.valid |
    o.ready``, so the decoder sustains one word per cycle while ``o`` is
    ready, and holds its output stable under backpressure (``o.valid`` never
    depends on ``o.ready``). Cost (``synth_ecp5``): 256 lanes ``"b3"``
    (52 bytes) 1,380 LUT4 + 310 CCU2C + 514 FFs; 40 lanes ``"2b"`` 77 LUT4 +
    82 FFs. No multipliers.
    """

    latency = 1

    def __init__(self, lanes: int, packing: str):
        check_decoder_args(lanes, packing)
        self._lanes = lanes
        self._packing = packing
        self._word_bits = word_bits(lanes, packing)
        super().__init__({
            "i": In(stream.Signature(self._word_bits)),
            "o": Out(stream.Signature(trit_layout(lanes))),
            "error": Out(1),
            "error_clear": In(1),
        })

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def packing(self) -> str:
        return self._packing

    @property
    def word_bits(self) -> int:
        return self._word_bits

    def elaborate(self, platform):
        m = Module()
        trits, bad = decode_word(m, self.i.payload, self._lanes, self._packing)
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.o.payload.eq(trits), self.o.valid.eq(1)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.If(self.i.valid & self.i.ready & bad):
            m.d.sync += self.error.eq(1)
        with m.Elif(self.error_clear):
            m.d.sync += self.error.eq(0)
        return m
