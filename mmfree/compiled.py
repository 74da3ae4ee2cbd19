"""The compiled form of a model: what the hardware and the golden model consume.

The compiler (:mod:`mmfree.compiler`) builds a :class:`CompiledModel` from a
checkpoint (ternarize -> fold); the golden model executes it; later compiler
steps tile and pack it into memory images, and unpacking those images gives
back an equal :class:`CompiledModel`. All arrays are integers in the formats
of :mod:`mmfree.numerics`.

A BitLinear input stage is an :class:`InputGroup`: one base vector, one
folded RMS weight ``cu`` (``None`` means unit weight) and the projections that
read it, each with its own folded quantizer weight ``cv`` and dequantization
constant ``k``. The i/f/g projections share one group.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from .config import ModelConfig


@dataclasses.dataclass
class Projection:
    """One ternary matrix and its constants.

    Attributes
    ----------
    name : str
        Checkpoint key prefix, e.g. ``model.layers.0.attn.i_proj``.
    t : ndarray of int8, shape [out, in]
        Ternary codes.
    cv : ndarray of int64, shape [in]
        C16 folded quantizer weight (preceding norm weight x the BitLinear's own).
    k : (int, int)
        PF constant ``beta / 127 * sqrt(in) * 2^(eu - ev - 15) * 2^16``.
    """

    name: str
    t: np.ndarray
    cv: np.ndarray
    k: tuple[int, int]


@dataclasses.dataclass
class InputGroup:
    """Projections that quantize the same base vector."""

    cu: np.ndarray | None
    projections: list[Projection]


@dataclasses.dataclass
class CompiledLayer:
    attn: InputGroup          #: i, f, g (base: residual x)
    out: InputGroup           #: o (base: g * silu(h))
    mlp: InputGroup           #: gate/up fused (base: residual r)
    down: InputGroup          #: down (base: silu(gate) * up)
    lower_bound: np.ndarray | None   #: P16 [d], None for layer 0 / no lower bounds


@dataclasses.dataclass
class CompiledModel:
    config: ModelConfig
    emb_codes: np.ndarray     #: int8 or int16 [V, d] (the dtype is the code width)
    emb_m: np.ndarray         #: PF mantissas [V]: V32 value of code 1 in row v
    emb_e: np.ndarray         #: PF exponents [V]
    layers: list[CompiledLayer]
    head: InputGroup          #: lm_head (base: final residual x)

    def projections(self):
        """Every projection in execution order."""
        for layer in self.layers:
            for g in (layer.attn, layer.out, layer.mlp, layer.down):
                yield from g.projections
        yield from self.head.projections

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat name -> array view (for hashing, saving and comparing)."""
        out = {"emb_codes": self.emb_codes, "emb_m": self.emb_m, "emb_e": self.emb_e}
        for li, layer in enumerate(self.layers):
            for gname in ("attn", "out", "mlp", "down"):
                g = getattr(layer, gname)
                if g.cu is not None:
                    out[f"layers.{li}.{gname}.cu"] = g.cu
            if layer.lower_bound is not None:
                out[f"layers.{li}.lower_bound"] = layer.lower_bound
        if self.head.cu is not None:
            out["head.cu"] = self.head.cu
        for p in self.projections():
            out[p.name + ".t"] = p.t
            out[p.name + ".cv"] = p.cv
            out[p.name + ".k"] = np.array(p.k, dtype=np.int64)
        return out

    def content_hash(self) -> str:
        """SHA-256 over every array (name, dtype, shape, bytes) and the config."""
        h = hashlib.sha256(repr(sorted(self.config.to_json().items())).encode())
        for name, a in sorted(self.arrays().items()):
            a = np.ascontiguousarray(a)
            h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()
