"""cocotb tests of :mod:`mmfree.hw.sigmoid` (Sigmoid as ``sig_``, SiLU as ``silu_``), bit-exact with numpy."""

from __future__ import annotations

import cocotb
import numpy as np
from arith_streams import V32_EDGES, start, stream, v32_values

from mmfree import numerics as nx
from mmfree.hw.sigmoid import Sigmoid, SiLU
from mmfree.sim.runner import cocotb_params

SIG_IN = [(None, True)]
SIG_OUT = [(None, False)]
SILU_OUT = [(None, True)]
UNITS = {"sig": (Sigmoid.LATENCY, SIG_OUT, nx.sigmoid_q), "silu": (SiLU.LATENCY, SILU_OUT, nx.silu_q)}


def check(name, xs, got, fn):
    exp = fn(np.asarray(xs, dtype=np.int64))
    got = np.asarray(got, dtype=np.int64)
    bad = np.nonzero(got != exp)[0]
    assert bad.size == 0, (f"{name}: {bad.size} of {len(xs)} differ, first at x={xs[bad[0]]}: "
                           f"got {got[bad[0]]}, expected {exp[bad[0]]}")


async def latency_and_throughput(dut, unit):
    lat, out_fields, fn = UNITS[unit]
    outs, _, acc_at, out_at = await stream(dut, f"{unit}_", [12345], SIG_IN, out_fields)
    assert out_at[0] - acc_at[0] == lat, f"{unit}: latency {out_at[0] - acc_at[0]}, documented {lat}"
    xs = list(range(-(1 << 20), 1 << 20, 4099))
    outs, cycles, acc_at, out_at = await stream(dut, f"{unit}_", xs, SIG_IN, out_fields)
    assert acc_at == list(range(len(xs))), f"{unit}: input not accepted every cycle"
    assert out_at == list(range(lat, lat + len(xs))), f"{unit}: output not one per cycle"
    check(unit, xs, outs, fn)


@cocotb.test()
async def test_latency_throughput(dut):
    """Documented latency, one element per cycle with an always-ready sink."""
    await start(dut)
    for unit in UNITS:
        await latency_and_throughput(dut, unit)


@cocotb.test()
async def test_edges_backpressure(dut):
    """Clamp edges, index/fraction boundaries and saturation limits under random valid/ready."""
    await start(dut)
    rng = np.random.default_rng(11)
    # every table cell boundary around the interesting range, both sides
    xs = list(V32_EDGES) + [int(v) for v in rng.integers(-(1 << 21), 1 << 21, 300)]
    xs += [(k << 11) + d - (16 << 16) for k in range(0, 1025, 7) for d in (-1, 0, 1, 1023, 1024, 1025)]
    for seed, (pv, pr) in enumerate([(1.0, 1.0), (0.5, 1.0), (1.0, 0.4), (0.6, 0.6)]):
        for unit, (_, out_fields, fn) in UNITS.items():
            outs, *_ = await stream(dut, f"{unit}_", xs, SIG_IN, out_fields, p_valid=pv, p_ready=pr, seed=seed)
            check(unit, xs, outs, fn)


@cocotb.test()
async def test_bulk(dut):
    """``n_bulk`` random V32 values through both, every output compared with numpy."""
    await start(dut)
    n = int(cocotb_params().get("n_bulk", 2000))
    xs = [int(v) for v in v32_values(np.random.default_rng(2026), n)]
    for unit, (_, out_fields, fn) in UNITS.items():
        outs, *_ = await stream(dut, f"{unit}_", xs, SIG_IN, out_fields, p_valid=0.9, p_ready=0.9, seed=5)
        check(unit, xs, outs, fn)
