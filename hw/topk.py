"""Streaming top-k of (id, accumulator) candidates: a sorted insertion register.

The LM head's accumulators leave the TAC array row block by row block; this
block keeps the ``k`` best so that the host receives ``k`` (token id,
accumulator) pairs instead of the whole logit vector.
:func:`mmfree.model.golden.topk` is the definition: descending accumulator,
ties to the lower id.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree.numerics import ACC_BITS

__all__ = ["TopK", "candidate_layout", "result_layout"]


def candidate_layout(id_bits: int, acc_bits: int = ACC_BITS) -> data.StructLayout:
    """One candidate: ``id`` (unsigned, bits ``[id_bits-1:0]``) then ``acc`` (signed, above it)."""
    return data.StructLayout({"id": unsigned(id_bits), "acc": signed(acc_bits)})


def result_layout(id_bits: int, acc_bits: int = ACC_BITS) -> data.StructLayout:
    """One result beat: ``id``, ``acc``, ``present`` (the slot holds a candidate), ``last`` (k-th beat)."""
    return data.StructLayout({"id": unsigned(id_bits), "acc": signed(acc_bits), "present": 1, "last": 1})


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


class TopK(wiring.Component):
    """Keep the ``k`` best of a stream of (id, acc) candidates, sorted.

    Parameters
    ----------
    k : int
        Results kept (>= 1).
    id_bits : int
        Width of a candidate id (>= 1), e.g. ``ceil(log2(vocab))``.
    acc_bits : int
        Width of a candidate's signed accumulator (>= 2; default 24).

    Members
    -------
    i : ``In(stream.Signature(candidate_layout(id_bits, acc_bits)))``
        Candidates, one per cycle. ``i.ready`` is low only during a readout.
    clear : ``In(1)``
        Empties the list (a new token). A candidate transferred in the same
        cycle is inserted into the emptied list. Also abandons a readout in
        progress (``o.valid`` drops without a transfer, like a reset).
    flush : ``In(1)``
        Starts a readout (ignored while one runs). A candidate transferred in
        the same cycle is included.
    o : ``Out(stream.Signature(result_layout(id_bits, acc_bits)))``
        The readout: exactly ``k`` beats, best first, ``last`` on the k-th.
        Slot ``j`` has ``present = 1`` iff more than ``j`` candidates arrived
        since the last ``clear``; absent slots carry ``id = acc = 0``.
        The list is kept, so a readout may be repeated.

    Notes
    -----
    Order: a candidate ranks above another if its ``acc`` is larger, or
    equal with a smaller ``id``. This is a total order on distinct ids, so
    the result is :func:`mmfree.model.golden.topk` whatever the arrival
    order (in id order, "ties keep the earlier" is the same rule).

    Each cycle every slot compares the candidate with its entry (one
    ``acc_bits`` and one ``id_bits`` comparator per slot) and takes the
    candidate, its upper neighbour or its own entry: one candidate per cycle,
    visible one cycle after its transfer. A readout starts the cycle after
    ``flush`` and offers one slot per cycle (``k`` cycles while ``o`` is
    ready). No multipliers; ``synth_ecp5`` of ``TopK(8, 16, 24)``: 928 LUT4
    + 154 CCU2C + 332 FFs, routed out of context at 102 MHz (the
    comparators and the slot enables are the critical path).

    To rank a TAC array's row blocks (``rows`` accumulators per beat), feed
    their rows one per cycle with ids counting up; a row block of ``T >=
    rows`` tiles leaves enough cycles to do so while the next one accumulates.
    """

    def __init__(self, k: int, id_bits: int, acc_bits: int = ACC_BITS):
        _check_int("k", k, 1)
        _check_int("id_bits", id_bits, 1)
        _check_int("acc_bits", acc_bits, 2)
        self._k, self._id_bits, self._acc_bits = k, id_bits, acc_bits
        super().__init__({
            "i": In(stream.Signature(candidate_layout(id_bits, acc_bits))),
            "clear": In(1),
            "flush": In(1),
            "o": Out(stream.Signature(result_layout(id_bits, acc_bits))),
        })

    k = property(lambda self: self._k)
    id_bits = property(lambda self: self._id_bits)
    acc_bits = property(lambda self: self._acc_bits)

    def elaborate(self, platform):
        m = Module()
        K = self._k
        ids = [Signal(self._id_bits, name=f"id{j}") for j in range(K)]
        accs = [Signal(signed(self._acc_bits), name=f"acc{j}") for j in range(K)]
        full = [Signal(name=f"full{j}") for j in range(K)]

        reading = Signal()
        idx = Signal(range(K))
        take = Signal()
        m.d.comb += [self.i.ready.eq(~reading), take.eq(self.i.valid & self.i.ready)]
        cid, cacc = self.i.p.id, self.i.p.acc

        # slot state as seen this cycle (a clear empties it before the insertion)
        occ = [Signal(name=f"occ{j}") for j in range(K)]
        better = [Signal(name=f"better{j}") for j in range(K)]
        for j in range(K):
            m.d.comb += [
                occ[j].eq(full[j] & ~self.clear),
                better[j].eq(~occ[j] | (cacc > accs[j]) | ((cacc == accs[j]) & (cid < ids[j]))),
            ]
        with m.If(take):
            for j in range(K):
                with m.If(better[j]):
                    if j == 0:
                        m.d.sync += [ids[j].eq(cid), accs[j].eq(cacc), full[j].eq(1)]
                    else:
                        with m.If(better[j - 1]):       # the candidate went above: shift down
                            m.d.sync += [ids[j].eq(ids[j - 1]), accs[j].eq(accs[j - 1]), full[j].eq(occ[j - 1])]
                        with m.Else():
                            m.d.sync += [ids[j].eq(cid), accs[j].eq(cacc), full[j].eq(1)]
                with m.Else():
                    m.d.sync += full[j].eq(occ[j])
        with m.Elif(self.clear):
            m.d.sync += [f.eq(0) for f in full]

        # readout
        a_id, a_acc, a_full = Array(ids), Array(accs), Array(full)
        m.d.comb += [
            self.o.valid.eq(reading),
            self.o.p.present.eq(a_full[idx]),
            self.o.p.last.eq(idx == K - 1),
        ]
        with m.If(a_full[idx]):
            m.d.comb += [self.o.p.id.eq(a_id[idx]), self.o.p.acc.eq(a_acc[idx])]
        with m.If(self.clear):
            m.d.sync += [reading.eq(0), idx.eq(0)]
        with m.Elif(reading):
            with m.If(self.o.ready):
                m.d.sync += idx.eq(idx + 1)
                with m.If(idx == K - 1):
                    m.d.sync += [reading.eq(0), idx.eq(0)]
        with m.Elif(self.flush):
            m.d.sync += [reading.eq(1), idx.eq(0)]
        return m
