"""cocotb tests of :mod:`mmfree.hw.scalar` (``recip_`` QuantRecip, ``sqrt_`` SumSqSqrt, ``scale_`` OutputScale)."""

from __future__ import annotations

import cocotb
import numpy as np
from arith_streams import start, stream

from mmfree import numerics as nx
from mmfree.model import golden
from mmfree.sim.runner import cocotb_params

RR = ("req", "resp")
RECIP = ([(None, False)], [("r", False), ("m16", False), ("sh", True)])
SQRT = ([(None, False)], [("sqrt", False), ("et", True)])
SCALE = ([("k_m", False), ("k_e", True), ("m16", False), ("sh", True), ("sqrt", False), ("et", True)],
         [("m", False), ("e", True)])


def recip_ref(m: int) -> dict:
    _, m16, sh = nx.quantize_a8(np.array([[m]], dtype=np.int64))
    m16, sh = int(m16[0]), int(sh[0])
    r = ((127 << (nx.Q_SHIFT + 1)) + m16) // (2 * m16) if m16 else 0
    return {"r": r, "m16": m16, "sh": sh}


def sqrt_ref(t: int) -> dict:
    s, et = nx.sumsq_sqrt(np.array([t], dtype=np.int64))
    return {"sqrt": int(s[0]), "et": int(et[0])}


def scale_ref(rq: dict) -> dict:
    m, e = nx.output_scale((rq["k_m"], rq["k_e"]), rq["m16"], rq["sh"], rq["sqrt"], rq["et"])
    return {"m": int(m), "e": int(e)}


def bitlen(x: int) -> int:
    return int(x).bit_length()


def recip_cycles(m: int) -> int:
    return 8 if m else 1


def sqrt_cycles(t: int) -> int:
    return abs(sqrt_ref(t)["et"]) // 2 + 18 if t else 1


