"""The integer golden model (model/golden.py): invariants, its trace, and distance from the float model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfree import numerics as nx
from mmfree.compiler.fold import fold
from mmfree.model.checkpoint import load_checkpoint, load_reference
from mmfree.model.evaluate import evaluate
from mmfree.model.golden import GoldenModel, topk

from conftest import heldout_bytes


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    cfg, tensors = load_checkpoint(tiny_ckpt)
    return cfg, tensors, fold(cfg, tensors)


def _tokens(v, shape, seed=0):
    return np.random.default_rng(seed).integers(0, v, size=shape)


def test_batch_streams_are_independent(tiny):
    cfg, _, cm = tiny
    toks = _tokens(cfg.vocab_size, (3, 20))
    g = GoldenModel(cm, batch=3, k=5)
    batched = [g.step(toks[:, t]) for t in range(toks.shape[1])]
    for b in range(3):
        alone = GoldenModel(cm, batch=1, k=5)
        for t in range(toks.shape[1]):
            r = alone.step(toks[b:b + 1, t])
            for field in ("acc", "scale_m", "scale_e", "topk_ids", "topk_acc"):
                assert np.array_equal(getattr(r, field)[0], getattr(batched[t], field)[b]), (b, t, field)
        for l in range(cfg.num_hidden_layers):
            assert np.array_equal(alone.state[l][0], g.state[l][b])
    # the streams did differ (otherwise the check above is empty)
    assert not np.array_equal(batched[-1].acc[0], batched[-1].acc[1])


def test_run_equals_steps_and_logits(tiny):
    cfg, _, cm = tiny
    toks = _tokens(cfg.vocab_size, (2, 12), seed=1)
    logits = GoldenModel(cm, batch=2).run(toks)
    g = GoldenModel(cm, batch=2)
    for t in range(12):
        r = g.step(toks[:, t])
        assert np.array_equal(logits[:, t], r.logits())
        want = r.acc * (r.scale_m * 2.0 ** (r.scale_e - 16))[:, None]
        np.testing.assert_allclose(r.logits(), want, rtol=1e-15)
        assert (r.scale_m > 0).all()
    # a 1-D sequence is one stream
    assert GoldenModel(cm).run(toks[0]).shape == (1, 12, cfg.vocab_size)


def test_topk_order_and_ties():
    acc = np.array([[3, 7, 7, -1, 7, 2], [0, 0, 0, 0, 0, 0]])
    ids, top = topk(acc, 4)
    assert ids.tolist() == [[1, 2, 4, 0], [0, 1, 2, 3]]
    assert top.tolist() == [[7, 7, 7, 3], [0, 0, 0, 0]]
    ids, _ = topk(acc, 100)
    assert ids.shape == (2, 6)


def test_step_topk_matches_acc(tiny):
    cfg, _, cm = tiny
    g = GoldenModel(cm, batch=2, k=6)
    for t in range(5):
        r = g.step(_tokens(cfg.vocab_size, 2, seed=t))
        ids, top = topk(r.acc, 6)
        assert np.array_equal(r.topk_ids, ids) and np.array_equal(r.topk_acc, top)
        assert (r.topk_ids[:, 0] == r.acc.argmax(-1)).all()
        assert (r.topk_ids[:, 0] == r.logits().argmax(-1)).all()


def _documented_keys(cfg):
    keys = {"embed"}
    stages = []
    for l in range(cfg.num_hidden_layers):
        keys |= {f"L{l}.{n}" for n in ("f", "i", "h", "r", "p", "x")}
        stages += [(f"L{l}.attn", ("i_proj", "f_proj", "g_proj")), (f"L{l}.out", ("o_proj",)),
                   (f"L{l}.mlp", ("gate_proj",)), (f"L{l}.down", ("down_proj",))]
    stages.append(("head", ("lm_head",)))
    for stage, projs in stages:
        keys |= {f"{stage}.{n}" for n in ("b", "sb", "sumsq", "sqrt", "et")}
        for p in projs:
            keys |= {f"{stage}.{p}.{n}" for n in ("q", "m16", "sh", "acc", "scale_m", "scale_e")}
            if stage != "head":
                keys.add(f"{stage}.{p}.y")
    return keys


def test_trace_keys_and_consistency(tiny):
    cfg, _, cm = tiny
    g = GoldenModel(cm, batch=2)
    g.step([1, 2])
    r = g.step([3, 4], trace=True)
    tr = r.trace
    assert set(tr) == _documented_keys(cfg)
    for l in range(cfg.num_hidden_layers):
        assert np.array_equal(tr[f"L{l}.h"], g.state[l])
    d, i = cfg.hidden_size, cfg.intermediate_size
    assert tr["embed"].shape == (2, d) and tr["L0.attn.i_proj.q"].shape == (2, d)
    assert tr["L0.mlp.gate_proj.y"].shape == (2, 2 * i) and tr["L0.p"].shape == (2, i)
    # the trace is the computation: each base vector is what the previous step produced
    assert np.array_equal(tr["head.lm_head.acc"], r.acc)
    assert np.array_equal(tr["head.lm_head.scale_m"], r.scale_m)
    assert np.array_equal(tr["L0.attn.b"], tr["embed"])
    x = tr["embed"]
    for l in range(cfg.num_hidden_layers):
        assert np.array_equal(tr[f"L{l}.attn.b"], x)
        assert np.array_equal(tr[f"L{l}.r"], nx.sat(x + tr[f"L{l}.out.o_proj.y"]))
        assert np.array_equal(tr[f"L{l}.mlp.b"], tr[f"L{l}.r"])
        assert np.array_equal(tr[f"L{l}.down.b"], tr[f"L{l}.p"])
        x = tr[f"L{l}.x"]
        assert np.array_equal(x, nx.sat(tr[f"L{l}.r"] + tr[f"L{l}.down.down_proj.y"]))
        # every quantizer row reaches +-127 and the ternary product is the accumulator
        q = tr[f"L{l}.attn.f_proj.q"]
        assert (np.abs(q).max(-1) == 127).all()
        t = cm.layers[l].attn.projections[1].t
        assert np.array_equal(tr[f"L{l}.attn.f_proj.acc"], q @ t.astype(np.int64).T)
        f = tr[f"L{l}.f"]
        assert f.min() >= 0 and f.max() <= nx.ONE
        if l > 0:   # lower bounds hold the forget gate up
            assert (f >= cm.layers[l].lower_bound).all()
    assert np.array_equal(tr["head.b"], x)
    assert g.step([5, 6]).trace == {}


def test_state_and_reset(tiny):
    cfg, _, cm = tiny
    toks = _tokens(cfg.vocab_size, (2, 8), seed=2)
    g = GoldenModel(cm, batch=2)
    first = [g.step(toks[:, t], trace=True) for t in range(8)]
    for l in range(cfg.num_hidden_layers):
        assert np.array_equal(g.state[l], first[-1].trace[f"L{l}.h"])
        assert g.state[l].any()
    g.reset()
    assert all(s.shape == (2, cfg.hidden_size) and not s.any() for s in g.state)
    again = [g.step(toks[:, t]) for t in range(8)]
    for a, b in zip(first, again):
        assert np.array_equal(a.acc, b.acc) and np.array_equal(a.scale_e, b.scale_e)
    # the state matters: the last step from a zero state differs
    g.reset()
    assert not np.array_equal(g.step(toks[:, -1]).acc, first[-1].acc)


def test_bad_inputs(tiny):
    cfg, _, cm = tiny
    g = GoldenModel(cm, batch=2)
    with pytest.raises(ValueError, match="out of range"):
        g.step([0, cfg.vocab_size])
    with pytest.raises(ValueError, match="out of range"):
        g.step([-1, 0])
    with pytest.raises(ValueError, match="expected 2 tokens"):
        g.step([1, 2, 3])
    with pytest.raises(ValueError):
        GoldenModel(cm, batch=0)
    with pytest.raises(ValueError):
        GoldenModel(cm, k=0)
    assert not any(s.any() for s in g.state)   # failed steps leave the state alone


def test_projection_scales_match_float_bitlinear(tiny):
    """Per projection, the golden codes and output scale are the float BitLinear's (eps aside).

    Float side from the golden's own base vectors: ``x_n = RMSNorm_wp(RMSNorm_wu(b))``
    with eps 0, ``s_a = 127 / max|x_n|``, scale ``1 / (s_a * s_w)``.
    """
    cfg, tensors, cm = tiny
    g = GoldenModel(cm, batch=4)
    for t in range(6):
        r = g.step(_tokens(cfg.vocab_size, 4, seed=10 + t), trace=True)
    tr = r.trace

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True)) * w

    groups = []
    for l in range(cfg.num_hidden_layers):
        P = f"model.layers.{l}."
        groups += [(f"L{l}.attn", P + "attn_norm.weight", [(n, P + f"attn.{n}") for n in ("i_proj", "f_proj", "g_proj")]),
                   (f"L{l}.out", P + "attn.g_norm.weight", [("o_proj", P + "attn.o_proj")]),
                   (f"L{l}.mlp", P + "mlp_norm.weight", [("gate_proj", P + "mlp.gate_proj")]),
                   (f"L{l}.down", None, [("down_proj", P + "mlp.down_proj")])]
    groups.append(("head", "model.norm.weight", [("lm_head", "lm_head")]))
    worst_scale, flips, total = 0.0, 0, 0
    for stage, wu, projs in groups:
        b = tr[f"{stage}.b"] / nx.ONE
        z = b if wu is None else rms(b, tensors[wu].astype(np.float64))
        for name, key in projs:
            xn = rms(z, tensors[key + ".norm.weight"].astype(np.float64))
            s_a = 127 / np.abs(xn).max(-1)
            w = tensors[key + ".weight"].astype(np.float32)
            s_w = 1 / max(float(np.abs(w).mean(dtype=np.float64)), 1e-5)
            want = 1 / (s_a * s_w)
            got = tr[f"{stage}.{name}.scale_m"] * np.exp2(tr[f"{stage}.{name}.scale_e"] - 16.0)
            worst_scale = max(worst_scale, float(np.abs(got / want - 1).max()))
            codes = np.round(xn * s_a[:, None])
            q = tr[f"{stage}.{name}.q"]
            assert np.abs(q - codes).max() <= 1, (stage, name)
            flips += int((q != codes).sum())
            total += q.size
    assert worst_scale < 3e-4, worst_scale
    assert flips / total < 0.01, flips / total


# --------------------------------------------------------------------------
# golden vs float on a trained model

@pytest.fixture(scope="module")
def agreement(trained_ckpt):
    """``evaluate`` on the held-out packages (email/, json/): 8192 positions in 32 streams from zero state."""
    return evaluate(trained_ckpt, tokens=8192, streams=32, data=heldout_bytes())


def test_golden_agrees_with_float(agreement):
    rep = agreement
    print("\n" + "\n".join(rep.lines()))
    assert rep.tokens == 8192 and rep.streams == 32
    assert rep.float_bpb < 4.0, "the model under test is not trained"
    assert abs(rep.bpb_ratio - 1) <= 0.02, rep.lines()
    # The shipped ecp5 (4 layers, d 176) agrees on 98.98 % of these 8192 positions
    # (98.87 % of mmfree eval's 32768), all its disagreements at near-ties (next test):
    # how often the float model meets a near-tie is the model's, not the arithmetic's.
    assert rep.top1_agreement >= 0.985, rep.lines()


def test_golden_disagrees_only_on_near_ties(agreement):
    """Where golden and float pick different tokens, the float top-2 logits are close.

    A real defect (a wrong constant, a lost bit) flips decisions with clear
    margins too; the quantized model's own sensitivity flips only near-ties.
    """
    assert agreement.max_margin_at_disagreement < 0.5, agreement.lines()


@pytest.mark.slow
def test_golden_agrees_with_float_full(trained_ckpt):
    """The same at the size ``mmfree eval`` reports (32768 positions, 32 streams of 1024)."""
    rep = evaluate(trained_ckpt, tokens=32768, streams=32, data=heldout_bytes())
    print("\n" + "\n".join(rep.lines()))
    assert abs(rep.bpb_ratio - 1) <= 0.02, rep.lines()
    assert rep.max_margin_at_disagreement < 0.5, rep.lines()
    assert rep.top1_agreement >= 0.985, rep.lines()
