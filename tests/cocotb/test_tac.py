"""cocotb tests of :mod:`mmfree.hw.tac`: bit-exact with :func:`mmfree.numerics.ternary_matvec`.

Several designs share one Verilator build (``run_cocotb`` with a mapping);
``cocotb_params()["units"]`` names them and gives their parameters:
``kind`` ``"tac"`` (:class:`TACArray`, ports ``<u>_i_*``, ``<u>_o_*``) or
``"dec"`` (:class:`DecodingTAC`, ports ``<u>_w_*``, ``<u>_a_*``, ``<u>_o_*``),
``rows``, ``cols``, ``acc_bits``, ``latency``, ``depth`` and ``packing``.

Tiles are cut with :func:`mmfree.packing.tile_stream` in the order of
docs/architecture.md and packed with :func:`mmfree.packing.pack_tiles`.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from mmfree import packing
from mmfree.numerics import ternary_matvec
from mmfree.sim.runner import cocotb_params

UNITS = cocotb_params()["units"]
TRIALS = cocotb_params().get("trials", 8)


# --------------------------------------------------------------------------
# stream drivers: inputs change after the falling edge, the handshake is read at ReadOnly


async def start(dut) -> None:
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


def _set(handle, value: int) -> None:
    handle.value = int(value) & ((1 << len(handle)) - 1)


def _word(values, bits: int) -> int:
    w = 0
    for k, v in enumerate(values):
        w |= (int(v) & ((1 << bits) - 1)) << (k * bits)
    return w


def _split(word: int, bits: int, n: int) -> list[int]:
    out = []
    for k in range(n):
        v = (word >> (k * bits)) & ((1 << bits) - 1)
        out.append(v - (1 << bits) if v >> (bits - 1) else v)
    return out


class Source:
    """Offers ``items`` (dicts of port suffix -> int) on ``<base>_valid``; an offer holds until taken."""

    def __init__(self, dut, base: str, items, p_valid: float, rng: random.Random):
        self.dut, self.base, self.items, self.p, self.rng = dut, base, list(items), p_valid, rng
        self.valid = getattr(dut, f"{base}_valid")
        self.ready = getattr(dut, f"{base}_ready")
        self.k, self.offered, self.taken_at = 0, False, []

    def drive(self):
        if not self.offered and self.k < len(self.items) and self.rng.random() < self.p:
            for name, v in self.items[self.k].items():
                _set(getattr(self.dut, f"{self.base}_{name}"), v)
            self.offered = True
        self.valid.value = int(self.offered)

    def sample(self, cycle):
        if self.offered and self.ready.value:
            self.taken_at.append(cycle)
            self.k += 1
            self.offered = False

    @property
    def done(self):
        return self.k == len(self.items)


class Sink:
    """Takes beats from ``<base>_valid/_payload`` with probability ``p_ready`` per cycle.

    Checks the stream contract on the way: an offered beat stays offered,
    with the same payload, until it is taken.
    """

    def __init__(self, dut, base: str, p_ready, rng: random.Random):
        self.valid = getattr(dut, f"{base}_valid")
        self.ready = getattr(dut, f"{base}_ready")
        self.payload = getattr(dut, f"{base}_payload")
        self.p, self.rng = p_ready, rng
        self.got, self.got_at, self.pending = [], [], None
        self.base = base

    def drive(self, cycle):
        p = self.p(cycle) if callable(self.p) else self.p
        self.take = self.rng.random() < p
        self.ready.value = int(self.take)

    def sample(self, cycle):
        if self.valid.value:
            value = self.payload.value.to_unsigned()
            if self.pending is not None:
                assert value == self.pending, f"{self.base}: payload changed while waiting ({cycle})"
            if self.take:
                self.got.append(value)
                self.got_at.append(cycle)
                self.pending = None
            else:
                self.pending = value
        else:
            assert self.pending is None, f"{self.base}: valid dropped before the transfer ({cycle})"


async def run(dut, sources, sink, n_out: int, limit: int, watch=None) -> int:
    """Clock the sources and the sink until ``n_out`` beats arrived; returns the cycle count."""
    cycle = 0
    try:
        while len(sink.got) < n_out:
            await FallingEdge(dut.clk)
            for s in sources:
                s.drive()
            sink.drive(cycle)
            await ReadOnly()
            if watch is not None:
                watch(cycle)
            for s in sources:
                s.sample(cycle)
            sink.sample(cycle)
            cycle += 1
            assert cycle < limit, f"{sink.base}: {len(sink.got)} of {n_out} results after {cycle} cycles"
    finally:
        await FallingEdge(dut.clk)
        for s in sources:
            s.valid.value = 0
        sink.ready.value = 0
    assert all(s.done for s in sources), "inputs left over"
    # nothing more may come out
    for _ in range(3):
        await ReadOnly()
        assert not sink.valid.value, f"{sink.base}: unexpected extra result"
        await FallingEdge(dut.clk)
    return cycle


# --------------------------------------------------------------------------
# a LINEAR: segments, codes -> beats and the expected accumulators


def linear(unit: str, segments, q):
    """Beats for unit ``unit`` and the expected result beats (``rows`` accumulators each)."""
    u = UNITS[unit]
    R, C = u["rows"], u["cols"]
    n = segments[0].shape[1]
    T = -(-n // C)
    tiles = packing.tile_stream(segments, R, C)
    qp = np.zeros(T * C, dtype=np.int64)
    qp[:n] = q
    ctrl = []
    for i in range(len(tiles)):
        cb = i % T
        ctrl.append({"a": _word(qp[cb * C:(cb + 1) * C], 8), "first": int(cb == 0), "last": int(cb == T - 1)})
    expect = []
    rows = segments[0].shape[0]
    nrb = -(-rows // R)
    accs = [np.zeros(nrb * R, dtype=np.int64) for _ in segments]
    for s, seg in enumerate(segments):
        accs[s][:rows] = ternary_matvec(seg, q[None, :])[0]
    half = 1 << (u["acc_bits"] - 1)        # the accumulators wrap modulo 2^acc_bits
    for rb in range(nrb):
        for s in range(len(segments)):
            expect.append([(int(x) + half) % (2 * half) - half for x in accs[s][rb * R:(rb + 1) * R]])
    if u["kind"] == "tac":
        words = packing.pack_tiles(tiles, "2b")           # the array's trit layout is the 2b code
        beats = [{"payload_w": int.from_bytes(w.tobytes(), "little"), **{f"payload_{k}": v for k, v in c.items()}}
                 for w, c in zip(words, ctrl)]
        return {"i": beats}, expect
    words = packing.pack_tiles(tiles, u["packing"])
    w = [{"payload": int.from_bytes(x.tobytes(), "little")} for x in words]
    a = [{f"payload_{k}": v for k, v in c.items()} for c in ctrl]
    return {"w": w, "a": a}, expect


async def check_linear(dut, unit, segments, q, *, p_valid=1.0, p_ready=1.0, seed=0, code10=False):
    """Stream one LINEAR through ``unit`` and compare every row block; returns (sources, sink, cycles)."""
    u = UNITS[unit]
    rng = random.Random(seed)
    streams, expect = linear(unit, segments, q)
    if code10:          # turn some 00 (zero) trit codes into the invalid 10: the array must skip them
        for beat in streams["i"]:
            w = beat["payload_w"]
            for k in range(u["rows"] * u["cols"]):
                if (w >> (2 * k)) & 3 == 0 and rng.random() < 0.5:
                    w |= 2 << (2 * k)
            beat["payload_w"] = w
    sources = [Source(dut, f"{unit}_{name}", items, p_valid, rng) for name, items in streams.items()]
    sink = Sink(dut, f"{unit}_o", p_ready, rng)
    ntiles = len(next(iter(streams.values())))
    limit = 500 + int(8 * ntiles / min(p_valid, 0.05 if callable(p_ready) else p_ready))
    cycles = await run(dut, sources, sink, len(expect), limit)
    got = [_split(x, u["acc_bits"], u["rows"]) for x in sink.got]
    for b, (g, e) in enumerate(zip(got, expect)):
        assert g == e, f"{unit}: row block {b} of {len(expect)}: got {g}, expected {e}"
    if u["kind"] == "dec":
        assert not getattr(dut, f"{unit}_error").value, f"{unit}: decoder error on valid words"
    return sources, sink, cycles


def random_linear(rng, rows, n, nseg=1, p_zero=1 / 3):
    segs = []
    for _ in range(nseg):
        t = rng.integers(-1, 2, size=(rows, n))
        t[rng.random((rows, n)) < p_zero] = 0
        segs.append(t.astype(np.int8))
    return segs, rng.integers(-128, 128, size=n)


# --------------------------------------------------------------------------


@cocotb.test()
async def test_latency_throughput(dut):
    """Documented latency; one tile per cycle for blocks of >= ceil(latency / (depth - 1)) tiles."""
    await start(dut)
    rng = np.random.default_rng(1)
    for unit, u in UNITS.items():
        R, C, lat, depth = u["rows"], u["cols"], u["latency"], u["depth"]
        # one one-tile block: latency from the transfer of its (last) tile to the offer of its result
        segs, q = random_linear(rng, R, C)
        sources, sink, _ = await check_linear(dut, unit, segs, q)
        assert sink.got_at[0] - sources[0].taken_at[-1] == lat, \
            f"{unit}: latency {sink.got_at[0] - sources[0].taken_at[-1]}, documented {lat}"
        if depth < 2:
            continue
        T = -(-lat // (depth - 1))
        segs, q = random_linear(rng, 4 * R, T * C, nseg=2)
        sources, sink, _ = await check_linear(dut, unit, segs, q)
        for s in sources:
            t0 = s.taken_at[0]
            assert t0 <= 1 and s.taken_at == list(range(t0, t0 + len(s.items))), \
                f"{unit}: tiles not accepted every cycle ({T}-tile blocks)"
        assert sink.got_at[-1] == sources[0].taken_at[-1] + lat, f"{unit}: results late"


@cocotb.test()
async def test_extremes(dut):
    """All +1 / all -1 weights with all -128 / all 127 codes over long rows (n up to 2048)."""
    await start(dut)
    for unit, u in UNITS.items():
        R, C = u["rows"], u["cols"]
        for n in sorted({C, 512 + C // 2, 2048 if R * C >= 64 else 600}):
            for wv, qv in ((1, -128), (1, 127), (-1, -128), (-1, 127)):
                t = np.full((R, n), wv, dtype=np.int8)
                t[R // 2:] = -wv                          # the lower half with the opposite sign
                await check_linear(dut, unit, [t], np.full(n, qv))
        # alternating patterns and a ragged last column block
        n = 3 * C + 1
        t = np.where((np.arange(R)[:, None] + np.arange(n)[None, :]) % 3 == 0, -1, 1).astype(np.int8)
        q = np.where(np.arange(n) % 2, -128, 127)
        await check_linear(dut, unit, [t], q)


@cocotb.test()
async def test_random_backpressure(dut):
    """Random matrices, 1-3 segments, gaps on the inputs and random backpressure on the output."""
    await start(dut)
    rng = np.random.default_rng(7)
    for unit, u in UNITS.items():
        R, C = u["rows"], u["cols"]
        big = R * C >= 64
        rates = [(1.0, 1.0), (0.7, 1.0), (1.0, 0.3), (0.5, 0.5), (0.9, 0.05)]
        for trial in range(TRIALS):
            pv, pr = rates[trial % len(rates)]
            n = int(rng.integers(512, 1100)) if big and trial % 4 < 2 else int(rng.integers(1, 6 * C))
            rows = int(rng.integers(1, 3 * R + 1))
            segs, q = random_linear(rng, rows, n, nseg=int(rng.integers(1, 4)), p_zero=float(rng.random()))
            await check_linear(dut, unit, segs, q, p_valid=pv, p_ready=pr, seed=trial,
                               code10=(u["kind"] == "tac" and trial % 2 == 1))


@cocotb.test()
async def test_stall(dut):
    """A stalled output: the array takes tiles until ``depth`` results wait, loses nothing."""
    await start(dut)
    rng = np.random.default_rng(3)
    for unit, u in UNITS.items():
        R, C, lat, depth = u["rows"], u["cols"], u["latency"], u["depth"]
        nblocks = depth + 3
        segs, q = random_linear(rng, nblocks * R, C)             # one-tile blocks
        stall = 4 * (lat + depth) + 10
        _, sink, _ = await check_linear(dut, unit, segs, q, p_ready=lambda c: 0.0 if c < stall else 1.0)
        assert sink.got_at[0] == stall


@cocotb.test()
async def test_stall_counts(dut):
    """While the output is stalled exactly ``depth`` row blocks are taken in."""
    await start(dut)
    rng = np.random.default_rng(4)
    for unit, u in UNITS.items():
        R, C, depth = u["rows"], u["cols"], u["depth"]
        segs, q = random_linear(rng, (depth + 2) * R, 2 * C)        # two-tile blocks
        stall = 60
        streams, expect = linear(unit, segs, q)
        r = random.Random(0)
        sources = [Source(dut, f"{unit}_{name}", items, 1.0, r) for name, items in streams.items()]
        sink = Sink(dut, f"{unit}_o", lambda c: 0.0 if c < stall else 1.0, r)
        taken_before = []

        def watch2(cycle):
            if cycle == stall - 1:
                taken_before.append(sources[-1].k)       # the control stream ("a" of a DecodingTAC)

        await run(dut, sources, sink, len(expect), 1000, watch=watch2)
        assert taken_before == [2 * depth], f"{unit}: took {taken_before} tiles during the stall, expected {2 * depth}"
        got = [_split(x, u["acc_bits"], R) for x in sink.got]
        assert got == expect
