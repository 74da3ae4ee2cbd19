"""The serial core's matrix engine: one row block of 5 x 4 ternary tiles per ``MATRIX``.

The serial core's firmware (:mod:`mmfree.firmware`) configures the engine
once per LINEAR (``MCFG``: wmem pointer and geometry) and starts it once
per row block (``MATRIX``). A row block is, per segment ``s < nseg``,
``ncb`` tile words from the wmem pointer on (the pointer advances across
row blocks) against the qbuf words ``0 .. ncb-1`` of slot ``slots[s]``;
row ``r`` of the result is ``acc = sum over tiles of sum_c T[r, c] q[c]``
(add, subtract or skip; trit ``(r, c)`` at index ``4 r + c`` of the base-3
word, :mod:`mmfree.packing`), written sign-extended to
``vmem[abuf + 5 s + r]``. :class:`mmfree.model.serial.SerialMachine` is the
reference (``_matrix``).

The engine computes one row of one tile per cycle: for each segment and
row it streams the segment's ``ncb`` tiles (the weight memory is read five
times; its bandwidth is otherwise idle while the CPU waits), so it needs
one 4-term sum and one accumulator instead of five of each: about a third
of the LUTs of a tile-per-cycle engine on the UP5K, for 4 x 22,880 more
cycles per token of the ``ice40`` model.

Contract
--------
* Throughput: one tile row per cycle. A row block of ``nseg * ncb`` tiles
  takes ``5 * nseg * ncb + 3`` cycles from ``start`` to ``busy`` low.
* The accumulator is 17 bits: ``|acc| <= 127 * 4 * ncb <= 127 * 256`` for
  the serial core's inputs of at most 256 (``ncb <= 64``).
* Memory ports: ``w_*`` reads the weight memory (SPRAM, read latency 1),
  ``q_*`` reads qbuf (32-bit words of 4 codes, latency 1), ``v_*`` writes
  vmem; the engine owns them while ``busy``.
* ``error`` is sticky (an invalid base-3 byte, above 242) until
  ``error_clear``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .wdecode import _decode_b3_byte

__all__ = ["MatrixEngine", "ROWS", "COLS", "ACC_BITS"]

ROWS, COLS = 5, 4
ACC_BITS = 17


class MatrixEngine(wiring.Component):
    """One row block of 5 x 4 tiles per ``start`` (see the module docstring).

    Parameters
    ----------
    abuf : int
        vmem word of segment 0, row 0's accumulator.
    vmem_bits : int
        vmem address width.
    """

    def __init__(self, abuf: int, vmem_bits: int = 10):
        if not isinstance(abuf, int) or not 0 <= abuf <= (1 << vmem_bits) - 3 * ROWS:
            raise ValueError(f"abuf must leave 15 words in a {1 << vmem_bits}-word vmem, got {abuf!r}")
        self.abuf = abuf
        super().__init__({
            "cfg_valid": In(1), "cfg_waddr": In(15), "cfg_geom": In(18),
            "start": In(1), "busy": Out(1),
            "error": Out(1), "error_clear": In(1),
            "w_addr": Out(15), "w_re": Out(1), "w_data": In(32),
            "q_addr": Out(8), "q_data": In(32),
            "v_addr": Out(vmem_bits), "v_data": Out(32), "v_we": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        base = Signal(15)                       # first tile of the current segment
        ncb = Signal(7)
        nseg = Signal(2)
        slots = Signal(6)
        with m.If(self.cfg_valid):
            m.d.sync += [base.eq(self.cfg_waddr), ncb.eq(self.cfg_geom[:7]), nseg.eq(self.cfg_geom[8:10]),
                         slots.eq(self.cfg_geom[12:18])]

        # issue: for each segment, for each row, the segment's tiles
        run = Signal()
        ptr = Signal(15)
        seg = Signal(2)
        row = Signal(3)
        cb = Signal(7)
        last_cb = Signal()
        m.d.comb += last_cb.eq(cb == ncb - 1)
        slot = Signal(2)
        m.d.comb += slot.eq(Mux(seg == 0, slots[0:2], Mux(seg == 1, slots[2:4], slots[4:6])))
        m.d.comb += [self.w_addr.eq(ptr), self.w_re.eq(run), self.q_addr.eq(Cat(cb[:6], slot))]
        with m.If(self.start):
            m.d.sync += [run.eq(1), seg.eq(0), row.eq(0), cb.eq(0), ptr.eq(base)]
        with m.If(run):
            m.d.sync += [cb.eq(cb + 1), ptr.eq(ptr + 1)]
            with m.If(last_cb):
                m.d.sync += cb.eq(0)
                with m.If(row == ROWS - 1):     # the segment is done: the next one's tiles follow
                    m.d.sync += [row.eq(0), seg.eq(seg + 1), base.eq(ptr + 1)]
                    with m.If(seg == nseg - 1):
                        m.d.sync += run.eq(0)
                with m.Else():                  # the same tiles again for the next row
                    m.d.sync += [row.eq(row + 1), ptr.eq(base)]

        # stage 1: the words arrive; decode, pick the row's 4 trits, sum, registered
        v1, end1, row1, seg1 = Signal(), Signal(), Signal(3), Signal(2)
        m.d.sync += [v1.eq(run), end1.eq(run & last_cb), row1.eq(row), seg1.eq(seg)]
        trits, bads = [], []
        for b in range(4):
            t, bb = _decode_b3_byte(m, self.w_data[8 * b:8 * b + 8], f"dec{b}")
            trits.append(t)
            bads.append(bb)
        tw = Cat(*trits)                        # trit i in bits [2i+1:2i]: nz, ng
        rt = Signal(8)
        with m.Switch(row1):
            for r in range(ROWS):
                with m.Case(r):
                    m.d.comb += rt.eq(tw[8 * r:8 * r + 8])
        with m.If(v1 & Cat(*bads).any()):
            m.d.sync += self.error.eq(1)
        with m.If(self.error_clear):
            m.d.sync += self.error.eq(0)
        codes = [self.q_data[8 * c:8 * c + 8] for c in range(COLS)]
        terms, ones = [], []
        for c in range(COLS):                   # -q = ~q + 1: (q ^ neg) & nz, the +1s added apart
            nz, ng = rt[2 * c], rt[2 * c + 1]
            terms.append(((codes[c] ^ ng.replicate(8)) & nz.replicate(8)).as_signed())
            ones.append(nz & ng)
        psum = Signal(signed(11))
        v2, end2, idx2 = Signal(), Signal(), Signal(4)
        m.d.sync += [psum.eq((terms[0] + terms[1]) + (terms[2] + terms[3]) + sum(ones[1:], ones[0])),
                     v2.eq(v1), end2.eq(end1), idx2.eq(seg1 * ROWS + row1)]

        # stage 2: accumulate; a row's last tile writes its sum to vmem
        acc = Signal(signed(ACC_BITS))
        total = Signal(signed(ACC_BITS))
        m.d.comb += total.eq(acc + psum)
        with m.If(v2):
            m.d.sync += acc.eq(Mux(end2, 0, total))
        m.d.comb += [self.v_addr.eq(self.abuf + idx2), self.v_data.eq(total), self.v_we.eq(v2 & end2)]
        m.d.comb += self.busy.eq(run | v1 | v2)
        return m
