# amaranth: UnusedElaboratable=no
"""The free-running tile path of a core with a matrix clock (:class:`~mmfree.hw.tac.PipelinedTAC`).

Runs in Amaranth's simulator: the producer keeps the credit rule of the
contract itself, as the core's tile issue does (the whole core runs it
under cocotb in tests/test_core_cocotb.py::test_core_matrix_clock).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from mmfree.hw.tac import PipelinedTAC, TACArray
from mmfree.numerics import ternary_matvec
from mmfree.packing import pack


def _word(trits: np.ndarray, packing: str) -> int:
    return int.from_bytes(pack(trits.astype(np.int8), packing).tobytes(), "little")


def _codes(a) -> int:
    return sum((int(v) & 0xff) << (8 * c) for c, v in enumerate(a))


def _set_tile(ctx, dut, word: int, a, first, last) -> None:
    """The whole payload at once (``tile_layout``: ``w``, ``a``, ``first``, ``last`` from bit 0 up)."""
    wb = len(dut.i.payload.w)
    ctx.set(dut.i.payload.as_value(), word | _codes(a) << wb | int(first) << (wb + 8 * dut.cols) |
            int(last) << (wb + 8 * dut.cols + 1))


def _results(value: int, rows: int, acc_bits: int) -> list[int]:
    out = []
    for r in range(rows):
        v = (value >> (acc_bits * r)) & ((1 << acc_bits) - 1)
        out.append(v - (1 << acc_bits) if v >> (acc_bits - 1) else v)
    return out


def _simulate(dut, blocks, *, p_valid, p_ready, seed, bad_word=None, ignore_credits=False, limit=20000):
    """Send ``blocks`` (lists of (trits, codes) tiles) under the credit rule; the results and the error flag."""
    rng = random.Random(seed)
    tiles = [(t, a, k == 0, k == len(b) - 1) for b in blocks for k, (t, a) in enumerate(b)]
    got, state = [], {"error": 0}

    async def bench(ctx):
        ended = taken = 0
        pos = 0
        for _ in range(limit):
            send = pos < len(tiles) and rng.random() < p_valid and (ignore_credits or ended - taken < dut.result_depth)
            if send:
                t, a, first, last = tiles[pos]
                word = bad_word if bad_word is not None and pos == len(tiles) // 2 else _word(t.reshape(-1), dut.packing)
                _set_tile(ctx, dut, word, a, first, last)
                pos += 1
                ended += last
            ctx.set(dut.i.valid, send)
            ready = rng.random() < p_ready
            ctx.set(dut.o.ready, ready)
            if ready and ctx.get(dut.o.valid):
                got.append(_results(ctx.get(dut.o.payload.as_value()), dut.rows, dut.acc_bits))
                taken += 1
            state["error"] |= ctx.get(dut.error)
            await ctx.tick()
            if pos == len(tiles) and len(got) == len(blocks):
                break
        for _ in range(4):
            state["error"] |= ctx.get(dut.error)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, state


def _random_blocks(rng: np.random.Generator, rows, cols, n_blocks, max_tiles):
    blocks = []
    for _ in range(n_blocks):
        nt = int(rng.integers(1, max_tiles + 1))
        blocks.append([(rng.integers(-1, 2, size=(rows, cols)), rng.integers(-128, 128, size=cols))
                       for _ in range(nt)])
    return blocks


def _expected(blocks):
    return [sum(ternary_matvec(t, a[None, :])[0] for t, a in b).tolist() for b in blocks]


@pytest.mark.parametrize("rows, cols, packing, p_valid, p_ready, a_copies", [
    (4, 5, "b3", 1.0, 1.0, 1),
    (4, 5, "b3", 0.7, 0.4, 1),
    (2, 7, "2b", 0.8, 0.6, 1),
    (5, 3, "b3", 0.9, 0.7, 3),            # copies serving 2, 2 and 1 rows
    (16, 16, "b3", 1.0, 0.8, 4),
])
def test_pipelined_tac_bit_exact(rows, cols, packing, p_valid, p_ready, a_copies):
    rng = np.random.default_rng(rows * 100 + cols)
    n_blocks = 12 if rows * cols > 100 else 40
    blocks = _random_blocks(rng, rows, cols, n_blocks, 6)
    blocks[0] = [(np.full((rows, cols), 1), np.full(cols, -128))] * 3          # the extremes
    blocks[1] = [(np.full((rows, cols), -1), np.full(cols, -128))]
    got, state = _simulate(PipelinedTAC(rows, cols, packing, a_copies=a_copies), blocks, p_valid=p_valid,
                           p_ready=p_ready, seed=1)
    assert got == _expected(blocks)
    assert state["error"] == 0


def test_pipelined_tac_latency_and_rate():
    dut = PipelinedTAC(16, 16, "b3")
    assert dut.latency == 2 + TACArray.latency_of(16, 1, ring=True) == 9
    rng = np.random.default_rng(5)
    blocks = _random_blocks(rng, 16, 16, 1, 1)
    tiles_sent = []

    async def bench(ctx):
        t, a = blocks[0][0]
        ctx.set(dut.o.ready, 1)
        _set_tile(ctx, dut, _word(t.reshape(-1), "b3"), a, 1, 1)
        ctx.set(dut.i.valid, 1)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        for cycle in range(1, 20):
            if ctx.get(dut.o.valid):
                tiles_sent.append(cycle)
                assert _results(ctx.get(dut.o.payload.as_value()), 16, dut.acc_bits) == _expected(blocks)[0]
                break
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert tiles_sent == [dut.latency]


def test_pipelined_tac_invalid_code_is_an_error():
    rng = np.random.default_rng(3)
    blocks = _random_blocks(rng, 4, 5, 6, 3)
    bad = 0xf3 << 8                                   # byte 1 above 242
    got, state = _simulate(PipelinedTAC(4, 5, "b3"), blocks, p_valid=1.0, p_ready=1.0, seed=2, bad_word=bad)
    assert state["error"] == 1


def test_pipelined_tac_overrun_is_an_error():
    """One-tile blocks against a stalled output, past the credit rule: the array cannot take them all."""
    rng = np.random.default_rng(4)
    blocks = _random_blocks(rng, 4, 5, 8, 1)
    got, state = _simulate(PipelinedTAC(4, 5, "b3", result_depth=2), blocks, p_valid=1.0, p_ready=0.02, seed=3,
                           ignore_credits=True, limit=400)
    assert state["error"] == 1


def test_pipelined_tac_error_clears():
    dut = PipelinedTAC(4, 5, "b3")
    seen = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        _set_tile(ctx, dut, 0xff, [0] * 5, 1, 1)
        ctx.set(dut.i.valid, 1)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(4)
        seen.append(ctx.get(dut.error))
        ctx.set(dut.error_clear, 1)
        await ctx.tick()
        ctx.set(dut.error_clear, 0)
        seen.append(ctx.get(dut.error))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [1, 0]


@pytest.mark.parametrize("kwargs, exc, msg", [
    ({"rows": 0}, ValueError, "rows must be at least 1, got 0"),
    ({"packing": "b4"}, ValueError, "packing must be one of 'b3', '2b', got 'b4'"),
    ({"result_depth": 0}, ValueError, "result_depth must be at least 1, got 0"),
    ({"acc_bits": 8}, ValueError, "acc_bits must be at least 13 to hold one tile's sum of 16 codes, got 8"),
    ({"a_copies": 0}, ValueError, "a_copies must be at least 1, got 0"),
    ({"a_copies": 17}, ValueError, "a_copies must be at most rows (16), got 17"),
    ({"a_copies": 2.0}, TypeError, "a_copies must be an integer, not 2.0"),
])
def test_pipelined_tac_constructor_errors(kwargs, exc, msg):
    args = {"rows": 16, "cols": 16, "packing": "b3"} | kwargs
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        PipelinedTAC(args.pop("rows"), args.pop("cols"), args.pop("packing"), **args)
