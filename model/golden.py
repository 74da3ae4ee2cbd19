"""Integer golden model: the numerics spec executed on a compiled model.

This is the single source of truth the RTL is held to, bit for bit. It
consumes a :class:`~mmfree.compiled.CompiledModel` (ternary codes, folded
C16 weights, PF constants, P16 lower bounds, int8 embedding) and composes
the primitives of :mod:`mmfree.numerics`; it contains no arithmetic of its
own beyond additions and calls to those primitives. docs/numerics.md walks
through one token step by step.

Tokens are processed in batches of independent streams (``[B]`` tokens,
``[B, d]`` state per layer), so evaluation is fast; the hardware runs B = 1.
With ``trace=True`` every intermediate vector and scalar of the step is
recorded in :attr:`StepResult.trace` under a stable name:

* ``embed``; per layer ``L{l}.{f,i,h,r,p,x}`` (gate, gated input, state,
  mid residual, GLU product, layer output);
* per input stage ``{stage}.{b,sb,sumsq,sqrt,et}`` with ``stage`` one of
  ``L{l}.attn``, ``L{l}.out``, ``L{l}.mlp``, ``L{l}.down``, ``head``;
* per projection ``{stage}.{proj}.{q,m16,sh,acc,scale_m,scale_e}`` and,
  except for the head, ``{stage}.{proj}.y``; ``proj`` is the checkpoint
  name's last part (``i_proj``, ``f_proj``, ``g_proj``, ``o_proj``,
  ``gate_proj``, ``down_proj``, ``lm_head``), e.g. ``"L0.attn.i_proj.q"``,
  ``"head.lm_head.acc"``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mmfree import numerics as nx
from mmfree.compiled import CompiledModel, InputGroup


@dataclasses.dataclass
class StepResult:
    """Outcome of one token step for each stream of the batch.

    Attributes
    ----------
    acc : ndarray int64 [B, V]
        LM-head accumulators; the logits are ``acc * scale`` (positive scale,
        so ``argmax(acc)`` is the greedy token).
    scale_m, scale_e : ndarray int64 [B]
        PF scale per stream; ``logit = acc * scale_m * 2^scale_e / 2^16``.
    topk_ids, topk_acc : ndarray int64 [B, k]
        Top-k by accumulator, ties broken toward the lower token id.
    trace : dict
        Intermediates when stepping with ``trace=True``.
    """

    acc: np.ndarray
    scale_m: np.ndarray
    scale_e: np.ndarray
    topk_ids: np.ndarray
    topk_acc: np.ndarray
    trace: dict

    def logits(self) -> np.ndarray:
        """Float logits [B, V] (float64)."""
        s = np.ldexp(self.scale_m.astype(np.float64), (self.scale_e - nx.FRAC).astype(np.int64))
        return self.acc.astype(np.float64) * s[:, None]


def topk(acc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row: descending accumulator, ties to the lower index."""
    k = min(k, acc.shape[-1])
    order = np.argsort(-acc, axis=-1, kind="stable")[:, :k]
    return order, np.take_along_axis(acc, order, axis=-1)


def input_stage(b, cu, projections, tag: str = "", trace: dict | None = None, dequant: bool = True) -> list:
    """BitLinear input stage and matrices of one group (docs/numerics.md section 4).

    ``b`` is the V32 base vector [B, n]; ``cu`` the C16 RMS weight or None;
    ``projections`` a list of ``(name, t, cv, k)`` with ``t`` the ternary
    codes [rows, n] (any dtype; float32 is fastest). Returns, per projection,
    the V32 outputs [B, rows] (``dequant=True``) or ``(acc, scale_m, scale_e)``.
    """
    sb = nx.block_shift(b)
    bs = nx.shr_floor(b, sb[:, None])
    u = bs if cu is None else nx.rshr(bs * cu, 15)
    t = (u * u).sum(axis=-1)
    sqrt_t, et = nx.sumsq_sqrt(t)
    if trace is not None:
        trace.update({f"{tag}.b": b, f"{tag}.sb": sb, f"{tag}.sumsq": t, f"{tag}.sqrt": sqrt_t, f"{tag}.et": et})
    outs = []
    for name, tmat, cv, k in projections:
        q, m16, sh = nx.quantize_a8(bs * cv)
        acc = nx.ternary_matvec(tmat, q)
        s_m, s_e = nx.output_scale(k, m16, sh, sqrt_t, et)
        if trace is not None:
            trace.update({f"{tag}.{name}.q": q, f"{tag}.{name}.m16": m16, f"{tag}.{name}.sh": sh,
                          f"{tag}.{name}.acc": acc, f"{tag}.{name}.scale_m": s_m, f"{tag}.{name}.scale_e": s_e})
        if dequant:
            y = nx.dequantize(acc, s_m, s_e)
            if trace is not None:
                trace[f"{tag}.{name}.y"] = y
            outs.append(y)
        else:
            outs.append((acc, s_m, s_e))
    return outs


