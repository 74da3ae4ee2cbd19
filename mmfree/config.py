"""Model configuration: the fields of an HF ``config.json`` with ``model_type: hgrn_bit``.

Only the fields that change the math are kept; unsupported settings
(short convolutions, several heads, expand_ratio != 1) are rejected with a
:class:`~mmfree.errors.CheckpointError` naming the field.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .errors import CheckpointError

MODEL_TYPE = "hgrn_bit"


def default_intermediate_size(hidden_size: int, hidden_ratio: int = 4) -> int:
    """The official rule: ``256 * ceil(int(d * ratio * 2/3) / 256)``."""
    i = int(hidden_size * hidden_ratio * 2 / 3)
    return 256 * ((i + 255) // 256)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and constants of an ``hgrn_bit`` model.

    Parameters
    ----------
    vocab_size, hidden_size, num_hidden_layers, intermediate_size : int
        V, d, L and I. ``gate_proj`` is [2I, d], ``down_proj`` is [d, I].
    rms_norm_eps : float
        eps of every non-BitLinear RMSNorm (attn_norm, mlp_norm, g_norm, norm).
    use_lower_bound : bool
        Whether ``model.lower_bounds`` [L, d] exists and bounds the forget gate.
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    rms_norm_eps: float = 1e-6
    use_lower_bound: bool = True
    hidden_ratio: int = 4
    tie_word_embeddings: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise CheckpointError(f"config field {name!r} must be a positive integer, got {v!r}")
        if not (isinstance(self.rms_norm_eps, (int, float)) and 0 < self.rms_norm_eps < 1):
            raise CheckpointError(f"config field 'rms_norm_eps' must be in (0, 1), got {self.rms_norm_eps!r}")

    @property
    def d(self) -> int:
        return self.hidden_size

    @property
    def n_layers(self) -> int:
        return self.num_hidden_layers

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor of the official checkpoint format, ``key -> shape`` ([out, in])."""
        d, i, v, nl = self.hidden_size, self.intermediate_size, self.vocab_size, self.num_hidden_layers
        shapes: dict[str, tuple[int, ...]] = {"model.embeddings.weight": (v, d)}
        if self.use_lower_bound:
            shapes["model.lower_bounds"] = (nl, d)
        for l in range(nl):
            p = f"model.layers.{l}."
            shapes[p + "attn_norm.weight"] = (d,)
            for n in ("i", "f", "g", "o"):
                shapes[p + f"attn.{n}_proj.weight"] = (d, d)
                shapes[p + f"attn.{n}_proj.norm.weight"] = (d,)
            shapes[p + "attn.g_norm.weight"] = (d,)
            shapes[p + "mlp_norm.weight"] = (d,)
            shapes[p + "mlp.gate_proj.weight"] = (2 * i, d)
            shapes[p + "mlp.gate_proj.norm.weight"] = (d,)
            shapes[p + "mlp.down_proj.weight"] = (d, i)
            shapes[p + "mlp.down_proj.norm.weight"] = (i,)
        shapes["model.norm.weight"] = (d,)
        shapes["lm_head.weight"] = (v, d)
        shapes["lm_head.norm.weight"] = (d,)
        return shapes

    def ternary_keys(self) -> list[str]:
        """Keys of the ternary (BitLinear) matrices, LM head included."""
        return [k for k, s in self.tensor_shapes().items() if len(s) == 2 and k != "model.embeddings.weight"
                and k != "model.lower_bounds"]

    @property
    def n_trits(self) -> int:
        """Number of ternary weights, LM head included."""
        shapes = self.tensor_shapes()
        return sum(shapes[k][0] * shapes[k][1] for k in self.ternary_keys())

    @property
    def n_params(self) -> int:
        """All parameters of the checkpoint."""
        total = 0
        for s in self.tensor_shapes().values():
            n = 1
            for x in s:
                n *= x
            total += n
        return total

    def to_json(self) -> dict:
        """The HF-style ``config.json`` content (official field names)."""
        return {
            "model_type": MODEL_TYPE,
            "architectures": ["HGRNBitForCausalLM"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "intermediate_size": self.intermediate_size,
            "hidden_ratio": self.hidden_ratio,
            "rms_norm_eps": self.rms_norm_eps,
            "use_lower_bound": self.use_lower_bound,
            "num_heads": 1,
            "expand_ratio": 1,
            "use_short_conv": False,
            "attn_mode": "fused_recurrent",
            "hidden_act": "swish",
            "tie_word_embeddings": self.tie_word_embeddings,
        }

    @classmethod
    def from_json(cls, data: dict, source: str = "config.json") -> "ModelConfig":
        """Validate and read an HF ``config.json`` dict."""
        if not isinstance(data, dict):
            raise CheckpointError(f"{source}: expected a JSON object")
        mt = data.get("model_type")
        if mt != MODEL_TYPE:
            raise CheckpointError(f"{source}: field 'model_type' is {mt!r}, expected {MODEL_TYPE!r}")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers"):
            if name not in data:
                raise CheckpointError(f"{source}: missing field {name!r}")
        for name, ok in (("num_heads", 1), ("expand_ratio", 1)):
            if data.get(name, ok) not in (ok, None):
                raise CheckpointError(f"{source}: field {name!r} is {data[name]!r}; only {ok} is supported")
        if data.get("use_short_conv", False):
            raise CheckpointError(f"{source}: field 'use_short_conv' is true; short convolutions are not supported")
        if data.get("tie_word_embeddings", False):
            raise CheckpointError(f"{source}: field 'tie_word_embeddings' is true; lm_head must be its own ternary matrix")
        ratio = data.get("hidden_ratio") or 4
        inter = data.get("intermediate_size")
        if inter is None:
            inter = default_intermediate_size(data["hidden_size"], ratio)
        try:
            return cls(
                vocab_size=data["vocab_size"],
                hidden_size=data["hidden_size"],
                num_hidden_layers=data["num_hidden_layers"],
                intermediate_size=inter,
                rms_norm_eps=data.get("rms_norm_eps", 1e-6),
                use_lower_bound=bool(data.get("use_lower_bound", True)),
                hidden_ratio=ratio,
            )
        except CheckpointError as e:
            raise CheckpointError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no such file") from None
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        return cls.from_json(data, source=str(path))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")
