"""The serial core's matrix engine: one row block of 5 x 4 ternary tiles per ``MATRIX``.

The serial core's firmware (:mod:`mmfree.firmware`) configures the engine
once per LINEAR (``MCFG``: wmem pointer and geometry) and starts it once
per row block (``MATRIX``). For each segment ``s < nseg`` the engine
streams ``ncb`` tile words from the weight memory, from the pointer on (the
pointer advances across row blocks), and the qbuf words ``0 .. ncb-1`` of
slot ``slots[s]``; each tile adds, subtracts or skips its 4 activation
codes into 5 row accumulators (``acc[r] += sum_c T[r, c] q[c]``, trit
``(r, c)`` at index ``4 r + c`` of the base-3 word, :mod:`mmfree.packing`).
At the end of a segment its 5 accumulators are written, sign-extended, to
``vmem[abuf + 5 s + r]``. :class:`mmfree.model.serial.SerialMachine` is the
reference (``_matrix``).

Contract
--------
* Throughput: one tile per cycle. Latency: a row block of ``nseg * ncb``
  tiles takes ``nseg * ncb + 8`` cycles from ``start`` to ``busy`` low,
  plus a stall before the last tile of a segment while the previous
  segment's 5 words are still being written (segments shorter than 5 tiles).
* Accumulators are 17 bits: ``|acc| <= 127 * 4 * ncb <= 127 * 256`` for the
  serial core's inputs of at most 256 (``ncb <= 64``).
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
        ptr = Signal(15)
        ncb = Signal(7)
        nseg = Signal(2)
        slots = Signal(6)
        with m.If(self.cfg_valid):
            m.d.sync += [ptr.eq(self.cfg_waddr), ncb.eq(self.cfg_geom[:7]), nseg.eq(self.cfg_geom[8:10]),
                         slots.eq(self.cfg_geom[12:18])]

        # issue stage: one tile word and one qbuf word per cycle
        run = Signal()
        seg = Signal(2)
        cb = Signal(7)
        last_cb = Signal()
        m.d.comb += last_cb.eq(cb == ncb - 1)
        slot = Signal(2)
        m.d.comb += slot.eq(Mux(seg == 0, slots[0:2], Mux(seg == 1, slots[2:4], slots[4:6])))
        drain_left = Signal(3)
        stall = Signal()
        m.d.comb += stall.eq(last_cb & (drain_left != 0))
        issue = Signal()
        m.d.comb += [issue.eq(run & ~stall),
                     self.w_addr.eq(ptr), self.w_re.eq(issue),
                     self.q_addr.eq(Cat(cb[:6], slot))]
        with m.If(self.start):
            m.d.sync += [run.eq(1), seg.eq(0), cb.eq(0)]
        with m.If(issue):
            m.d.sync += ptr.eq(ptr + 1)
            with m.If(last_cb):
                m.d.sync += [cb.eq(0), seg.eq(seg + 1)]
                with m.If(seg == nseg - 1):
                    m.d.sync += run.eq(0)
            with m.Else():
                m.d.sync += cb.eq(cb + 1)

        # stage 1: words arrive; decode and row sums, registered
        v1, end1, seg1 = Signal(), Signal(), Signal(2)
        m.d.sync += [v1.eq(issue), end1.eq(issue & last_cb), seg1.eq(seg)]
        trits, bad = [], Signal()
        bads = []
        for b in range(4):
            t, bb = _decode_b3_byte(m, self.w_data[8 * b:8 * b + 8], f"dec{b}")
            trits.append(t)
            bads.append(bb)
        tw = Cat(*trits)                                        # trit i in bits [2i+1:2i]: nz, ng
        m.d.comb += bad.eq(v1 & Cat(*bads).any())
        codes = [self.q_data[8 * c:8 * c + 8] for c in range(COLS)]
        psum = [Signal(signed(11), name=f"psum{r}") for r in range(ROWS)]
        v2, end2, seg2 = Signal(), Signal(), Signal(2)
        m.d.sync += [v2.eq(v1), end2.eq(end1), seg2.eq(seg1)]
        for r in range(ROWS):
            # -q = ~q + 1: each term is (q ^ neg) & nz, and the +1s of the negated terms add up separately
            terms, ones = [], []
            for c in range(COLS):
                i = COLS * r + c
                nz, ng = tw[2 * i], tw[2 * i + 1]
                terms.append(((codes[c] ^ ng.replicate(8)) & nz.replicate(8)).as_signed())
                ones.append(nz & ng)
            m.d.sync += psum[r].eq((terms[0] + terms[1]) + (terms[2] + terms[3]) + sum(ones[1:], ones[0]))
        with m.If(bad):
            m.d.sync += self.error.eq(1)
        with m.If(self.error_clear):
            m.d.sync += self.error.eq(0)

        # stage 2: accumulate; a segment's end moves the sums to the output shift register
        acc = [Signal(signed(ACC_BITS), name=f"acc{r}") for r in range(ROWS)]
        outs = [Signal(signed(ACC_BITS), name=f"out{r}") for r in range(ROWS)]
        vaddr = Signal(len(self.v_addr))
        with m.If(v2):
            for r in range(ROWS):
                total = Signal(signed(ACC_BITS), name=f"total{r}")
                m.d.comb += total.eq(acc[r] + psum[r])
                m.d.sync += acc[r].eq(Mux(end2, 0, total))
                with m.If(end2):
                    m.d.sync += outs[r].eq(total)
            with m.If(end2):
                m.d.sync += [drain_left.eq(ROWS), vaddr.eq(self.abuf + ROWS * seg2)]
        # drain: one word per cycle into vmem
        m.d.comb += [self.v_addr.eq(vaddr), self.v_data.eq(outs[0]), self.v_we.eq(drain_left != 0)]
        with m.If(drain_left != 0):
            m.d.sync += [drain_left.eq(drain_left - 1), vaddr.eq(vaddr + 1)]
            for r in range(ROWS - 1):
                m.d.sync += outs[r].eq(outs[r + 1])
        m.d.comb += self.busy.eq(run | v1 | v2 | (drain_left != 0))
        return m
