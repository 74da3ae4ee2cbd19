"""The float reference model (model/reference.py) against the design brief, section 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfree.compiler.fold import ternarize
from mmfree.model import reference as ref
from mmfree.model.checkpoint import load_checkpoint, load_reference, random_checkpoint

from conftest import tiny_config


# --------------------------------------------------------------------------
# the official quantization rules, written out independently in numpy

def official_activation_codes(x: np.ndarray):
    m = np.maximum(np.abs(x).max(axis=-1, keepdims=True), x.dtype.type(1e-5))
    s_a = x.dtype.type(127.0) / m
    return np.clip(np.round(x * s_a), -128, 127), s_a


def official_weight_codes(w: np.ndarray):
    beta = max(float(np.abs(w.astype(np.float64)).mean()), 1e-5)
    s_w = 1.0 / beta
    return np.clip(np.round(w.astype(np.float64) * s_w), -1, 1), s_w


def _activation_cases(rng, dtype):
    cases = [rng.normal(size=(8, 64)), rng.normal(size=(3, 5, 17)) * 1e3, rng.uniform(-1, 1, size=(4, 1))]
    edge = rng.normal(size=(6, 32))
    edge[0] = 0                                  # all-zero row
    edge[1] *= 1e-7                              # max below the 1e-5 clamp
    edge[2, 3] = 1e30                            # one huge value
    edge[3] = 1e25 * np.sign(edge[3])           # all huge
    edge[4, :] = -2.0                            # constant negative row
    edge[5, ::2] = 0.0
    cases.append(edge)
    return [c.astype(dtype) for c in cases]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_quant_matches_official_rule(dtype):
    rng = np.random.default_rng(0)
    for x in _activation_cases(rng, dtype):
        codes, s_a = ref.activation_quant_codes(torch.from_numpy(x))
        want, want_s = official_activation_codes(x)
        assert np.array_equal(codes.numpy(), want)
        np.testing.assert_allclose(s_a.numpy(), want_s, rtol=1e-6)
        assert codes.abs().max() <= 128
    zero = torch.zeros(2, 9, dtype=torch.float64)
    codes, s_a = ref.activation_quant_codes(zero)
    assert not codes.any() and torch.all(s_a == 127 / 1e-5)
    # the row maximum always maps to +-127
    x = torch.from_numpy(rng.normal(size=(20, 50)))
    codes, _ = ref.activation_quant_codes(x)
    assert torch.all(codes.abs().amax(-1) == 127)


def test_weight_quant_matches_official_rule():
    rng = np.random.default_rng(1)
    cases = [rng.normal(size=(32, 48)) * 0.02, rng.normal(size=(1, 1)), rng.uniform(-5, 5, size=(7, 300)),
             np.zeros((4, 4)), np.full((3, 3), 1e-7), rng.normal(size=(16, 16)) * 1e20]
    spike = rng.normal(size=(10, 10)) * 0.01
    spike[3, 3] = 1e6                            # mean dominated by one value: everything else rounds to 0
    cases.append(spike)
    for w in cases:
        codes, s_w = ref.weight_quant_codes(torch.from_numpy(w))
        want, want_s = official_weight_codes(w)
        assert np.array_equal(codes.numpy(), want)
        assert float(s_w) == pytest.approx(want_s, rel=1e-12)
        assert set(np.unique(codes.numpy())) <= {-1.0, 0.0, 1.0}
    assert not ref.weight_quant_codes(torch.zeros(3, 3))[0].any()
    codes, _ = ref.weight_quant_codes(torch.from_numpy(spike))
    assert codes.abs().sum() == 1


def _half_integer_matrix(scale: float) -> np.ndarray:
    # mean |w| = 1 exactly, so w / beta lands exactly on .5 boundaries: round half to even
    base = np.array([0.5, -0.5, 1.5, -1.5, 1.0, -1.0, 0.0, 2.0, 2.5, -2.5, 0.25, -0.25, 0.5, -0.75, 0.75, 0.5])
    assert np.abs(base).mean() == 1.0
    return (base * scale).reshape(2, 8)


def test_ternary_round_half_to_even():
    w = _half_integer_matrix(2.0 ** -6)
    codes, _ = ref.weight_quant_codes(torch.from_numpy(w).float())
    t, beta = ternarize(w)
    want = [[0, 0, 1, -1, 1, -1, 0, 1], [1, -1, 0, 0, 0, -1, 1, 0]]
    assert codes.int().tolist() == want
    assert t.tolist() == want
    assert beta == 2.0 ** -6


def test_fold_ternarize_equals_reference_codes():
    rng = np.random.default_rng(2)
    n = 0
    for _ in range(400):
        r, c = (int(v) for v in rng.integers(1, 200, size=2))
        w = (rng.normal(size=(r, c)) * 10.0 ** rng.uniform(-5, 1)).astype(np.float32)
        if rng.random() < 0.2:
            w[rng.random(size=w.shape) < 0.5] = 0
        t, beta = ternarize(w)
        codes, s_w = ref.weight_quant_codes(torch.from_numpy(w))
        assert t.dtype == np.int8
        assert np.array_equal(t, codes.numpy().astype(np.int8)), (r, c)
        assert beta == pytest.approx(1.0 / float(s_w), rel=1e-6)
        n += w.size
    assert n > 1_000_000
    t, beta = ternarize(np.zeros((3, 3), np.float32))
    assert beta == 1e-5 and not t.any()


def _boundary_matrix(rng, shape, frac=0.3):
    """Latent weights as quantization-aware training leaves them: many within a few
    float32 ulps of the rounding boundary ``|W| = mean|W| / 2``."""
    w = (rng.normal(size=shape) * 0.02).astype(np.float32)
    mask = rng.random(size=shape) < frac
    # beta = (sum of the others + k * beta / 2) / n  =>  beta = others / (n - k / 2)
    beta = np.abs(w[~mask].astype(np.float64)).sum() / (w.size - mask.sum() / 2)
    half = np.float32(beta / 2)
    ulps = rng.integers(-3, 4, size=shape).astype(np.float32)
    near = half + ulps * np.spacing(half)
    return np.where(mask, np.where(w < 0, -near, near), w).astype(np.float32)


def test_codes_agree_on_boundary_weights():
    """fold, the float32 model and the float64 model give the same trits where it is hardest."""
    rng = np.random.default_rng(8)
    near_boundary = 0
    for shape in [(64, 64), (160, 384), (256, 160), (7, 1000)]:
        for _ in range(3):
            w = _boundary_matrix(rng, shape)
            t, beta = ternarize(w)
            c32, s32 = ref.weight_quant_codes(torch.from_numpy(w))
            c64, _ = ref.weight_quant_codes(torch.from_numpy(w).double())
            assert c32.dtype == torch.float32 and s32.dtype == torch.float32
            assert np.array_equal(t, c32.numpy().astype(np.int8))
            assert np.array_equal(t, c64.numpy().astype(np.int8))
            near_boundary += int((np.abs(np.abs(w) / beta - 0.5) < 1e-6).sum())
    assert near_boundary > 10_000


@pytest.mark.parametrize("name", ["ecp5", "ice40"])
def test_codes_agree_on_shipped_models(name):
    from mmfree.model.checkpoint import SHIPPED_MODELS

    if not (SHIPPED_MODELS / name / "config.json").exists():
        pytest.skip(f"no shipped model {name}")
    cfg, W = load_checkpoint(name)
    for key in cfg.ternary_keys():
        t, _ = ternarize(W[key])
        for dtype in (torch.float32, torch.float64):
            codes, _ = ref.weight_quant_codes(torch.from_numpy(W[key]).to(dtype))
            assert np.array_equal(t, codes.numpy().astype(np.int8)), (key, dtype)


# --------------------------------------------------------------------------
# BitLinear against a direct transcription of brief section 2

def test_bitlinear_matches_brief():
    torch.manual_seed(0)
    bl = ref.BitLinear(24, 40).double()
    with torch.no_grad():
        bl.norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 5, 24, dtype=torch.float64) * 3
    y = bl(x)

    xn = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * bl.norm.weight
    s_a = 127 / xn.abs().amax(-1, keepdim=True).clamp(min=1e-5)
    x_q = (xn * s_a).round().clamp(-128, 127)
    W = bl.weight
    s_w = 1 / W.abs().mean().clamp(min=1e-5)
    T = (W * s_w).round().clamp(-1, 1)
    want = (x_q @ T.T) / (s_a * s_w)
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
    assert ref.BITLINEAR_EPS == 1e-6 and bl.norm.eps == 1e-6

    # straight-through estimator: the latent weight gets the gradient of the quantized product
    g = torch.randn_like(y)
    y.backward(g)
    want_grad = (g.reshape(-1, 40).T @ (x_q / s_a).reshape(-1, 24)).detach()
    torch.testing.assert_close(bl.weight.grad, want_grad, rtol=1e-10, atol=1e-12)

    # the float twin is a plain normalized linear map
    fl = ref.BitLinear(24, 40, quantized=False).double()
    fl.load_state_dict(bl.state_dict())
    torch.testing.assert_close(fl(x), xn @ W.T, rtol=1e-12, atol=1e-12)


def test_lower_bounds():
    raw = torch.randn(5, 7, dtype=torch.float64)
    lb = ref.lower_bounds(raw)
    p = torch.softmax(raw, 0)
    torch.testing.assert_close(lb, torch.cumsum(p, 0) - p[0])
    assert torch.all(lb[0] == 0)
    assert torch.all(lb[1:] >= lb[:-1]) and torch.all(lb < 1)


# --------------------------------------------------------------------------
# the recurrence

def _sequential(f, i, h0=None):
    h = torch.zeros_like(i[:, 0]) if h0 is None else h0
    out = []
    for t in range(f.shape[1]):
        h = f[:, t] * h + i[:, t]
        out.append(h)
    return torch.stack(out, 1)


@pytest.mark.parametrize("t", [1, 2, 7, 32, 37])
def test_hgrn_scan_equals_sequential(t):
    g = torch.Generator().manual_seed(t)
    f = torch.rand(3, t, 11, generator=g, dtype=torch.float64)
    i = torch.randn(3, t, 11, generator=g, dtype=torch.float64)
    h0 = torch.randn(3, 11, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ref.hgrn_scan(f, i), _sequential(f, i), rtol=0, atol=1e-6)
    torch.testing.assert_close(ref.hgrn_scan(f, i, h0), _sequential(f, i, h0), rtol=0, atol=1e-6)
    # the inputs are not modified in place
    f2, i2 = f.clone(), i.clone()
    ref.hgrn_scan(f, i, h0)
    assert torch.equal(f, f2) and torch.equal(i, i2)


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    """Random 4-layer model with lower bounds; larger std so the states move."""
    cfg = tiny_config(vocab_size=97, hidden_size=24, num_hidden_layers=4, intermediate_size=40)
    return random_checkpoint(tmp_path_factory.mktemp("ref") / "ckpt", cfg, seed=3, std=0.5)


def test_step_equals_forward(small_ckpt):
    model = load_reference(small_ckpt, dtype=torch.float64)
    assert model.config.use_lower_bound and model.config.num_hidden_layers == 4
    tokens = torch.from_numpy(np.random.default_rng(4).integers(0, 97, size=(2, 48)))
    with torch.no_grad():
        par, st_par = model(tokens)
        seq, st_seq = model(tokens, sequential=True)
        state = model.init_state(2)
        steps = []
        for t in range(tokens.shape[1]):
            logits, state = model.step(tokens[:, t], state)
            steps.append(logits)
        steps = torch.stack(steps, 1)
    assert par.shape == (2, 48, 97) and par.dtype == torch.float64
    torch.testing.assert_close(seq, steps, rtol=0, atol=1e-5)
    torch.testing.assert_close(par, steps, rtol=0, atol=1e-5)
    for a, b, c in zip(st_par, st_seq, state):
        torch.testing.assert_close(a, c, rtol=0, atol=1e-6)
        torch.testing.assert_close(b, c, rtol=0, atol=1e-6)
    # the state moves and the logits do depend on it (the check is not vacuous)
    assert min(float(s.abs().max()) for s in state) > 1e-3
    with torch.no_grad():
        fresh, _ = model.step(tokens[:, -1], model.init_state(2))
    assert (fresh - steps[:, -1]).abs().max() > 1e-3

    # two halves with the state carried equal one pass
    with torch.no_grad():
        for sequential in (False, True):
            a, st = model(tokens[:, :20], sequential=sequential)
            b, st2 = model(tokens[:, 20:], st, sequential=sequential)
            torch.testing.assert_close(torch.cat([a, b], 1), par, rtol=0, atol=1e-5)
            for x, y in zip(st2, st_par):
                torch.testing.assert_close(x, y, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------
# the whole model against a plain numpy transcription of brief section 2

def _np_rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _np_silu(x):
    return x * _np_sigmoid(x)


def brief_logits(cfg, W, tokens, quant=True):
    """The Block equations of brief section 2, one token at a time, float64 numpy."""
    W = {k: v.astype(np.float64) for k, v in W.items()}
    eps = cfg.rms_norm_eps

    def bitlinear(x, key):
        xn = _np_rms(x, W[key + ".norm.weight"], 1e-6)
        w = W[key + ".weight"]
        if not quant:
            return w @ xn
        s_a = 127.0 / max(np.abs(xn).max(), 1e-5)
        x_q = np.clip(np.round(xn * s_a), -128, 127)
        s_w = 1.0 / max(np.abs(w).mean(), 1e-5)
        T = np.clip(np.round(w * s_w), -1, 1)
        return (T @ x_q) / (s_a * s_w)

    if cfg.use_lower_bound:
        raw = W["model.lower_bounds"]
        p = np.exp(raw - raw.max(0))
        p /= p.sum(0)
        lb = np.cumsum(p, 0) - p[0]
    h = [np.zeros(cfg.hidden_size) for _ in range(cfg.num_hidden_layers)]
    out = []
    for tok in tokens:
        x = W["model.embeddings.weight"][tok]
        for l in range(cfg.num_hidden_layers):
            P = f"model.layers.{l}."
            a = _np_rms(x, W[P + "attn_norm.weight"], eps)
            i = bitlinear(a, P + "attn.i_proj")
            f = _np_sigmoid(bitlinear(a, P + "attn.f_proj"))
            g = bitlinear(a, P + "attn.g_proj")
            if l > 0 and cfg.use_lower_bound:
                f = lb[l] + (1 - lb[l]) * f
            i = _np_silu(i) * (1 - f)
            h[l] = f * h[l] + i
            o = bitlinear(_np_rms(g, W[P + "attn.g_norm.weight"], eps) * _np_silu(h[l]), P + "attn.o_proj")
            r = x + o
            m = _np_rms(r, W[P + "mlp_norm.weight"], eps)
            gu = bitlinear(m, P + "mlp.gate_proj")
            gate, up = gu[:cfg.intermediate_size], gu[cfg.intermediate_size:]
            x = r + bitlinear(_np_silu(gate) * up, P + "mlp.down_proj")
        out.append(bitlinear(_np_rms(x, W["model.norm.weight"], eps), "lm_head"))
    return np.stack(out)


@pytest.mark.parametrize("use_lower_bound", [True, False])
def test_whole_model_matches_brief_transcription(tmp_path, use_lower_bound):
    cfg = tiny_config(vocab_size=61, hidden_size=20, num_hidden_layers=3, intermediate_size=36,
                      rms_norm_eps=1e-5, use_lower_bound=use_lower_bound)
    ckpt = random_checkpoint(tmp_path / "m", cfg, seed=5, std=0.3)
    _, W = load_checkpoint(ckpt)
    tokens = np.random.default_rng(6).integers(0, 61, size=24)
    want = brief_logits(cfg, W, tokens)
    model = load_reference(ckpt, dtype=torch.float64)
    with torch.no_grad():
        got, _ = model(torch.from_numpy(tokens)[None], sequential=True)
        got_scan, _ = model(torch.from_numpy(tokens)[None])
    np.testing.assert_allclose(got[0].numpy(), want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got_scan[0].numpy(), want, rtol=0, atol=1e-6)
    assert np.abs(want).max() > 0.1


def test_float_twin(small_ckpt):
    cfg, W = load_checkpoint(small_ckpt)
    q = load_reference(small_ckpt, dtype=torch.float64)
    f = load_reference(small_ckpt, quantized=False, dtype=torch.float64)
    assert not f.quantized and all(not m.quantized for m in f.modules() if isinstance(m, ref.BitLinear))
    tokens = np.random.default_rng(7).integers(0, cfg.vocab_size, size=16)
    with torch.no_grad():
        lq, _ = q(torch.from_numpy(tokens)[None])
        lf, _ = f(torch.from_numpy(tokens)[None])
    assert torch.isfinite(lf).all()
    assert (lq - lf).abs().max() > 1e-2
    np.testing.assert_allclose(lf[0].numpy(), brief_logits(cfg, W, tokens, quant=False), rtol=0, atol=1e-6)
    # same parameters, same names: the twin loads the ternary model's weights
    assert set(q.state_dict()) == set(f.state_dict())


def test_reset_parameters_official_init():
    cfg = tiny_config(hidden_size=32, num_hidden_layers=2)
    torch.manual_seed(0)
    m = ref.HGRNBitForCausalLM(cfg)
    sd = m.state_dict()
    assert set(sd) == set(cfg.tensor_shapes())
    for k, shape in cfg.tensor_shapes().items():
        assert tuple(sd[k].shape) == shape, k
    assert torch.all(sd["model.layers.0.attn_norm.weight"] == 1)
    assert torch.all(sd["model.lower_bounds"] == 0)
    std_o = sd["model.layers.0.attn.o_proj.weight"].std().item()
    std_i = sd["model.layers.0.attn.i_proj.weight"].std().item()
    assert std_i == pytest.approx(0.02, rel=0.15)
    assert std_o == pytest.approx(0.02 / 2, rel=0.15)
