"""Float reference model: the official ``hgrn_bit`` math in PyTorch.

This is the top rung of the verification ladder. It computes exactly what the
official matmulfreellm code computes (design brief section 2): every
projection is a BitLinear with its own RMSNorm (eps 1e-6), per-token absmax
int8 fake quantization of activations and per-tensor absmean ternary
quantization of weights, with straight-through estimators so the same module
trains (quantization-aware) and evaluates.

Two ways to run it, which agree to float rounding:

* :meth:`HGRNBitForCausalLM.forward` over a whole sequence ``[B, T]``;
* :meth:`HGRNBitForCausalLM.step` one token at a time with an explicit
  recurrent state (one ``d``-vector per layer; no KV cache).

``quantized=False`` builds the float twin used as a training baseline: the
same shape and math without fake quantization.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmfree.config import ModelConfig

#: eps of the RMSNorm inside every BitLinear (the official fused path).
BITLINEAR_EPS = 1e-6


def activation_quant_codes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Official per-token absmax int8 rule: codes and the scale ``s_a``.

    ``s_a = 127 / clamp(max|x|, min=1e-5)``; ``codes = clamp(round(x * s_a), -128, 127)``.
    """
    s_a = _activation_scale(x)
    return (x * s_a).round().clamp(-128, 127), s_a


def _activation_scale(x: torch.Tensor) -> torch.Tensor:
    return 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)