def scale_cycles(rq: dict) -> int:
    if not (rq["k_m"] and rq["m16"] and rq["sqrt"]):
        return 1
    p = bitlen(((rq["m16"] << 16) // rq["sqrt"]) * rq["k_m"])
    return p + 3 if p >= 17 else 36 - p


async def run_unit(dut, unit, items, ref, fields, cycles=None, **kw):
    limit = 100 + 60 * len(items) / min(kw.get("p_valid", 1.0), kw.get("p_ready", 1.0))
    outs, _, acc_at, out_at = await stream(dut, f"{unit}_", items, *fields, ports=RR, limit=limit, **kw)
    for k, (it, got) in enumerate(zip(items, outs)):
        assert got == ref(it), f"{unit}: request {k} {it}: got {got}, expected {ref(it)}"
    if cycles is not None:
        for k, it in enumerate(items):
            n = out_at[k] - acc_at[k]
            assert n == cycles(it), f"{unit}: request {it} took {n} cycles, documented {cycles(it)}"
    return outs


def recip_inputs(rng, n):
    edges = [0, 1, 2, 3, 1 << 15, (1 << 15) + 1, (1 << 16) - 1, 1 << 16, (1 << 16) + 1, (1 << 31) - 1,
             (1 << 30), (1 << 30) - 1]
    edges += [1 << k for k in range(31)] + [(1 << k) - 1 for k in range(2, 32)]
    return edges + [int(v) for v in rng.integers(1, 1 << 31, n)] + [int(v) for v in rng.integers(1, 1 << 16, n // 4)]


def sqrt_inputs(rng, n):
    edges = [0, 1, 2, 3, 4, (1 << 48) - 1, (1 << 30) - 1, 1 << 30, (1 << 32) - 1, 1 << 32]
    edges += [1 << k for k in range(48)] + [(1 << k) - 1 for k in range(2, 49)] + [(1 << k) + 1 for k in range(48)]
    return edges + [int(v) for v in rng.integers(1, 1 << 48, n, dtype=np.int64)]


def scale_inputs(rng, n):
    def req(k_m, k_e, m16, sh, sq, et):
        return dict(k_m=int(k_m), k_e=int(k_e), m16=int(m16), sh=int(sh), sqrt=int(sq), et=int(et))

    lo, hi = 1 << 15, (1 << 16) - 1
    out = [req(km, ke, m16, sh, sq, et) for km in (lo, hi) for m16 in (lo, hi) for sq in (lo, hi)
           for ke, sh, et in ((-20, 0, 0), (32767, 15, -30), (-32768, -15, 16))]
    # zero operands
    out += [req(0, -3, lo, 2, lo, 4), req(hi, -3, 0, 0, lo, 4), req(hi, -3, lo, 2, 0, 0), req(0, 0, 0, 0, 0, 0)]
    # unnormalized constants exercise the left-shift normalization
    out += [req(km, -7, m16, 1, sq, -2) for km in (1, 2, 3, 255, 256, 32767)
            for m16, sq in ((lo, hi), (hi, lo), (40000, 50000))]
    # carry out of the rounding: floor(P / 2^(L-17)) = 2^17 - 1
    carries = 0
    for _ in range(4000):
        m16, sq = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
        qr = (m16 << 16) // sq
        for L in (31, 32, 33):
            target = ((1 << 17) - 1) << (L - 17)
            km = -(-target // qr)
            if lo <= km <= hi and bitlen(qr * km) == L:
                out.append(req(km, int(rng.integers(-40, 10)), m16, int(rng.integers(-15, 16)), sq,
                               2 * int(rng.integers(-15, 9))))
                carries += 1
        if carries >= 40:
            break
    assert carries >= 10, "no carry cases found"
    km = np.where(rng.random(n) < 0.05, 0, rng.integers(lo, hi + 1, n))
    m16 = np.where(rng.random(n) < 0.05, 0, rng.integers(lo, hi + 1, n))
    sq = np.where(rng.random(n) < 0.05, 0, rng.integers(lo, hi + 1, n))
    out += [req(*v) for v in zip(km, rng.integers(-32768, 32768, n), m16, rng.integers(-15, 16, n), sq,
                                 2 * rng.integers(-15, 9, n))]
    return out


@cocotb.test()
async def test_quant_recip(dut):
    """Edges (M16 = 2^15 and 2^16 - 1, powers of two, zero) and random M; exact cycle counts."""
    await start(dut)
    rng = np.random.default_rng(21)
    await run_unit(dut, "recip", recip_inputs(rng, 300), recip_ref, RECIP, cycles=recip_cycles)
    await run_unit(dut, "recip", recip_inputs(rng, 100), recip_ref, RECIP, p_valid=0.5, p_ready=0.3, seed=1)


@cocotb.test()
async def test_sumsq_sqrt(dut):
    """t at 2^k, 2^k - 1, 2^k + 1, zero, the 48-bit maximum and random; exact cycle counts."""
    await start(dut)
    rng = np.random.default_rng(22)
    await run_unit(dut, "sqrt", sqrt_inputs(rng, 300), sqrt_ref, SQRT, cycles=sqrt_cycles)
    await run_unit(dut, "sqrt", sqrt_inputs(rng, 50), sqrt_ref, SQRT, p_valid=0.5, p_ready=0.3, seed=2)


@cocotb.test()
async def test_output_scale(dut):
    """Boundaries, zero operands, unnormalized k_m, rounding carry-out, random; exact cycle counts."""
    await start(dut)
    rng = np.random.default_rng(23)
    items = scale_inputs(rng, 300)
    carry = [it for it in items if scale_ref(it)["m"] == 1 << 15 and it["k_m"] >= 1 << 15]
    assert carry, "the carry cases are missing"
    await run_unit(dut, "scale", items, scale_ref, SCALE, cycles=scale_cycles)
    await run_unit(dut, "scale", items[:100], scale_ref, SCALE, p_valid=0.5, p_ready=0.3, seed=3)


@cocotb.test()
async def test_chain_against_golden(dut):
    """The three units chained on random vectors equal golden.input_stage's .sqrt/.et/.m16/.sh/.scale_*."""
    await start(dut)
    rng = np.random.default_rng(int(cocotb_params().get("seed", 24)))
    for trial in range(int(cocotb_params().get("vectors", 12))):
        n = int(rng.integers(1, 200))
        scale = float(rng.choice([2.0 ** 30, 2.0 ** 16, 200.0, 1.0]))
        b = np.clip(np.round(rng.standard_normal((1, n)) * scale), nx.V_MIN, nx.V_MAX).astype(np.int64)
        if trial == 0:
            b[:] = 0
        cu = None if trial % 3 == 0 else nx.c16_from_float(rng.standard_normal(n))[0]
        cv = nx.c16_from_float(rng.standard_normal(n))[0]
        k = nx.pf_from_float(float(rng.uniform(1e-4, 1e2)))
        tr = {}
        golden.input_stage(b, cu, [("p", np.zeros((1, n), np.float32), cv, k)], "x", tr)
        sb = int(tr["x.sb"][0])
        bs = nx.shr_floor(b[0], sb)
        (sq,), _, _, _ = await stream(dut, "sqrt_", [int(tr["x.sumsq"][0])], *SQRT, ports=RR, limit=100)
        (rc,), _, _, _ = await stream(dut, "recip_", [int(np.abs(bs * cv).max())], *RECIP, ports=RR, limit=100)
        assert (sq["sqrt"], sq["et"]) == (tr["x.sqrt"][0], tr["x.et"][0]), (trial, sq)
        assert (rc["m16"], rc["sh"]) == (tr["x.p.m16"][0], tr["x.p.sh"][0]), (trial, rc)
        req = dict(k_m=k[0], k_e=k[1], m16=rc["m16"], sh=rc["sh"], sqrt=sq["sqrt"], et=sq["et"])
        (sc,), _, _, _ = await stream(dut, "scale_", [req], *SCALE, ports=RR, limit=100)
        assert (sc["m"], sc["e"]) == (tr["x.p.scale_m"][0], tr["x.p.scale_e"][0]), (trial, sc)
