"""Ternary accumulate (TAC) array: ``rows x cols`` add/subtract/skip lanes, no multipliers.

Each input beat is one tile of the weight stream (docs/architecture.md, "Tile
order") with the ``cols`` int8 activation codes it multiplies; each row of
the tile adds, subtracts or skips each code through a pipelined adder tree
into the row's accumulator. When a row block ends (``last``), its ``rows``
accumulators leave on the output stream while the next row block already
accumulates. :func:`mmfree.numerics.ternary_matvec` is the definition.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree.numerics import A_MAX, A_MIN, ACC_BITS

from mmfree.packing import word_bits

from .floorplan import COPY
from .wdecode import WeightDecoder, check_decoder_args, decode_word, trit_layout

__all__ = ["CODE", "DecodingTAC", "PipelinedTAC", "TACArray", "code_layout", "tac_input_layout", "tac_output_layout",
           "tile_layout"]

#: One activation code (A8).
CODE = signed(8)
assert (A_MIN, A_MAX) == (-128, 127)


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


def _check_tac_args(rows, cols, acc_bits, stage_levels, result_depth) -> None:
    _check_int("rows", rows, 1)
    _check_int("cols", cols, 1)
    _check_int("stage_levels", stage_levels, 1)
    _check_int("result_depth", result_depth, 1)
    need = (128 * cols).bit_length() + 1          # signed width of +-128 * cols
    if isinstance(acc_bits, bool) or not isinstance(acc_bits, int):
        raise TypeError(f"acc_bits must be an integer, not {acc_bits!r}")
    if acc_bits < need:
        raise ValueError(f"acc_bits must be at least {need} to hold one tile's sum of {cols} codes, "
                         f"got {acc_bits}")


def _check_a_copies(a_copies, rows) -> None:
    _check_int("a_copies", a_copies, 1)
    if a_copies > rows:
        raise ValueError(f"a_copies must be at most rows ({rows}), got {a_copies}")


def _levels(n: int) -> int:
    """Adder-tree levels that reduce ``n`` values to one: ``ceil(log2(n))``."""
    return (n - 1).bit_length()


def code_layout(cols: int) -> data.StructLayout:
    """The activation part of a TAC beat: ``a`` (``cols`` int8 codes), ``first``, ``last``.

    Bits: code ``c`` in ``[8c+7:8c]``; ``first`` at ``8 cols``; ``last`` at ``8 cols + 1``.
    """
    return data.StructLayout({"a": data.ArrayLayout(CODE, cols), "first": 1, "last": 1})


def tac_input_layout(rows: int, cols: int) -> data.StructLayout:
    """Payload of one TAC input beat.

    ``w`` (bits ``[2L-1:0]``, ``L = rows * cols``): the tile's trits,
    trit ``(r, c)`` at element ``r * cols + c`` (2-bit signed, see
    :data:`mmfree.hw.wdecode.TRIT`); ``a`` (next ``8 cols`` bits): code ``c``
    in element ``c``; ``first`` then ``last`` (one bit each, at the top).
    """
    return data.StructLayout({
        "w": trit_layout(rows * cols),
        "a": data.ArrayLayout(CODE, cols),
        "first": 1,
        "last": 1,
    })


def tile_layout(rows: int, cols: int, packing: str) -> data.StructLayout:
    """Payload of one :class:`PipelinedTAC` input beat: the packed word ``w``, then :func:`code_layout`'s fields."""
    return data.StructLayout({
        "w": word_bits(rows * cols, packing),
        "a": data.ArrayLayout(CODE, cols),
        "first": 1,
        "last": 1,
    })


def tac_output_layout(rows: int, acc_bits: int = ACC_BITS) -> data.ArrayLayout:
    """Payload of one result beat: accumulator of row ``r`` in bits ``[acc_bits (r+1) - 1 : acc_bits r]``."""
    return data.ArrayLayout(signed(acc_bits), rows)


