"""cocotb tests of :mod:`mmfree.hw.elementwise`, bit-exact with numpy / the golden model.

Instances: ``dq_`` Dequant, ``mlgru_`` MLGRUCell, ``glu_`` GLUCell, ``add_`` ResidualAdd.
"""

from __future__ import annotations

import cocotb
import numpy as np
from arith_streams import start, stream, v32_values

from mmfree import numerics as nx
from mmfree.hw.elementwise import Dequant, GLUCell, MLGRUCell, ResidualAdd
from mmfree.model import golden
from mmfree.sim.runner import cocotb_params

PAIR = [("a", True), ("b", True)]
V32 = [(None, True)]
UNITS = {
    "dq": (Dequant.LATENCY, [("acc", True), ("m", False), ("e", True)], V32),
    "mlgru": (MLGRUCell.LATENCY, [("i", True), ("f", True), ("g", True), ("h", True), ("lb", False),
                                  ("has_lb", False)], [("h", True), ("bo", True)]),
    "glu": (GLUCell.LATENCY, PAIR, V32),
    "add": (ResidualAdd.LATENCY, PAIR, V32),
}


def dequant_ref(acc: int, m: int, e: int) -> int:
    """``sat32(rshr(acc * m, -e))`` in Python integers (exact for any exponent)."""
    v, s = acc * m, -e
    y = (v + (1 << (s - 1))) >> s if s > 0 else v << -s
    return max(nx.V_MIN, min(nx.V_MAX, y))


def expected(unit, items):
    if unit == "dq":
        return [dequant_ref(it["acc"], it["m"], it["e"]) for it in items]
    col = {k: np.array([it[k] for it in items], dtype=np.int64) for k in items[0]}
    if unit == "mlgru":
        h1, bo1, _, _ = golden.mlgru(col["i"], col["f"], col["g"], col["h"], col["lb"])
        h0, bo0, _, _ = golden.mlgru(col["i"], col["f"], col["g"], col["h"], None)
        has = col["has_lb"] == 1
        return [{"h": int(a), "bo": int(b)} for a, b in zip(np.where(has, h1, h0), np.where(has, bo1, bo0))]
    if unit == "glu":
        return [int(v) for v in golden.glu(col["a"], col["b"])]
    return [int(v) for v in nx.sat(col["a"] + col["b"])]


def make_items(unit, rng, n):
    if unit == "dq":
        acc = rng.integers(-(1 << 23), 1 << 23, n)
        acc = np.where(rng.random(n) < 0.1, rng.choice([-(1 << 23), (1 << 23) - 1, 0, 1, -1], n), acc)
        m = rng.integers(0, 1 << 16, n)
        m = np.where(rng.random(n) < 0.1, rng.choice([0, 1, 1 << 15, (1 << 16) - 1], n), m)
        e = rng.integers(-45, 12, n)
        e = np.where(rng.random(n) < 0.1, rng.choice([-131072, -100, -41, -40, -39, 31, 32, 33, 131071], n), e)
        return [{"acc": int(a), "m": int(b), "e": int(c)} for a, b, c in zip(acc, m, e)]
    if unit == "mlgru":
        i, f, g, h = (v32_values(rng, n) for _ in range(4))
        lb = rng.integers(0, 1 << 16, n)
        lb = np.where(rng.random(n) < 0.2, rng.choice([0, 65535, 1, 32768], n), lb)
        has = rng.integers(0, 2, n)
        return [dict(i=int(a), f=int(b), g=int(c), h=int(d), lb=int(e), has_lb=int(k))
                for a, b, c, d, e, k in zip(i, f, g, h, lb, has)]
    a, b = v32_values(rng, n), v32_values(rng, n)
    return [{"a": int(x), "b": int(y)} for x, y in zip(a, b)]


def check(unit, items, got):
    exp = expected(unit, items)
    for k, (g, e) in enumerate(zip(got, exp)):
        assert g == e, f"{unit}: element {k} {items[k]}: got {g}, expected {e}"
    assert len(got) == len(exp)


@cocotb.test()
async def test_latency_throughput(dut):
    """Documented latency, then one element per cycle with an always-ready sink."""
    await start(dut)
    rng = np.random.default_rng(1)
    for unit, (lat, fi, fo) in UNITS.items():
        items = make_items(unit, rng, 1)
        outs, _, acc_at, out_at = await stream(dut, f"{unit}_", items, fi, fo)
        assert out_at[0] - acc_at[0] == lat, f"{unit}: latency {out_at[0] - acc_at[0]}, documented {lat}"
        items = make_items(unit, rng, 200)
        outs, _, acc_at, out_at = await stream(dut, f"{unit}_", items, fi, fo)
        assert acc_at == list(range(len(items))), f"{unit}: input not accepted every cycle"
        assert out_at == list(range(lat, lat + len(items))), f"{unit}: output not one per cycle"
        check(unit, items, outs)


@cocotb.test()
async def test_edges_backpressure(dut):
    """Edge values (saturation, shift clamps, lb 0/65535, sigmoid clamp) under random valid/ready."""
    await start(dut)
    rng = np.random.default_rng(7)
    for seed, (pv, pr) in enumerate([(0.5, 1.0), (1.0, 0.3), (0.7, 0.7)]):
        for unit, (_, fi, fo) in UNITS.items():
            items = make_items(unit, rng, 400)
            outs, *_ = await stream(dut, f"{unit}_", items, fi, fo, p_valid=pv, p_ready=pr, seed=seed)
            check(unit, items, outs)


@cocotb.test()
async def test_exhaustive_corners(dut):
    """Cartesian products of corner values for every block."""
    await start(dut)
    corners = [-(1 << 31), (1 << 31) - 1, 0, 1, -1, 16 << 16, -(16 << 16), (3 << 16) + 5, -(5 << 15)]
    cases = {
        "dq": [{"acc": a, "m": m, "e": e} for a in (-(1 << 23), (1 << 23) - 1, 0, 1, -1, 12345)
               for m in (0, 1, 1 << 15, 65535) for e in range(-42, 34, 3)],
        "mlgru": [dict(i=i, f=f, g=g, h=h, lb=lb, has_lb=hl) for i in corners[:5] for f in corners[:6]
                  for g in corners[:3] for h in corners[:3] for lb, hl in ((0, 1), (65535, 1), (777, 0))],
        "glu": [{"a": a, "b": b} for a in corners for b in corners],
        "add": [{"a": a, "b": b} for a in corners for b in corners],
    }
    for unit, items in cases.items():
        _, fi, fo = UNITS[unit]
        outs, *_ = await stream(dut, f"{unit}_", items, fi, fo, p_valid=0.8, p_ready=0.8, seed=3)
        check(unit, items, outs)


@cocotb.test()
async def test_bulk(dut):
    """``n_bulk`` random elements through MLGRUCell and GLUCell, every output compared."""
    await start(dut)
    n = int(cocotb_params().get("n_bulk", 2000))
    rng = np.random.default_rng(2027)
    for unit in ("mlgru", "glu", "dq"):
        _, fi, fo = UNITS[unit]
        items = make_items(unit, rng, n)
        outs, *_ = await stream(dut, f"{unit}_", items, fi, fo, p_valid=0.9, p_ready=0.9, seed=9)
        check(unit, items, outs)
