"""Checkpoints in the official HF format: ``config.json`` + ``model.safetensors``.

``pytorch_model.bin`` is read too. Tensors keep the official key names
(``model.layers.{i}.attn.i_proj.weight`` ...); weights are the float latent
weights, ternarized at load time by whoever consumes them.

Every defect is reported as one :class:`~mmfree.errors.CheckpointError` line
naming the file, field or tensor: unknown ``model_type``, missing or
unexpected tensors, wrong shapes (which is also how a config that disagrees
with its weights shows up), non-float dtypes, NaN or Inf.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

import mmfree
from mmfree.config import ModelConfig
from mmfree.errors import CheckpointError

SAFETENSORS = "model.safetensors"
TORCH_BIN = "pytorch_model.bin"
CONFIG = "config.json"

#: Where the shipped default models live (package data).
SHIPPED_MODELS = Path(mmfree.__file__).resolve().parent / "models"

#: Keys some exporters add that carry no weights of the model.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def resolve(path: str | Path) -> Path:
    """A checkpoint directory, or the name of a shipped model (``ecp5``, ``ice40``)."""
    p = Path(path)
    if p.is_dir():
        return p
    shipped = SHIPPED_MODELS / str(path)
    if not p.exists() and shipped.is_dir():
        return shipped
    if not p.exists():
        raise CheckpointError(f"{path}: no such checkpoint directory or shipped model")
    raise CheckpointError(f"{path}: not a directory (a checkpoint is a directory with {CONFIG} and {SAFETENSORS})")


def _read_tensors(ckpt: Path) -> dict[str, np.ndarray]:
    st, pt = ckpt / SAFETENSORS, ckpt / TORCH_BIN
    if st.exists():
        from safetensors import SafetensorError, safe_open

        try:
            # safe_open maps the file; each tensor is copied out once (peak ~1x the file).
            with safe_open(str(st), framework="numpy") as f:
                return _to_float({k: f.get_tensor(k) for k in f.keys()}, st)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{st}: unreadable safetensors file ({str(e).splitlines()[0]})") from None
        except TypeError:
            # bfloat16 has no numpy dtype: read through torch instead.
            from safetensors.torch import load_file as load_torch

            return _to_float(load_torch(str(st)), st)
    if pt.exists():
        import torch

        try:
            with warnings.catch_warnings():   # torch warns on stderr about pickle protocols
                warnings.simplefilter("ignore")
                sd = torch.load(str(pt), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a bad pickle
            raise CheckpointError(f"{pt}: unreadable PyTorch file ({_torch_load_error(e)})") from None
        if not isinstance(sd, dict):
            raise CheckpointError(f"{pt}: expected a state dict, got {type(sd).__name__}")
        return _to_float(sd, pt)
    raise CheckpointError(f"{ckpt}: no {SAFETENSORS} or {TORCH_BIN}")


def _torch_load_error(e: Exception) -> str:
    """A short cause for a failed ``torch.load``, without torch's advice to unpickle unsafely."""
    msg = str(e)
    marker = "WeightsUnpickler error:"
    if marker in msg:
        detail = next((ln.strip() for ln in msg.split(marker, 1)[1].splitlines() if ln.strip()), "")
        return f"not a plain tensor file: {detail}" if detail else "not a plain tensor file"
    first = next((ln.strip() for ln in msg.splitlines() if ln.strip()), "")
    if isinstance(e, EOFError) and not first:
        return "file is empty or truncated"
    return first or type(e).__name__


def _to_float(tensors: dict, source: Path) -> dict[str, np.ndarray]:
    out = {}
    for k, v in tensors.items():
        if not (hasattr(v, "detach") or isinstance(v, np.ndarray)):
            raise CheckpointError(f"{source}: entry {k!r} is a {type(v).__name__}, not a tensor")
        if hasattr(v, "detach"):  # torch tensor (bf16/fp16/fp32)
            if not v.is_floating_point():
                raise CheckpointError(f"{source}: tensor {k!r} has dtype {v.dtype}, expected a float type")
            v = v.detach().float().numpy()
        else:
            if not np.issubdtype(v.dtype, np.floating):
                raise CheckpointError(f"{source}: tensor {k!r} has dtype {v.dtype}, expected a float type")
        out[k] = np.ascontiguousarray(v, dtype=np.float32)
    return out


def _shape_fields(key: str, ndim: int) -> tuple[str, ...]:
    """The config field behind each dimension of an expected tensor (for error messages)."""
    if key in ("model.embeddings.weight", "lm_head.weight"):
        return ("vocab_size", "hidden_size")
    if key == "model.lower_bounds":
        return ("num_hidden_layers", "hidden_size")
    if key.endswith("mlp.gate_proj.weight"):
        return ("intermediate_size", "hidden_size")
    if key.endswith("mlp.down_proj.weight"):
        return ("hidden_size", "intermediate_size")
    if key.endswith("mlp.down_proj.norm.weight"):
        return ("intermediate_size",)
    return ("hidden_size",) * ndim