def mlgru(i_pre, f_pre, g_pre, h, lb):
    """MLGRU epilogue (docs/numerics.md section 6): returns ``(h', g * silu(h'), f, i)``.

    ``lb`` is the layer's P16 lower bound vector, or None (layer 0 / none).
    """
    f = nx.sigmoid_q(f_pre)
    if lb is not None:
        f = lb + nx.rshr((nx.ONE - lb) * f, nx.FRAC)
    i = nx.mul_p16(nx.silu_q(i_pre), nx.ONE - f)
    h = nx.sat(nx.mul_p16(h, f) + i)
    return h, nx.mul_v32(g_pre, nx.silu_q(h)), f, i


def glu(gate, up):
    """GLU epilogue: ``sat32(rshr(silu_q(gate) * up, 16))``."""
    return nx.mul_v32(nx.silu_q(gate), up)


class GoldenModel:
    """Steps a compiled model one token at a time, keeping the recurrent state.

    Parameters
    ----------
    compiled : CompiledModel
    batch : int
        Number of independent token streams.
    k : int
        Top-k width reported per step (the hardware's ``topk`` parameter).
    """

    def __init__(self, compiled: CompiledModel, batch: int = 1, k: int = 8):
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.model = compiled
        self.config = compiled.config
        self.batch = batch
        self.k = k
        # float32 copies of the ternary codes for exact BLAS accumulation
        self._tf = {p.name: p.t.astype(np.float32) for p in compiled.projections()}
        self.reset()

    def reset(self) -> None:
        """Zero the recurrent state of every layer."""
        self.state = [np.zeros((self.batch, self.config.hidden_size), dtype=np.int64)
                      for _ in self.model.layers]

    # ------------------------------------------------------------------
    def embed(self, tokens: np.ndarray) -> np.ndarray:
        """V32 embedding rows: ``sat32(rshr(code * m, -e))``."""
        m = self.model
        return nx.dequantize(m.emb_codes[tokens].astype(np.int64), m.emb_m[tokens], m.emb_e[tokens])

    def input_stage(self, b, group: InputGroup, tag: str, trace: dict | None, dequant: bool = True) -> list:
        """:func:`input_stage` on a compiled group."""
        return input_stage(b, group.cu, [(p.name.rsplit(".", 1)[-1], self._tf[p.name], p.cv, p.k)
                                         for p in group.projections], tag, trace, dequant)

    def step(self, tokens, trace: bool = False) -> StepResult:
        """Advance every stream by one token; returns the LM-head result."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if tokens.shape[0] != self.batch:
            raise ValueError(f"expected {self.batch} tokens, got {tokens.shape[0]}")
        v = self.config.vocab_size
        if tokens.min() < 0 or tokens.max() >= v:
            raise ValueError(f"token id out of range [0, {v})")
        tr = {} if trace else None
        x = self.embed(tokens)
        if tr is not None:
            tr["embed"] = x
        for l, layer in enumerate(self.model.layers):
            tag = f"L{l}"
            i_pre, f_pre, g_pre = self.input_stage(x, layer.attn, f"{tag}.attn", tr)
            h, bo, f, i = mlgru(i_pre, f_pre, g_pre, self.state[l], layer.lower_bound)
            self.state[l] = h
            (o,) = self.input_stage(bo, layer.out, f"{tag}.out", tr)
            r = nx.sat(x + o)
            (gu,) = self.input_stage(r, layer.mlp, f"{tag}.mlp", tr)
            gate, up = np.split(gu, 2, axis=-1)
            p = glu(gate, up)
            (dn,) = self.input_stage(p, layer.down, f"{tag}.down", tr)
            x = nx.sat(r + dn)
            if tr is not None:
                tr.update({f"{tag}.f": f, f"{tag}.i": i, f"{tag}.h": h, f"{tag}.r": r, f"{tag}.p": p,
                           f"{tag}.x": x})
        ((acc, s_m, s_e),) = self.input_stage(x, self.model.head, "head", tr, dequant=False)
        ids, top = topk(acc, self.k)
        return StepResult(acc=acc, scale_m=s_m, scale_e=s_e, topk_ids=ids, topk_acc=top, trace=tr or {})

    def run(self, tokens: np.ndarray) -> np.ndarray:
        """Float logits [B, T, V] for token sequences [B, T] (state carried on)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim == 1:
            tokens = tokens[None]
        out = [self.step(tokens[:, t]).logits() for t in range(tokens.shape[1])]
        return np.stack(out, axis=1)
