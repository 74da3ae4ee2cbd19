"""Compiler steps *ternarize* and *fold*: float checkpoint -> :class:`CompiledModel`.

* ternarize: ``T = clamp(round(W / beta), -1, 1)``, ``beta = max(mean|W|, 1e-5)``
  (the official absmean rule, round half to even as ``torch.round``, in float64
  like the reference model's);
* fold: every RMSNorm weight in front of a BitLinear is multiplied into the
  BitLinear's own norm weight (quantizer weight ``cv``) and kept alone as the
  RMS weight ``cu``; scalars (``beta``, ``sqrt(n)``, C16 exponents, 1/127,
  the V32 output scale) fold into one PF constant ``k`` per matrix;
  embedding rows become int8 or int16 codes with a PF scale each; lower bounds become
  P16. docs/numerics.md derives every constant.
"""

from __future__ import annotations

import math

import numpy as np

from mmfree import numerics as nx
from mmfree.compiled import CompiledLayer, CompiledModel, InputGroup, Projection
from mmfree.config import ModelConfig


def ternarize(w: np.ndarray) -> tuple[np.ndarray, float]:
    """Official absmean ternary codes (int8) and ``beta = max(mean|W|, 1e-5)``.

    Computed in float64 (``T = rint(W / beta)``, half to even), exactly as
    :func:`mmfree.model.reference.weight_quant_codes` does for any input
    dtype, so the codes equal the reference model's. Trained latent weights
    pile up on the rounding boundary ``|W| = beta / 2``; a float32 mean,
    whose last bit depends on the summation order (numpy and torch differ),
    flips hundreds of those trits.
    """
    w = np.asarray(w, dtype=np.float32).astype(np.float64)
    beta = max(float(np.abs(w).mean()), 1e-5)
    t = np.clip(np.rint(w / beta), -1, 1).astype(np.int8)
    return t, beta


def ternarize_all(config: ModelConfig, tensors: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, float]]:
    """The *ternarize* step: ``weight key -> (codes, beta)`` for every BitLinear matrix (LM head included)."""
    return {k: ternarize(tensors[k]) for k in config.ternary_keys()}


def _projection(name: str, w, wv: np.ndarray, eu: int) -> Projection:
    t, beta = w if isinstance(w, tuple) else ternarize(w)
    cv, ev = nx.c16_from_float(wv)
    n = t.shape[1]
    k = beta / 127.0 * math.sqrt(n) * 2.0 ** (eu - ev - 15) * nx.ONE
    return Projection(name=name, t=t, cv=cv, k=nx.pf_from_float(k))


def _group(cu_w: np.ndarray | None, projs: list[tuple]) -> InputGroup:
    if cu_w is None:
        cu, eu = None, 15
    else:
        cu, eu = nx.c16_from_float(cu_w)
    ps = []
    for name, w, own_norm in projs:
        wv = own_norm.astype(np.float64) * (1.0 if cu_w is None else cu_w.astype(np.float64))
        ps.append(_projection(name, w, wv, eu))  # w: float weights, or (codes, beta) from ternarize_all
    return InputGroup(cu=cu, projections=ps)


EMB_BITS = (8, 16)


def embedding_codes(e: np.ndarray, bits: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row absmax codes of ``bits`` bits and the PF (in V32 units) of code 1 per row.

    ``code = clamp(round(E / s), -(2^(bits-1) - 1), 2^(bits-1) - 1)`` with
    ``s = max|E_row| / (2^(bits-1) - 1)``.
    """
    if bits not in EMB_BITS:
        raise ValueError(f"embedding bits must be one of {EMB_BITS}, got {bits}")
    EMB_MAX = (1 << (bits - 1)) - 1
    e = np.asarray(e, dtype=np.float64)
    amax = np.abs(e).max(axis=1)
    scale = np.where(amax > 0, amax / EMB_MAX, 1.0)
    codes = np.clip(np.floor(e / scale[:, None] + 0.5), -EMB_MAX, EMB_MAX).astype(np.int8 if bits == 8 else np.int16)
    ms, es = np.zeros(len(e), np.int64), np.zeros(len(e), np.int64)
    for v in range(len(e)):
        if amax[v] > 0:
            ms[v], es[v] = nx.pf_from_float(scale[v] * nx.ONE)
    return codes, ms, es


def lower_bounds_p16(raw: np.ndarray) -> np.ndarray:
    """``cumsum(softmax(raw, 0)) - softmax(raw, 0)[0]`` in float64, as P16 clamped to 65535 (16 bits)."""
    raw = np.asarray(raw, dtype=np.float64)
    p = np.exp(raw - raw.max(axis=0, keepdims=True))
    p /= p.sum(axis=0, keepdims=True)
    lb = np.cumsum(p, axis=0) - p[0]
    return np.clip(np.floor(lb * nx.ONE + 0.5), 0, nx.ONE - 1).astype(np.int64)


def fold(config: ModelConfig, tensors: dict[str, np.ndarray], emb_bits: int = 16,
         ternary: dict[str, tuple[np.ndarray, float]] | None = None) -> CompiledModel:
    """Ternarize every projection and fold norms and scales (see module doc).

    ``emb_bits`` (8 or 16) is the embedding code width; targets short of
    block RAM use 8 (docs/numerics.md section 2 gives the cost in accuracy).
    ``ternary`` is the output of :func:`ternarize_all` when the *ternarize*
    step ran separately (the result is the same either way).
    """
    def w(key):
        return ternary[key] if ternary is not None else tensors[key]

    lbs = lower_bounds_p16(tensors["model.lower_bounds"]) if config.use_lower_bound else None
    layers = []
    for l in range(config.num_hidden_layers):
        p = f"model.layers.{l}."
        g = lambda k: tensors[p + k]  # noqa: E731
        attn = _group(g("attn_norm.weight"), [
            (p + f"attn.{n}_proj", w(p + f"attn.{n}_proj.weight"), g(f"attn.{n}_proj.norm.weight")) for n in "ifg"])
        out = _group(g("attn.g_norm.weight"), [
            (p + "attn.o_proj", w(p + "attn.o_proj.weight"), g("attn.o_proj.norm.weight"))])
        mlp = _group(g("mlp_norm.weight"), [
            (p + "mlp.gate_proj", w(p + "mlp.gate_proj.weight"), g("mlp.gate_proj.norm.weight"))])
        down = _group(None, [
            (p + "mlp.down_proj", w(p + "mlp.down_proj.weight"), g("mlp.down_proj.norm.weight"))])
        lb = lbs[l] if (lbs is not None and l > 0) else None
        layers.append(CompiledLayer(attn=attn, out=out, mlp=mlp, down=down, lower_bound=lb))
    head = _group(tensors["model.norm.weight"], [
        ("lm_head", w("lm_head.weight"), tensors["lm_head.norm.weight"])])
    codes, ms, es = embedding_codes(tensors["model.embeddings.weight"], emb_bits)
    return CompiledModel(config=config, emb_codes=codes, emb_m=ms, emb_e=es, layers=layers, head=head)
