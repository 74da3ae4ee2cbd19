"""cocotb tests of :mod:`mmfree.hw.quantizer` against golden.input_stage's intermediates.

Instances: ``st_`` StatsPass(lanes=4, quants=3), ``st1_`` StatsPass(1, 1),
``qp_`` QuantPass(4), ``qp1_`` QuantPass(1).
"""

from __future__ import annotations

import cocotb
import numpy as np
from arith_streams import pack, put, start, stream, unpack

from mmfree import numerics as nx
from mmfree.model import golden
from mmfree.sim.runner import cocotb_params

CONFIGS = {"st": (4, 3), "st1": (1, 1)}
QCONFIGS = {"qp": 4, "qp1": 1}
STATS_IN = [("b", False), ("cu", False), ("cv", False), ("first", False), ("last", False)]
STATS_OUT = [("t", False), ("m", False)]
QUANT_IN = [("b", False), ("cv", False)]


def make_vector(rng, n, kind, quants):
    """Base vector, RMS weight (None = unit) and ``quants`` quantizer weights."""
    if kind == "zero":
        b = np.zeros(n, np.int64)
    else:
        sc = float(rng.choice([2.0 ** 31, 2.0 ** 24, 2.0 ** 16, 300.0, 3.0]))
        b = np.clip(np.round(rng.standard_normal(n) * sc / 3), nx.V_MIN, nx.V_MAX).astype(np.int64)
        if kind == "edge":
            b[rng.integers(0, n, 2)] = rng.choice([nx.V_MIN, nx.V_MAX, 1, -1], 2)
    cu = None if rng.random() < 0.3 else nx.c16_from_float(rng.standard_normal(n))[0]
    cvs = [nx.c16_from_float(rng.standard_normal(n))[0] for _ in range(quants)]
    if kind == "edge":                       # extreme C16 codes
        cvs[0][0] = -(1 << 15)
        if cu is not None:
            cu[0] = -(1 << 15)
    return b, cu, cvs


def reference(b, cu, cvs):
    tr = {}
    n = b.shape[0]
    projs = [(f"p{k}", np.zeros((1, n), np.float32), cv, (1 << 15, -20)) for k, cv in enumerate(cvs)]
    golden.input_stage(b[None], cu, projs, "x", tr)
    return tr


def beats(b, cu, cvs, lanes):
    n = b.shape[0]
    nb = -(-n // lanes)
    pad = nb * lanes - n

    def padded(v):
        return np.concatenate([v, np.zeros(pad, np.int64)])

    bp, cup = padded(b), padded(cu if cu is not None else np.zeros(n, np.int64))
    cvp = [padded(c) for c in cvs]
    out = []
    for j in range(nb):
        sl = slice(j * lanes, (j + 1) * lanes)
        out.append({"b": pack(bp[sl], 32), "cu": pack(cup[sl], 16),
                    "cv": pack([pack(c[sl], 16) for c in cvp], 16 * lanes),
                    "first": int(j == 0), "last": int(j == nb - 1), "_cv": [pack(c[sl], 16) for c in cvp]})
    return out


def recip(m: int):
    if m == 0:
        return 0, 0, 0
    _, m16, sh = nx.quantize_a8(np.array([[m]], dtype=np.int64))
    m16, sh = int(m16[0]), int(sh[0])
    return ((127 << (nx.Q_SHIFT + 1)) + m16) // (2 * m16), m16, sh


async def check_vector(dut, rng, n, kind, seed):
    for name, (lanes, quants) in CONFIGS.items():
        b, cu, cvs = make_vector(rng, n, kind, quants)
        tr = reference(b, cu, cvs)
        sb = int(tr["x.sb"][0])
        put(getattr(dut, f"{name}_sb"), sb)
        getattr(dut, f"{name}_unit_cu").value = int(cu is None)
        bts = beats(b, cu, cvs, lanes)
        (res,), *_ = await stream(dut, f"{name}_", bts, STATS_IN, STATS_OUT, n_out=1, p_valid=0.8, p_ready=0.7,
                                  seed=seed)
        assert res["t"] == tr["x.sumsq"][0], f"{name}: t {res['t']} != {tr['x.sumsq'][0]}"
        ms = unpack(res["m"], 31, quants, False)
        for k in range(quants):
            r, m16, sh = recip(ms[k])
            assert (m16, sh) == (tr[f"x.p{k}.m16"][0], tr[f"x.p{k}.sh"][0]), f"{name}: quantizer {k} M {ms[k]}"
            qname = "qp" if lanes == 4 else "qp1"
            put(getattr(dut, f"{qname}_sb"), sb)
            put(getattr(dut, f"{qname}_sh"), sh)
            put(getattr(dut, f"{qname}_r"), r)
            qb = [{"b": bt["b"], "cv": bt["_cv"][k]} for bt in bts]
            outs, *_ = await stream(dut, f"{qname}_", qb, QUANT_IN, [(None, False)], p_valid=0.8, p_ready=0.8,
                                    seed=seed + k)
            q = [v for word in outs for v in unpack(word, 8, lanes, True)][:n]
            assert q == [int(v) for v in tr[f"x.p{k}.q"][0]], f"{qname}: codes differ for quantizer {k}"


@cocotb.test()
async def test_vectors(dut):
    """Random, edge and zero vectors of lengths 1..n through both passes, both lane counts."""
    await start(dut)
    rng = np.random.default_rng(int(cocotb_params().get("seed", 31)))
    kinds = ["zero", "edge", "normal"]
    for trial in range(int(cocotb_params().get("vectors", 12))):
        n = int(rng.choice([1, 3, 4, 5, 17, int(rng.integers(1, 300))]))
        await check_vector(dut, rng, n, kinds[trial % 3], trial)


@cocotb.test()
async def test_back_to_back(dut):
    """Several vectors streamed without a gap (first/last framing), one result each, full throughput."""
    await start(dut)
    rng = np.random.default_rng(32)
    lanes, quants = CONFIGS["st"]
    vecs, refs, all_beats = [], [], []
    for n in (9, 1, 40, 4, 13):
        b, cu, cvs = make_vector(rng, n, "normal", quants)
        b[0] = (1 << 22) + 5                     # same max|b| so one sb serves every vector
        b[1:] = np.clip(b[1:], -(1 << 22), 1 << 22)
        cu = nx.c16_from_float(rng.standard_normal(n))[0]
        vecs.append((b, cu, cvs))
        refs.append(reference(b, cu, cvs))
        all_beats += beats(b, cu, cvs, lanes)
    sbs = {int(r["x.sb"][0]) for r in refs}
    assert len(sbs) == 1
    put(dut.st_sb, sbs.pop())
    dut.st_unit_cu.value = 0
    outs, cycles, acc_at, out_at = await stream(dut, "st_", all_beats, STATS_IN, STATS_OUT, n_out=len(vecs))
    assert acc_at == list(range(len(all_beats))), "stats pass did not take a beat every cycle"
    for res, tr in zip(outs, refs):
        assert res["t"] == tr["x.sumsq"][0]
        assert [recip(m)[1:] for m in unpack(res["m"], 31, quants, False)] == \
            [(tr[f"x.p{k}.m16"][0], tr[f"x.p{k}.sh"][0]) for k in range(quants)]
