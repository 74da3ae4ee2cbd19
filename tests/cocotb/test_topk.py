"""cocotb tests of :class:`mmfree.hw.topk.TopK`: equal to :func:`mmfree.model.golden.topk`.

``cocotb_params()["units"]`` maps an instance prefix to ``{"k", "id_bits",
"acc_bits"}``; ports are ``<u>_i_*``, ``<u>_clear``, ``<u>_flush`` and
``<u>_o_payload_{id,acc,present,last}``.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from mmfree.model.golden import topk
from mmfree.sim.runner import cocotb_params

UNITS = cocotb_params()["units"]


async def start(dut) -> None:
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


class Unit:
    def __init__(self, dut, name):
        self.dut, self.name, self.u = dut, name, UNITS[name]
        g = lambda n: getattr(dut, f"{name}_{n}")          # noqa: E731
        self.i_valid, self.i_ready, self.i_id, self.i_acc = (g(n) for n in ("i_valid", "i_ready", "i_payload_id",
                                                                              "i_payload_acc"))
        self.clear, self.flush = g("clear"), g("flush")
        self.o_valid, self.o_ready = g("o_valid"), g("o_ready")
        self.o_id, self.o_acc, self.o_present, self.o_last = (g(f"o_payload_{n}") for n in
                                                              ("id", "acc", "present", "last"))

    async def feed(self, cands, *, p_valid=1.0, rng=None, clear_first=True, flush_with_last=False):
        """Offer ``cands`` [(id, acc)]; ``clear`` rides on the first cycle, ``flush`` after (or with) the last."""
        rng = rng or random.Random(0)
        k, pending_clear = 0, clear_first
        cycles = 0
        while k < len(cands) or pending_clear:
            await FallingEdge(self.dut.clk)
            offer = k < len(cands) and rng.random() < p_valid
            if offer:
                self.i_id.value, self.i_acc.value = cands[k][0], cands[k][1] & ((1 << len(self.i_acc)) - 1)
            self.i_valid.value = int(offer)
            self.clear.value = int(pending_clear)
            pending_clear = False
            self.flush.value = int(flush_with_last and offer and k == len(cands) - 1)
            await ReadOnly()
            if offer:
                assert self.i_ready.value, f"{self.name}: candidate refused outside a readout"
                k += 1
            cycles += 1
            assert cycles < 100 + 4 * len(cands) / p_valid
        await FallingEdge(self.dut.clk)
        self.i_valid.value = self.clear.value = 0
        if flush_with_last:
            self.flush.value = 0
        else:
            self.flush.value = 1
            await FallingEdge(self.dut.clk)
            self.flush.value = 0

    async def read(self, *, p_ready=1.0, rng=None):
        """Read one readout: k beats [(id, acc, present)]; checks ``last`` and that ``i.ready`` is low."""
        rng = rng or random.Random(0)
        out, cycles = [], 0
        while True:
            take = rng.random() < p_ready
            self.o_ready.value = int(take)
            await ReadOnly()
            cycles += 1
            assert cycles < 50 + 20 * self.u["k"] / p_ready, f"{self.name}: readout stalled"
            if self.o_valid.value:
                assert not self.i_ready.value, f"{self.name}: i.ready high during a readout"
                if take:
                    beat = (self.o_id.value.to_unsigned(), self.o_acc.value.to_signed(), int(self.o_present.value))
                    out.append(beat)
                    last = int(self.o_last.value)
                    assert last == (len(out) == self.u["k"]), f"{self.name}: last on beat {len(out)}"
                    if last:
                        break
            await FallingEdge(self.dut.clk)
        await FallingEdge(self.dut.clk)
        self.o_ready.value = 0
        await ReadOnly()
        assert not self.o_valid.value and self.i_ready.value
        await FallingEdge(self.dut.clk)
        return out

    def check(self, out, accs, what=""):
        """``out`` against golden.topk of ``accs`` (indexed by id)."""
        k = self.u["k"]
        accs = np.asarray(accs, dtype=np.int64)
        assert len(out) == k
        present = [(i, a) for i, a, p in out if p]
        assert all(p == 0 and i == 0 and a == 0 for i, a, p in out[len(present):]), f"{self.name}: absent slots"
        assert len(present) == min(k, len(accs)), f"{self.name}{what}: {len(present)} present of {len(accs)}"
        if len(accs):
            gi, ga = topk(accs[None, :], k)
            exp = list(zip(gi[0].tolist(), ga[0].tolist()))
            assert present == exp, f"{self.name}{what}: got {present}, expected {exp}"


def random_accs(rng, u, n, mode):
    hi = 1 << (u["acc_bits"] - 1)
    if mode == "ties":
        return rng.integers(-3, 4, size=n)
    if mode == "edges":
        return rng.choice(np.array([-hi, -hi + 1, -1, 0, 1, hi - 2, hi - 1]), size=n)
    return rng.integers(-hi, hi, size=n)


@cocotb.test()
async def test_in_order(dut):
    """Ids 0..n-1 in order (the LM head), random / tied / extreme accumulators, gaps and backpressure."""
    await start(dut)
    rng = np.random.default_rng(0)
    for name, u in UNITS.items():
        unit = Unit(dut, name)
        nmax = min(1 << u["id_bits"], 300)
        for trial in range(8):
            n = int(rng.integers(1, nmax + 1)) if trial else nmax
            accs = random_accs(rng, u, n, ("wide", "ties", "edges")[trial % 3])
            r = random.Random(trial)
            await unit.feed([(i, int(a)) for i, a in enumerate(accs)], p_valid=(1.0, 0.6)[trial % 2], rng=r)
            unit.check(await unit.read(p_ready=(1.0, 0.5, 0.3)[trial % 3], rng=r), accs, what=f" trial {trial}")


@cocotb.test()
async def test_any_order(dut):
    """Ids in random order (a total order on (acc, -id): the result does not depend on arrival)."""
    await start(dut)
    rng = np.random.default_rng(1)
    for name, u in UNITS.items():
        unit = Unit(dut, name)
        nmax = min(1 << u["id_bits"], 200)
        for trial in range(6):
            n = int(rng.integers(1, nmax + 1))
            accs = random_accs(rng, u, n, ("ties", "wide", "edges")[trial % 3])
            order = rng.permutation(n)
            await unit.feed([(int(i), int(accs[i])) for i in order], p_valid=0.8, rng=random.Random(trial))
            unit.check(await unit.read(), accs, what=f" shuffled trial {trial}")


@cocotb.test()
async def test_few_candidates_and_repeat(dut):
    """Fewer candidates than k: absent slots; a readout can be repeated; none at all: k absent beats."""
    await start(dut)
    rng = np.random.default_rng(2)
    for name, u in UNITS.items():
        unit = Unit(dut, name)
        for n in sorted({0, 1, max(u["k"] - 1, 0), u["k"]}):
            accs = random_accs(rng, u, n, "ties")
            await unit.feed([(i, int(a)) for i, a in enumerate(accs)])
            first = await unit.read()
            unit.check(first, accs, what=f" n={n}")
            # a second flush reads the same list
            await FallingEdge(dut.clk)
            unit.flush.value = 1
            await FallingEdge(dut.clk)
            unit.flush.value = 0
            assert await unit.read(p_ready=0.5, rng=random.Random(n)) == first


@cocotb.test()
async def test_clear_and_flush_same_cycle(dut):
    """A candidate with ``clear`` lands in the emptied list; one with ``flush`` is part of the readout."""
    await start(dut)
    rng = np.random.default_rng(3)
    for name, u in UNITS.items():
        unit = Unit(dut, name)
        # fill with big values, then a new token whose first candidate rides on clear
        ids = 1 << u["id_bits"]
        big = [(i, (1 << (u["acc_bits"] - 1)) - 1) for i in range(min(u["k"] + 2, ids))]
        await unit.feed(big)
        await unit.read()
        n = min(2 * u["k"] + 3, ids)
        accs = random_accs(rng, u, n, "wide")
        accs[-1] = (1 << (u["acc_bits"] - 1)) - 1          # the last one, sent with flush, is the best
        await unit.feed([(i, int(a)) for i, a in enumerate(accs)], clear_first=True, flush_with_last=True)
        out = await unit.read()
        unit.check(out, accs, what=" clear/flush same cycle")
        assert out[0][0] == n - 1 or accs[out[0][0]] == accs[-1]