def dithered_activation_quant_codes(x: torch.Tensor, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-only variant of :func:`activation_quant_codes` (``mmfree train --act-noise``).

    The same scale ``s_a``; the codes round ``x * s_a + u`` with
    ``u ~ Uniform(-noise, noise)`` drawn fresh for every element, so a model
    trained so learns to tolerate activation codes one step off. Never used
    at inference, evaluation or export.
    """
    s_a = _activation_scale(x)
    u = torch.empty_like(x).uniform_(-noise, noise)
    return (x * s_a + u).round().clamp(-128, 127), s_a


def weight_quant_codes(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Official per-tensor absmean ternary rule: codes in {-1, 0, 1} and ``s_w``.

    ``beta = clamp(mean|W|, min=1e-5)``; ``T = clamp(round(W / beta), -1, 1)``;
    ``s_w = 1 / beta``. Codes and ``beta`` are computed in float64 whatever
    ``w``'s dtype (then cast back), so float32 and float64 models and the
    compiler (:func:`mmfree.compiler.fold.ternarize`) get the same trits:
    trained latent weights sit on the boundary ``|W| = beta / 2`` in the
    hundreds, where a float32 mean's summation order decides the trit.
    """
    w64 = w.detach().to(torch.float64)
    beta = w64.abs().mean().clamp(min=1e-5)
    t = (w64 / beta).round().clamp(-1, 1)
    return t.to(w.dtype), (1.0 / beta).to(w.dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``x * rsqrt(mean(x^2) + eps) * weight`` over the last axis."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


class BitLinear(nn.Module):
    """Ternary projection ``y = (T @ x_q) / (s_a * s_w)`` with its own RMSNorm.

    Straight-through estimators pass gradients to the latent float weight and
    to the normalized activations, as in the official training code.

    ``act_noise`` (default 0, set by ``mmfree train --act-noise``) is a
    training-only hook: while the module is in training mode and quantized,
    the activation codes are rounded with uniform dither of that amplitude
    (:func:`dithered_activation_quant_codes`); in eval mode, and whenever it
    is 0, the forward is the official math unchanged.
    """

    def __init__(self, in_features: int, out_features: int, quantized: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.norm = RMSNorm(in_features, BITLINEAR_EPS)
        self.quantized = quantized
        self.act_noise = 0.0
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x):
        xn = self.norm(x)
        w = self.weight
        if self.quantized:
            if self.training and self.act_noise:
                codes, s_a = dithered_activation_quant_codes(xn, self.act_noise)
            else:
                codes, s_a = activation_quant_codes(xn)
            xn = xn + (codes / s_a - xn).detach()
            t, s_w = weight_quant_codes(w)
            w = w + (t / s_w - w).detach()
        return F.linear(xn, w)


def lower_bounds(raw: torch.Tensor) -> torch.Tensor:
    """``cumsum(softmax(raw, 0), 0) - softmax(raw, 0)[0]``: row 0 is zero."""
    p = raw.softmax(0)
    return p.cumsum(0) - p[0]


def hgrn_scan(f: torch.Tensor, i: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """All states of ``h_t = f_t * h_{t-1} + i_t`` over axis 1, in log2(T) steps.

    A Hillis-Steele scan: only products of gates, no division, so it is as
    stable as the sequential loop. ``f`` and ``i`` are ``[B, T, d]``.
    """
    a, b = f, i
    if h0 is not None:
        b = b.clone()
        b[:, 0] = b[:, 0] + a[:, 0] * h0
    t = f.shape[1]
    k = 1
    while k < t:
        a_prev = F.pad(a[:, :-k], (0, 0, k, 0), value=1.0)
        b_prev = F.pad(b[:, :-k], (0, 0, k, 0), value=0.0)
        b = b + a * b_prev
        a = a * a_prev
        k *= 2
    return b


class MLGRU(nn.Module):
    """The HGRN token mixer: ``i, f, g`` projections, recurrence, gated norm, ``o_proj``."""

    def __init__(self, config: ModelConfig, layer_idx: int, quantized: bool = True):
        super().__init__()
        d = config.hidden_size
        self.layer_idx = layer_idx
        self.i_proj = BitLinear(d, d, quantized)
        self.f_proj = BitLinear(d, d, quantized)
        self.g_proj = BitLinear(d, d, quantized)
        self.g_norm = RMSNorm(d, config.rms_norm_eps)
        self.o_proj = BitLinear(d, d, quantized)

    def gates(self, a, lb):
        i = self.i_proj(a)
        f = torch.sigmoid(self.f_proj(a))
        if lb is not None and self.layer_idx > 0:
            f = lb + (1 - lb) * f
        i = F.silu(i) * (1 - f)
        return i, f

    def out(self, a, h):
        return self.o_proj(self.g_norm(self.g_proj(a)) * F.silu(h))

    def forward(self, a, lb, h0=None, sequential=False):
        i, f = self.gates(a, lb)
        if sequential:
            h = h0 if h0 is not None else torch.zeros_like(i[:, 0])
            hs = []
            for t in range(a.shape[1]):
                h = f[:, t] * h + i[:, t]
                hs.append(h)
            hs = torch.stack(hs, 1)
        else:
            hs = hgrn_scan(f, i, h0)
        return self.out(a, hs), hs[:, -1]

    def step(self, a, lb, h):
        i, f = self.gates(a, lb)
        h = f * h + i
        return self.out(a, h), h


class MLP(nn.Module):
    """GLU: fused ``gate_proj`` (d -> 2I), ``silu(gate) * up``, ``down_proj`` (I -> d)."""

    def __init__(self, config: ModelConfig, quantized: bool = True):
        super().__init__()
        self.gate_proj = BitLinear(config.hidden_size, 2 * config.intermediate_size, quantized)
        self.down_proj = BitLinear(config.intermediate_size, config.hidden_size, quantized)

    def forward(self, m):
        gate, up = self.gate_proj(m).chunk(2, -1)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int, quantized: bool = True):
        super().__init__()
        d = config.hidden_size
        self.attn_norm = RMSNorm(d, config.rms_norm_eps)
        self.attn = MLGRU(config, layer_idx, quantized)
        self.mlp_norm = RMSNorm(d, config.rms_norm_eps)
        self.mlp = MLP(config, quantized)

    def forward(self, x, lb, h0=None, sequential=False):
        o, h = self.attn(self.attn_norm(x), lb, h0, sequential)
        r = x + o
        return r + self.mlp(self.mlp_norm(r)), h

    def step(self, x, lb, h):
        o, h = self.attn.step(self.attn_norm(x), lb, h)
        r = x + o
        return r + self.mlp(self.mlp_norm(r)), h


class HGRNBitModel(nn.Module):
    def __init__(self, config: ModelConfig, quantized: bool = True):
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        if config.use_lower_bound:
            self.lower_bounds = nn.Parameter(torch.zeros(config.num_hidden_layers, config.hidden_size))
        else:
            self.lower_bounds = None
        self.layers = nn.ModuleList(Block(config, l, quantized) for l in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class HGRNBitForCausalLM(nn.Module):
    """The whole model with official parameter names (``model.*``, ``lm_head.*``).

    Parameters
    ----------
    config : ModelConfig
    quantized : bool
        ``True`` (default) for the ternary model; ``False`` for the float twin.
    """

    def __init__(self, config: ModelConfig, quantized: bool = True):
        super().__init__()
        self.config = config
        self.quantized = quantized
        self.model = HGRNBitModel(config, quantized)
        self.lm_head = BitLinear(config.hidden_size, config.vocab_size, quantized)
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02):
        """Official-style init: N(0, std), residual outputs scaled by 1/sqrt(2L)."""
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name == "model.lower_bounds":
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, std=std)
                if name.endswith(("o_proj.weight", "down_proj.weight")):
                    with torch.no_grad():
                        p /= math.sqrt(2 * self.config.num_hidden_layers)

    def _lower_bounds(self):
        lb = self.model.lower_bounds
        return None if lb is None else lower_bounds(lb)

    def init_state(self, batch: int = 1, device=None, dtype=None) -> list[torch.Tensor]:
        """Zero recurrent state: one ``[batch, d]`` tensor per layer."""
        p = self.lm_head.weight
        return [torch.zeros(batch, self.config.hidden_size, device=device or p.device, dtype=dtype or p.dtype)
                for _ in self.model.layers]

    def forward(self, input_ids: torch.Tensor, state: list[torch.Tensor] | None = None,
                sequential: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits ``[B, T, V]`` for a whole sequence, and the final state.

        ``sequential=True`` runs the recurrence as a plain loop (the same
        operations as :meth:`step`); the default uses :func:`hgrn_scan`.
        """
        x = self.model.embeddings(input_ids)
        lbs = self._lower_bounds()
        new_state = []
        for l, layer in enumerate(self.model.layers):
            h0 = None if state is None else state[l]
            x, h = layer(x, None if lbs is None else lbs[l], h0, sequential)
            new_state.append(h)
        return self.lm_head(self.model.norm(x)), new_state

    def step(self, token: torch.Tensor, state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One decoding step: ``token`` [B] -> logits [B, V] and the next state."""
        x = self.model.embeddings(token)
        lbs = self._lower_bounds()
        new_state = []
        for l, layer in enumerate(self.model.layers):
            x, h = layer.step(x, None if lbs is None else lbs[l], state[l])
            new_state.append(h)
        return self.lm_head(self.model.norm(x)), new_state
