"""cocotb tests of :class:`mmfree.hw.wdecode.WeightDecoder`: the inverse of :mod:`mmfree.packing`.

``cocotb_params()["units"]`` maps an instance prefix to ``{"lanes", "packing"}``;
ports are ``<u>_i_*``, ``<u>_o_*``, ``<u>_error`` and ``<u>_error_clear``.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from mmfree import packing
from mmfree.sim.runner import cocotb_params

UNITS = cocotb_params()["units"]


async def start(dut) -> None:
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


def trits_of(word: int, lanes: int) -> list[int]:
    out = []
    for k in range(lanes):
        c = (word >> (2 * k)) & 3
        assert c != 2, "the decoder emitted the code 10"
        out.append(-1 if c == 3 else c)
    return out


def reference(word: int, lanes: int, pk: str) -> tuple[list[int], bool]:
    """Trits and invalid flag of one (possibly malformed) word, as documented."""
    if pk == "2b":
        codes = [(word >> (2 * k)) & 3 for k in range(lanes)]
        return [{0: 0, 1: 1, 2: 0, 3: -1}[c] for c in codes], any(c == 2 for c in codes)
    nb = packing.packed_bytes(lanes, "b3")
    rem = lanes - 5 * (nb - 1)
    trits, bad = [], False
    for b in range(nb):
        v = (word >> (8 * b)) & 255
        if v > packing.B3_MAX_BYTE:
            digits, bad = [0] * 5, True
        else:
            digits = [(v // 3 ** i) % 3 for i in range(5)]
        if b == nb - 1 and rem < 5:
            bad |= v >= 3 ** rem
            digits = digits[:rem]
        trits += [-1 if d == 2 else d for d in digits]
    return trits, bad


async def stream(dut, unit, words, *, p_valid=1.0, p_ready=1.0, seed=0, clear_at=()):
    """Send ``words``; returns (decoded trit lists, accept cycles, output cycles, error per cycle)."""
    rng = random.Random(seed)
    lanes = UNITS[unit]["lanes"]
    i_valid, i_ready, i_payload = (getattr(dut, f"{unit}_i_{n}") for n in ("valid", "ready", "payload"))
    o_valid, o_ready, o_payload = (getattr(dut, f"{unit}_o_{n}") for n in ("valid", "ready", "payload"))
    error, error_clear = getattr(dut, f"{unit}_error"), getattr(dut, f"{unit}_error_clear")
    got, acc_at, out_at, errs = [], [], [], []
    k, cycle, offered, pending = 0, 0, False, None
    limit = 100 + 4 * len(words) / min(p_valid, p_ready)
    while len(got) < len(words):
        await FallingEdge(dut.clk)
        if not offered and k < len(words) and rng.random() < p_valid:
            i_payload.value = words[k]
            offered = True
        i_valid.value = int(offered)
        take = rng.random() < p_ready
        o_ready.value = int(take)
        error_clear.value = int(cycle in clear_at)
        await ReadOnly()
        errs.append(int(error.value))
        if o_valid.value:
            v = o_payload.value.to_unsigned()
            assert pending is None or v == pending, f"{unit}: output changed while stalled"
            if take:
                got.append(trits_of(v, lanes))
                out_at.append(cycle)
                pending = None
            else:
                pending = v
        else:
            assert pending is None, f"{unit}: valid dropped before the transfer"
        if offered and i_ready.value:
            acc_at.append(cycle)
            k += 1
            offered = False
        cycle += 1
        assert cycle < limit, f"{unit}: stuck after {cycle} cycles"
    await FallingEdge(dut.clk)
    i_valid.value = 0
    o_ready.value = 0
    error_clear.value = 0
    return got, acc_at, out_at, errs


def random_words(rng, unit, n, p_zero=None):
    u = UNITS[unit]
    t = rng.integers(-1, 2, size=(n, u["lanes"]))
    if p_zero is not None:
        t[rng.random(t.shape) < p_zero] = 0
    words = packing.pack_tiles(t.astype(np.int8), u["packing"])
    return t, [int.from_bytes(w.tobytes(), "little") for w in words]


async def clear_error(dut, unit):
    await FallingEdge(dut.clk)
    getattr(dut, f"{unit}_error_clear").value = 1
    await FallingEdge(dut.clk)
    getattr(dut, f"{unit}_error_clear").value = 0
    await ReadOnly()
    assert not getattr(dut, f"{unit}_error").value, f"{unit}: error_clear did not clear"


@cocotb.test()
async def test_latency_throughput(dut):
    """Latency 1, one word per cycle with a ready sink, valid words raise no error."""
    await start(dut)
    rng = np.random.default_rng(0)
    for unit in UNITS:
        t, words = random_words(rng, unit, 40)
        got, acc_at, out_at, errs = await stream(dut, unit, words)
        assert acc_at == list(range(40)), f"{unit}: not one word per cycle"
        assert out_at == list(range(1, 41)), f"{unit}: latency is not 1"
        assert np.array_equal(np.array(got), t), f"{unit}: decoded trits differ"
        assert not any(errs), f"{unit}: error on valid words"


@cocotb.test()
async def test_random_backpressure(dut):
    """Random tiles (sparse to dense) under random valid/ready, equal to packing.unpack_tiles."""
    await start(dut)
    rng = np.random.default_rng(1)
    for unit, u in UNITS.items():
        for seed, (pv, pr) in enumerate([(0.5, 1.0), (1.0, 0.4), (0.6, 0.6)]):
            t, words = random_words(rng, unit, 60, p_zero=float(rng.random()))
            got, _, _, errs = await stream(dut, unit, words, p_valid=pv, p_ready=pr, seed=seed)
            nb = packing.packed_bytes(u["lanes"], u["packing"])
            ref = packing.unpack_tiles(np.array([[(w >> (8 * b)) & 255 for b in range(nb)] for w in words],
                                                dtype=np.uint8), u["lanes"], u["packing"])
            assert np.array_equal(np.array(got), ref) and np.array_equal(ref, t), f"{unit}: decoded trits differ"
            assert not any(errs)


@cocotb.test()
async def test_every_byte(dut):
    """Every byte value 0..255 in every byte position (b3), every code in every lane (2b)."""
    await start(dut)
    rng = np.random.default_rng(2)
    for unit, u in UNITS.items():
        lanes, pk = u["lanes"], u["packing"]
        nb = u["word_bits"] // 8 if pk == "b3" else None
        words = []
        if pk == "b3":
            for b in range(nb):
                for v in range(256):
                    _, (base,) = random_words(rng, unit, 1)
                    words.append((base & ~(255 << (8 * b))) | (v << (8 * b)))
        else:
            for k in range(lanes):
                for c in range(4):
                    _, (base,) = random_words(rng, unit, 1)
                    words.append((base & ~(3 << (2 * k))) | (c << (2 * k)))
        got, _, _, _ = await stream(dut, unit, words, p_ready=0.8, seed=3)
        for w, g in zip(words, got):
            exp, _ = reference(w, lanes, pk)
            assert g == exp, f"{unit}: word {w:#x}: got {g}, expected {exp}"
        await clear_error(dut, unit)


@cocotb.test()
async def test_error_sticky(dut):
    """The first invalid word sets ``error`` the cycle after its transfer; it stays until ``error_clear``."""
    await start(dut)
    rng = np.random.default_rng(4)
    for unit, u in UNITS.items():
        lanes, pk = u["lanes"], u["packing"]
        _, words = random_words(rng, unit, 30)
        # make word 10 invalid
        if pk == "2b":
            k = int(rng.integers(0, lanes))
            bad = (words[10] & ~(3 << (2 * k))) | (2 << (2 * k))
        else:
            nb = u["word_bits"] // 8
            rem = lanes - 5 * (nb - 1)
            b = int(rng.integers(0, nb))
            lo = 3 ** rem if (b == nb - 1 and rem < 5) else 243      # padding trits or a byte above 242
            v = int(rng.integers(lo, 256))
            bad = (words[10] & ~(255 << (8 * b))) | (v << (8 * b))
        words[10] = bad
        got, acc_at, _, errs = await stream(dut, unit, words, p_valid=0.7, p_ready=0.7, seed=5)
        first = errs.index(1)
        assert first == acc_at[10] + 1, f"{unit}: error rose at {first}, word 10 taken at {acc_at[10]}"
        assert all(errs[first:]), f"{unit}: error not sticky"
        assert got[10] == reference(bad, lanes, pk)[0], f"{unit}: invalid word decoded wrongly"
        # clearing in the middle of a stream of valid words keeps it clear
        _, words = random_words(rng, unit, 10)
        _, _, _, errs = await stream(dut, unit, words, clear_at={0})
        assert errs[0] == 1 and not any(errs[1:]), f"{unit}: error_clear: {errs}"