def _layer_hint(key: str, config: ModelConfig) -> str:
    """`` (config says num_hidden_layers: L)`` for a layer tensor, else ``""``."""
    if key.startswith("model.layers."):
        try:
            int(key.split(".")[2])
        except ValueError:
            return ""
        return f" (config says num_hidden_layers: {config.num_hidden_layers})"
    return ""


def validate(config: ModelConfig, tensors: dict[str, np.ndarray], source: str = "checkpoint") -> None:
    """Check names, shapes and values against the config; raise on the first defect.

    Every message is one line naming the tensor and, where the config decides
    it, the config field (``num_hidden_layers``, ``vocab_size`` ...).
    """
    expected = config.tensor_shapes()
    for key, shape in expected.items():
        if key not in tensors:
            hint = ""
            if key == "model.lower_bounds":
                hint = " (config says use_lower_bound: true)"
            elif key.startswith("model.layers."):
                layer = ".".join(key.split(".")[:3]) + "."
                if not any(k.startswith(layer) for k in tensors):   # the whole layer is absent
                    hint = _layer_hint(key, config)
            raise CheckpointError(f"{source}: missing tensor {key!r}{hint}")
        got = tuple(tensors[key].shape)
        if got != shape:
            fields = _shape_fields(key, len(shape))
            if len(got) == len(shape):
                fields = tuple(dict.fromkeys(f for f, a, b in zip(fields, got, shape) if a != b))
            hint = ", ".join(f"{f}: {getattr(config, f)}" for f in dict.fromkeys(fields))
            raise CheckpointError(
                f"{source}: tensor {key!r} has shape {list(got)}, config implies {list(shape)} ({hint})")
    for key in tensors:
        if key not in expected and not key.endswith(_IGNORED_SUFFIXES):
            hint = ""
            if key == "model.lower_bounds":
                hint = " (config says use_lower_bound: false)"
            elif key.startswith("model.layers."):
                try:
                    if int(key.split(".")[2]) >= config.num_hidden_layers:
                        hint = _layer_hint(key, config)
                except ValueError:
                    pass
            raise CheckpointError(f"{source}: unexpected tensor {key!r}{hint}")
    for key in expected:
        t = tensors[key]
        if not np.isfinite(t).all():
            bad = "NaN" if np.isnan(t).any() else "Inf"
            raise CheckpointError(f"{source}: tensor {key!r} contains {bad}")


def load_checkpoint(path: str | Path) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """Read and validate a checkpoint directory: ``(config, float32 tensors)``."""
    ckpt = resolve(path)
    config = ModelConfig.load(ckpt / CONFIG)
    tensors = _read_tensors(ckpt)
    validate(config, tensors, str(ckpt))
    return config, {k: tensors[k] for k in config.tensor_shapes()}


def save_checkpoint(path: str | Path, config: ModelConfig, tensors: dict) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (float32, official keys)."""
    from safetensors.numpy import save_file

    ckpt = Path(path)
    ckpt.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for k, v in tensors.items():
        if hasattr(v, "detach"):
            v = v.detach().cpu().float().numpy()
        arrays[k] = np.ascontiguousarray(v, dtype=np.float32)
    validate(config, arrays, str(ckpt))
    config.save(ckpt / CONFIG)
    save_file(arrays, str(ckpt / SAFETENSORS), metadata={"format": "pt"})
    return ckpt


def load_reference(path: str | Path, quantized: bool = True, dtype=None):
    """A :class:`~mmfree.model.reference.HGRNBitForCausalLM` with the checkpoint's weights."""
    import torch

    from .reference import HGRNBitForCausalLM

    config, tensors = load_checkpoint(path)
    model = HGRNBitForCausalLM(config, quantized=quantized)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def save_reference(model, path: str | Path) -> Path:
    """Save a reference model in the official format."""
    return save_checkpoint(path, model.config, model.state_dict())


def random_checkpoint(path: str | Path, config: ModelConfig, seed: int = 0, std: float = 0.02) -> Path:
    """An official-format checkpoint with random weights (tests, compile benchmarks).

    Norm weights and lower bounds are drawn around their trained ranges so
    every code path (lower bounds, gated norm) is exercised. Built in numpy
    so a 370M-shaped checkpoint costs no PyTorch module construction.
    """
    rng = np.random.default_rng(seed)
    tensors = {}
    for key, shape in config.tensor_shapes().items():
        if key.endswith("norm.weight"):
            t = rng.uniform(0.5, 1.5, size=shape)
        elif key == "model.lower_bounds":
            t = rng.normal(0.0, 1.0, size=shape)
        else:
            t = rng.normal(0.0, std, size=shape)
        tensors[key] = t.astype(np.float32)
    return save_checkpoint(path, config, tensors)