class TACArray(wiring.Component):
    """The ternary accumulate array: ``acc[r] = sum_j t[r, j] * a[j]`` by adds, subtracts and skips.

    Parameters
    ----------
    rows : int
        Output rows per tile (>= 1).
    cols : int
        Input columns per tile (>= 1).
    acc_bits : int
        Accumulator width (default :data:`mmfree.numerics.ACC_BITS` = 24).
        Must hold one tile's sum, ``|sum| <= 128 cols``; accumulation wraps
        modulo ``2^acc_bits`` (the numerics spec keeps ``|acc| < 2^23`` for
        inputs up to :data:`mmfree.numerics.MAX_K` columns).
    stage_levels : int
        Adder-tree levels between pipeline registers (default 2; the ternary
        select sits in front of the first level).
    result_depth : int
        Finished row blocks the output buffer can hold (default 2: one on
        the output, one behind it). See *Throughput*.
    ring : bool
        The output buffer as a ring (default ``False``: a shift register).
        See *Output buffer*.
    a_copies : int
        Row groups with their own copies of the codes' input register, of
        the accumulators' valid and first, and (``ring``) of the result
        entries' write enables (default 1; at most ``rows``; group of row
        ``r``: ``r * a_copies // rows``). Copies are marked
        :data:`~mmfree.hw.floorplan.COPY`, so that each can sit by its rows.
        Same function and latency for any value.

    Attributes
    ----------
    latency : int
        Cycles from the transfer of a ``last`` beat on ``i`` to its result
        being offered on ``o`` (when no earlier result is still waiting):
        ``2 + ceil(levels / stage_levels)`` with ``levels = ceil(log2(cols))``
        (4 for 16 x 16 and for 4 x 5), one more with ``ring``.

    Members
    -------
    i : ``In(stream.Signature(tac_input_layout(rows, cols)))``
        One tile per beat: ``w`` (``rows * cols`` trits, trit ``(r, c)`` at
        ``r * cols + c``; bit 0 of a trit enables the lane, bit 1 makes it
        subtract, so the invalid code ``10`` is a skip), ``a`` (``cols``
        int8 codes, shared by all rows), ``first`` (start the row block: the
        accumulators restart from this tile's sums) and ``last`` (this tile
        ends the row block: emit). A one-tile row block has both.
    o : ``Out(stream.Signature(tac_output_layout(rows, acc_bits)))``
        One beat per row block: all ``rows`` accumulators, row ``r`` in
        element ``r`` (signed ``acc_bits``), in the order the blocks ended.

    Notes
    -----
    *Handshake.* ``i.ready`` is a registered credit check: it is high while
    fewer than ``result_depth`` row-block results are in flight or waiting on
    ``o``; it depends on neither ``i.valid`` nor ``o.ready`` in the same
    cycle. ``o.valid`` and ``o.payload`` come straight from registers and
    stay stable until the transfer. Gaps on ``i`` (``i.valid`` low) are
    bubbles that change nothing. Beats between ``first`` and ``last`` may be
    spread over any number of cycles.

    *Pipeline.* Input register -> ternary select (one LUT per bit: ``a``,
    ``~a`` or 0, with the ``+1`` of ``-a = ~a + 1`` left to an adder's
    carry-in) and ``stage_levels`` adder levels -> register -> ... ->
    accumulate (``(first ? 0 : acc) + sum``) -> result buffer. The datapath
    registers have no clock enables: the array never stalls; backpressure
    is applied at the input by the credit count.

    *Throughput.* One tile per cycle while ``o`` is ready, whenever row
    blocks are at least ``ceil(latency / (result_depth - 1))`` tiles long
    (4 tiles for the default depth 2 and latency 4; the model's row blocks
    are ``ceil(n / cols)`` >= 32 tiles on the 16 x 16 array): the next row
    block starts in the cycle after ``last``. A result holds its credit for
    ``latency`` cycles, so one-tile blocks run at ``result_depth`` blocks
    per ``latency + 1`` cycles; ``result_depth = latency + 1`` gives one
    tile per cycle for any block length. With ``o`` stalled the array
    accepts tiles until ``result_depth`` results wait.

    *Output buffer.* By default the finished accumulators go into a shift
    register whose head drives ``o``: each entry's enable depends on
    ``o.ready``. With ``ring`` the accumulators are copied a cycle later
    into the entry a write pointer names, and ``o.payload`` is the entry a
    read pointer names (a multiplexer, not a register): every enable of the
    wide registers is a function of registers alone, for a fast clock.

    *Cost.* No multiplier is inferred anywhere, and no negation either: the
    tree's ``cols - 1`` adders and the accumulator's adder take exactly the
    ``cols`` correction bits of a row as carry-ins. A row costs ``8 cols``
    LUT4s for the select plus its carry chains. ``synth_ecp5`` of 16 x 16
    (24-bit accumulators, default depth): 3,085 LUT4 + 1,440 CCU2C (2-bit
    carry cells) + 2,717 FFs, no DSP; ``nextpnr-ecp5 --85k --out-of-context``
    routes it at 131 MHz (125 MHz for ``DecodingTAC(16, 16, "b3")``).
    """

    def __init__(self, rows: int, cols: int, acc_bits: int = ACC_BITS, *, stage_levels: int = 2,
                 result_depth: int = 2, ring: bool = False, a_copies: int = 1):
        _check_tac_args(rows, cols, acc_bits, stage_levels, result_depth)
        if not isinstance(ring, bool):
            raise TypeError(f"ring must be a bool, not {ring!r}")
        _check_a_copies(a_copies, rows)
        self._a_copies = a_copies
        self._rows, self._cols, self._acc_bits = rows, cols, acc_bits
        self._stage_levels, self._result_depth, self._ring = stage_levels, result_depth, ring
        self._levels = _levels(cols)
        self._tree_stages = -(-self._levels // stage_levels)
        super().__init__({
            "i": In(stream.Signature(tac_input_layout(rows, cols))),
            "o": Out(stream.Signature(tac_output_layout(rows, acc_bits))),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    acc_bits = property(lambda self: self._acc_bits)
    result_depth = property(lambda self: self._result_depth)

    @property
    def latency(self) -> int:
        return self.latency_of(self._cols, self._stage_levels, self._ring)

    @staticmethod
    def latency_of(cols: int, stage_levels: int = 2, ring: bool = False) -> int:
        """:attr:`latency` of an array with ``cols`` columns, ``stage_levels`` levels per stage and ``ring``."""
        return 2 + -(-_levels(cols) // stage_levels) + ring

    def elaborate(self, platform):
        m = Module()
        R, C = self._rows, self._cols
        take = self.i.valid & self.i.ready

        # ---- stage 0: input register
        v = Signal(name="s0_valid")
        first = Signal(name="s0_first")
        last = Signal(name="s0_last")
        w = Signal(trit_layout(R * C), name="s0_w", reset_less=True)      # data registers: no reset
        if self._a_copies == 1:
            a_regs = [Signal(8 * C, name="s0_a", reset_less=True)]
        else:
            a_regs = [Signal(8 * C, name=f"s0_a{j}", reset_less=True, attrs=COPY) for j in range(self._a_copies)]
        m.d.sync += [v.eq(take), first.eq(self.i.p.first), last.eq(self.i.p.last), w.eq(self.i.p.w),
                     *(a.eq(self.i.p.a) for a in a_regs)]

        # ---- ternary select: t * a = (nz ? a ^ (neg ? -1 : 0) : 0) + (nz & neg), i.e. a one's
        # complement for -1 (8 bits, one LUT per bit) plus a correction bit. Every adder below and
        # the accumulator have a free carry-in, exactly ``cols`` of them per row: they absorb the
        # ``cols`` correction bits. ``pend[r]`` holds the bits not yet added. (Row-wide vector
        # operations keep the netlist small: simulators pay per named wire.)
        A = self._a_copies

        def grp(r):                      # the row group of row r: its copy of the codes and tags
            return r * A // R

        sums, pend = [], []
        for r in range(R):
            codes = a_regs[grp(r)]
            row = Value.cast(w)[2 * r * C:2 * (r + 1) * C]
            nz, ng = row[0::2], row[1::2]
            terms = Signal(8 * C, name=f"t{r}")
            cin = Signal(C, name=f"ci{r}")
            m.d.comb += [
                terms.eq((codes ^ Cat(*(ng[c].replicate(8) for c in range(C))))
                         & Cat(*(nz[c].replicate(8) for c in range(C)))),
                cin.eq(nz & ng),
            ]
            sums.append([terms[8 * c:8 * c + 8].as_signed() for c in range(C)])
            pend.append([cin[c] for c in range(C)])

        level = 0
        g_v, g_f = [v], [first]          # (no tree stages: the input register's)
        for stage in range(self._tree_stages):
            for _ in range(self._stage_levels):
                if level == self._levels:
                    break
                level += 1
                for r in range(R):
                    vals = sums[r]
                    nxt = []
                    for k in range(0, len(vals) - 1, 2):
                        x, y = vals[k], vals[k + 1]
                        # a kept wire per adder: otherwise Yosys fuses the levels of a stage into one
                        # multi-operand $macc built from carry-save LUT adders (about twice the
                        # LUTs of these carry chains). |sum of j terms| <= 128 j: one more bit.
                        sm = Signal(signed(max(len(x), len(y)) + 1), name=f"l{level}_r{r}_{k // 2}",
                                    attrs={"keep": 1})
                        m.d.comb += sm.eq(x + y + pend[r].pop())
                        nxt.append(sm)
                    if len(vals) % 2:
                        nxt.append(vals[-1])
                    sums[r] = nxt
            # pipeline register after this group of levels: one per row for its partial sums and
            # its pending correction bits, and the valid/first/last tags
            nv, nf, nl = (Signal(name=f"s{stage + 1}_{n}") for n in ("valid", "first", "last"))
            m.d.sync += [nv.eq(v), nf.eq(first), nl.eq(last)]
            if stage == self._tree_stages - 1:
                # the accumulators' valid and first: one copy per row group (as the codes)
                g_v, g_f = [nv], [nf]
                if A > 1:
                    g_v = [Signal(name=f"s{stage + 1}_valid_g{j}", reset_less=True, attrs=COPY) for j in range(A)]
                    g_f = [Signal(name=f"s{stage + 1}_first_g{j}", reset_less=True, attrs=COPY) for j in range(A)]
                    m.d.sync += [*(x.eq(v) for x in g_v), *(x.eq(first) for x in g_f)]
            v, first, last = nv, nf, nl
            for r in range(R):
                packed = Cat(*sums[r], *pend[r])
                reg = Signal(len(packed), name=f"s{stage + 1}_r{r}", reset_less=True)
                m.d.sync += reg.eq(packed)
                regs, pos = [], 0
                for val in sums[r]:
                    regs.append(reg[pos:pos + len(val)].as_signed())
                    pos += len(val)
                sums[r] = regs
                pend[r] = [reg[pos + k] for k in range(len(pend[r]))]
        assert all(len(s) == 1 and len(p) == 1 for s, p in zip(sums, pend))
        if len(g_v) == 1:
            g_v, g_f = g_v * A, g_f * A

        # ---- accumulate
        acc = [Signal(signed(self._acc_bits), name=f"acc{r}", reset_less=True) for r in range(R)]
        acc_next = [Signal(signed(self._acc_bits), name=f"acc{r}_next") for r in range(R)]
        for r in range(R):
            m.d.comb += acc_next[r].eq(Mux(g_f[grp(r)], 0, acc[r]) + sums[r][0] + pend[r][0])
            with m.If(g_v[grp(r)]):
                m.d.sync += acc[r].eq(acc_next[r])
        wr = Signal()
        D = self._result_depth
        width = R * self._acc_bits
        entries = [Signal(width, name=f"res{k}", reset_less=True) for k in range(D)]
        fill = Signal(range(D + 1))
        rd = Signal()
        m.d.comb += [rd.eq(self.o.valid & self.o.ready), self.o.valid.eq(fill != 0)]
        if self._ring:
            # ---- result buffer: a ring, written from the accumulators the cycle after the last tile
            m.d.sync += wr.eq(v & last)
            wptr = Signal(range(D))
            rptr = Signal(range(D))
            m.d.comb += self.o.payload.eq(Array(entries)[rptr] if D > 1 else entries[0])
            # the entries' write enables, registered one-hot per row group: the pointer a write in
            # the next cycle takes is wptr, or the one after it when a write happens in this cycle
            wnext = Signal.like(wptr)
            m.d.comb += wnext.eq(Mux(wr, Mux(wptr == D - 1, 0, wptr + 1), wptr))
            for j in range(A):
                rows = [r for r in range(R) if grp(r) == j]
                we = Signal(D, name=f"we_g{j}", reset_less=True, attrs=COPY)
                m.d.sync += we.eq(Mux(v & last, 1 << wnext, 0))
                lo, hi = rows[0] * self._acc_bits, (rows[-1] + 1) * self._acc_bits
                for k in range(D):
                    with m.If(we[k]):
                        m.d.sync += entries[k][lo:hi].eq(Cat(*(acc[r] for r in rows)))
            with m.If(wr):
                m.d.sync += wptr.eq(Mux(wptr == D - 1, 0, wptr + 1))
            with m.If(rd):
                m.d.sync += rptr.eq(Mux(rptr == D - 1, 0, rptr + 1))
        else:
            # ---- result buffer: result_depth entries, entry 0 drives o; shifts on read
            m.d.comb += [wr.eq(v & last), self.o.payload.eq(entries[0])]
            din = Cat(*acc_next)
            wpos = Signal(range(D + 1))
            m.d.comb += wpos.eq(fill - rd)
            for k in range(D):
                with m.If(wr & (wpos == k)):
                    m.d.sync += entries[k].eq(din)
                if k + 1 < D:
                    with m.Elif(rd):
                        m.d.sync += entries[k].eq(entries[k + 1])
        m.d.sync += fill.eq(fill + wr - rd)

        # ---- credits: row blocks accepted (by their last tile) and not yet read out
        credits = Signal(range(D + 1))
        m.d.comb += self.i.ready.eq(credits != D)
        m.d.sync += credits.eq(credits + (take & self.i.p.last) - rd)
        return m


class DecodingTAC(wiring.Component):
    """A :class:`~mmfree.hw.wdecode.WeightDecoder` joined to a :class:`TACArray`: packed words in, accumulators out.

    Parameters
    ----------
    rows, cols : int
        Tile shape.
    packing : {"b3", "2b"}
        Weight packing of the tile words (:mod:`mmfree.packing`).
    acc_bits : int
        Accumulator width (default 24).
    stage_levels, result_depth : int
        As for :class:`TACArray`.

    Members
    -------
    w : ``In(stream.Signature(word_bits))``
        Packed tile words, in the order of docs/architecture.md (the weight memory read stream).
    a : ``In(stream.Signature(code_layout(cols)))``
        Per tile: the ``cols`` codes of its column block, ``first`` and ``last``.
    o : ``Out(stream.Signature(tac_output_layout(rows, acc_bits)))``
        One beat of ``rows`` accumulators per row block.
    error : ``Out(1)``, error_clear : ``In(1)``
        The decoder's sticky invalid-code flag and its clear.

    Notes
    -----
    The ``n``-th word on ``w`` is paired with the ``n``-th beat on ``a``
    (a stream join after the decoder's register). ``latency`` is one more
    than the array's (5 for 16 x 16); the join sustains one tile per cycle.
    """

    def __init__(self, rows: int, cols: int, packing: str, acc_bits: int = ACC_BITS, *, stage_levels: int = 2,
                 result_depth: int = 2):
        # the parts are made in elaborate(); check their arguments here
        _check_tac_args(rows, cols, acc_bits, stage_levels, result_depth)
        check_decoder_args(rows * cols, packing)
        self._rows, self._cols, self._packing, self._acc_bits = rows, cols, packing, acc_bits
        self._stage_levels, self._result_depth = stage_levels, result_depth
        self._word_bits = word_bits(rows * cols, packing)
        super().__init__({
            "w": In(stream.Signature(self._word_bits)),
            "a": In(stream.Signature(code_layout(cols))),
            "o": Out(stream.Signature(tac_output_layout(rows, acc_bits))),
            "error": Out(1),
            "error_clear": In(1),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    packing = property(lambda self: self._packing)
    acc_bits = property(lambda self: self._acc_bits)
    result_depth = property(lambda self: self._result_depth)
    word_bits = property(lambda self: self._word_bits)

    @property
    def latency(self) -> int:
        return TACArray.latency_of(self._cols, self._stage_levels) + WeightDecoder.latency

    def elaborate(self, platform):
        m = Module()
        self._tac = TACArray(self._rows, self._cols, self._acc_bits, stage_levels=self._stage_levels,
                             result_depth=self._result_depth)
        self._dec = WeightDecoder(self._rows * self._cols, self._packing)
        m.submodules.dec = dec = self._dec
        m.submodules.tac = tac = self._tac
        wiring.connect(m, wiring.flipped(self.w), dec.i)
        wiring.connect(m, tac.o, wiring.flipped(self.o))
        m.d.comb += [
            self.error.eq(dec.error),
            dec.error_clear.eq(self.error_clear),
            tac.i.valid.eq(dec.o.valid & self.a.valid),
            dec.o.ready.eq(tac.i.ready & self.a.valid),
            self.a.ready.eq(tac.i.ready & dec.o.valid),
            tac.i.p.w.eq(dec.o.payload),
            tac.i.p.a.eq(self.a.p.a),
            tac.i.p.first.eq(self.a.p.first),
            tac.i.p.last.eq(self.a.p.last),
        ]
        return m


class PipelinedTAC(wiring.Component):
    """Packed tile words with their codes in, one tile per beat and no backpressure; accumulators out.

    The tile path of a :class:`~mmfree.hw.core.Core` whose tile streams run
    on a clock of their own (``matrix_domain``): every register is
    free-running (no clock enable, no ready), so the paths stay short next
    to the weight memory's many block RAMs.

    Parameters
    ----------
    rows, cols : int
        Tile shape.
    packing : {"b3", "2b"}
        Weight packing of the tile words (:mod:`mmfree.packing`).
    acc_bits : int
        Accumulator width (default 24).
    result_depth : int
        Row blocks the producer may have ended before their results are
        taken from ``o`` (default 3).
    a_copies : int
        Copies of the array's code register (:class:`TACArray`, default 1).

    Attributes
    ----------
    latency : int
        Cycles from a ``last`` beat on ``i`` to its result on ``o``:
        ``2 + TACArray.latency_of(cols, 1, ring=True)`` (9 for 16 x 16).

    Members
    -------
    i : ``In(stream.Signature(tile_layout(rows, cols, packing), always_ready=True))``
        One tile per beat: the packed word (as the weight memory holds it),
        the ``cols`` codes of its column block, ``first`` and ``last`` (as
        for :class:`TACArray`).
    o : ``Out(stream.Signature(tac_output_layout(rows, acc_bits)))``
        One beat of ``rows`` accumulators per row block.
    error : ``Out(1)``
        Sticky: set by an invalid code in an accepted word (as
        :class:`~mmfree.hw.wdecode.WeightDecoder`) and by a beat that finds
        the array without room (the producer broke the credit rule below).
        Cleared by ``error_clear``.
    error_clear : ``In(1)``

    Notes
    -----
    *Flow control is the producer's.* It issues tiles cycles before they
    arrive (block RAM reads), so it counts credits itself: it may send a
    beat only while fewer than ``result_depth`` row blocks that it has
    ended (sent their ``last`` beat) have not been taken from ``o``. Then
    the array always has room: its own credit check (:class:`TACArray`)
    counts the same blocks later.

    *Pipeline.* Input register -> the base-3 table lookups and addition ->
    register -> the digit fix-up -> the array's input register -> ternary
    select and one adder level per stage -> accumulate -> result ring
    (``TACArray(stage_levels=1, ring=True)``). Throughput: one tile per
    cycle.
    """

    def __init__(self, rows: int, cols: int, packing: str, acc_bits: int = ACC_BITS, *, result_depth: int = 3,
                 a_copies: int = 1):
        _check_tac_args(rows, cols, acc_bits, 1, result_depth)
        check_decoder_args(rows * cols, packing)
        _check_a_copies(a_copies, rows)
        self._a_copies = a_copies
        self._rows, self._cols, self._packing, self._acc_bits = rows, cols, packing, acc_bits
        self._result_depth = result_depth
        super().__init__({
            "i": In(stream.Signature(tile_layout(rows, cols, packing), always_ready=True)),
            "o": Out(stream.Signature(tac_output_layout(rows, acc_bits))),
            "error": Out(1),
            "error_clear": In(1),
        })

    rows = property(lambda self: self._rows)
    cols = property(lambda self: self._cols)
    packing = property(lambda self: self._packing)
    acc_bits = property(lambda self: self._acc_bits)
    result_depth = property(lambda self: self._result_depth)

    @property
    def latency(self) -> int:
        return 2 + TACArray.latency_of(self._cols, 1, ring=True)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tac = tac = TACArray(self._rows, self._cols, self._acc_bits, stage_levels=1,
                                          result_depth=self._result_depth, ring=True, a_copies=self._a_copies)
        wiring.connect(m, tac.o, wiring.flipped(self.o))

        def stage(value, name, reset_less=True):
            value = Value.cast(value)
            reg = Signal(len(value), name=name, reset_less=reset_less)
            m.d.sync += reg.eq(value)
            return reg

        # input register, then the decoder's first half and its register; the tags travel alongside
        p = self.i.payload
        # (data registers without reset; the tags with)
        v0, f0, l0 = (stage(x, n, False) for x, n in ((self.i.valid, "in_valid"), (p.first, "in_first"),
                                                     (p.last, "in_last")))
        w0, a0 = stage(p.w, "in_w"), stage(p.a, "in_a")
        trits, bad = decode_word(m, w0, self._rows * self._cols, self._packing, stage)
        v1, f1, l1 = stage(v0, "dec_valid", False), stage(f0, "dec_first", False), stage(l0, "dec_last", False)
        a1 = stage(a0, "dec_a")
        m.d.comb += [tac.i.valid.eq(v1), tac.i.p.w.eq(trits), tac.i.p.a.eq(a1),
                     tac.i.p.first.eq(f1), tac.i.p.last.eq(l1)]
        # a beat the array cannot take is an error, as is an invalid code (a cycle later: the OR of the
        # decoder's flags gets a register of its own)
        fault = Signal()
        m.d.sync += fault.eq((v1 & bad) | (v1 & ~tac.i.ready))
        with m.If(fault):
            m.d.sync += self.error.eq(1)
        with m.Elif(self.error_clear):
            m.d.sync += self.error.eq(0)
        return m
