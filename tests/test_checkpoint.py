"""Checkpoints in the official format: load, save, config rules, and one-line errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from mmfree.config import ModelConfig, default_intermediate_size
from mmfree.errors import CheckpointError
from mmfree.model.checkpoint import (CONFIG, SAFETENSORS, TORCH_BIN, load_checkpoint, load_reference,
                                     random_checkpoint, save_checkpoint, save_reference)

from conftest import mmfree_cmd, tiny_config

SMALL = dict(vocab_size=256, hidden_size=16, num_hidden_layers=2, intermediate_size=32)


def small_config(**kw) -> ModelConfig:
    return tiny_config(**{**SMALL, **kw})


def small_tensors(config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0, 0.05, size=s).astype(np.float32) for k, s in config.tensor_shapes().items()}


# --------------------------------------------------------------------------
# config

def test_config_json_roundtrip(tmp_path):
    cfg = small_config(rms_norm_eps=1e-5, use_lower_bound=False)
    data = cfg.to_json()
    assert data["model_type"] == "hgrn_bit"
    assert data["num_heads"] == 1 and data["expand_ratio"] == 1 and data["use_short_conv"] is False
    assert ModelConfig.from_json(json.loads(json.dumps(data))) == cfg
    cfg.save(tmp_path / "c.json")
    assert ModelConfig.load(tmp_path / "c.json") == cfg


@pytest.mark.parametrize("d, want", [(1024, 2816), (2048, 5632), (2560, 6912), (16, 256), (384, 1024)])
def test_official_intermediate_size_rule(d, want):
    assert default_intermediate_size(d) == want
    assert want == 256 * -(-int(8 * d / 3) // 256)
    data = {"model_type": "hgrn_bit", "vocab_size": 32000, "hidden_size": d, "num_hidden_layers": 24}
    assert ModelConfig.from_json(data).intermediate_size == want
    assert ModelConfig.from_json({**data, "hidden_ratio": None, "intermediate_size": None}).intermediate_size == want
    # an explicit intermediate_size wins
    assert ModelConfig.from_json({**data, "intermediate_size": 100}).intermediate_size == 100


def test_official_sizes():
    cfg = ModelConfig.from_json({"model_type": "hgrn_bit", "vocab_size": 32000, "hidden_size": 1024,
                                 "num_hidden_layers": 24})
    shapes = cfg.tensor_shapes()
    assert shapes["model.layers.23.mlp.gate_proj.weight"] == (2 * 2816, 1024)
    assert shapes["model.layers.23.mlp.down_proj.weight"] == (1024, 2816)
    assert shapes["model.layers.0.mlp.down_proj.norm.weight"] == (2816,)
    assert shapes["model.lower_bounds"] == (24, 1024)
    assert shapes["lm_head.weight"] == (32000, 1024)
    assert len(shapes) == 1 + 1 + 24 * 15 + 3
    per_layer = 4 * 1024 * 1024 + 3 * 1024 * 2816
    assert cfg.n_trits == 24 * per_layer + 32000 * 1024
    assert cfg.n_params == cfg.n_trits + 32000 * 1024 + 24 * 1024 + 24 * (8 * 1024 + 2816) + 2 * 1024


@pytest.mark.parametrize("field, value", [("hidden_size", 0), ("hidden_size", -4), ("hidden_size", "16"),
                                          ("hidden_size", 16.0), ("vocab_size", True),
                                          ("num_hidden_layers", None), ("intermediate_size", 0),
                                          ("rms_norm_eps", 0), ("rms_norm_eps", 2.0), ("rms_norm_eps", "x"),
                                          ("num_heads", 4), ("expand_ratio", 2), ("use_short_conv", True),
                                          ("tie_word_embeddings", True), ("model_type", "llama")])
def test_config_field_errors(field, value):
    data = {**small_config().to_json(), field: value}
    with pytest.raises(CheckpointError) as e:
        ModelConfig.from_json(data)
    msg = str(e.value)
    assert field in msg and "\n" not in msg


# --------------------------------------------------------------------------
# load and save

def test_safetensors_roundtrip(tmp_path):
    cfg = small_config()
    tensors = small_tensors(cfg)
    ckpt = save_checkpoint(tmp_path / "a", cfg, tensors)
    assert (ckpt / SAFETENSORS).is_file() and (ckpt / CONFIG).is_file()
    assert json.loads((ckpt / CONFIG).read_text())["model_type"] == "hgrn_bit"
    cfg2, t2 = load_checkpoint(ckpt)
    assert cfg2 == cfg
    assert list(t2) == list(cfg.tensor_shapes())
    for k, v in tensors.items():
        assert t2[k].dtype == np.float32 and np.array_equal(t2[k], v), k
    # torch tensors are accepted too, and a model saved from the reference reloads equal
    model = load_reference(ckpt)
    save_reference(model, tmp_path / "b")
    cfg3, t3 = load_checkpoint(tmp_path / "b")
    assert cfg3 == cfg and all(np.array_equal(t3[k], tensors[k]) for k in tensors)


def test_random_checkpoint_is_deterministic(tmp_path):
    cfg = small_config()
    _, a = load_checkpoint(random_checkpoint(tmp_path / "a", cfg, seed=4))
    _, b = load_checkpoint(random_checkpoint(tmp_path / "b", cfg, seed=4))
    _, c = load_checkpoint(random_checkpoint(tmp_path / "c", cfg, seed=5))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["lm_head.weight"], c["lm_head.weight"])
    # norm weights drawn away from 1 and real lower bounds: every code path sees non-trivial values
    assert a["model.layers.0.attn.g_norm.weight"].std() > 0.1
    assert a["model.lower_bounds"].std() > 0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_pytorch_bin_loading(tmp_path, dtype):
    cfg = small_config()
    tensors = small_tensors(cfg, seed=1)
    d = tmp_path / "bin"
    d.mkdir()
    cfg.save(d / CONFIG)
    sd = {k: torch.from_numpy(v).to(dtype) for k, v in tensors.items()}
    sd["model.layers.0.attn.rotary_emb.inv_freq"] = torch.ones(4)   # exporters' extra key: ignored
    torch.save(sd, d / TORCH_BIN)
    cfg2, t2 = load_checkpoint(d)
    assert cfg2 == cfg
    assert set(t2) == set(cfg.tensor_shapes())
    for k in tensors:
        assert t2[k].dtype == np.float32
        assert np.array_equal(t2[k], sd[k].float().numpy()), k
    model = load_reference(d)
    assert torch.equal(model.lm_head.weight.detach(), sd["lm_head.weight"].float())


def test_bfloat16_safetensors(tmp_path):
    from safetensors.torch import save_file

    cfg = small_config()
    tensors = small_tensors(cfg, seed=2)
    d = tmp_path / "bf16"
    d.mkdir()
    cfg.save(d / CONFIG)
    save_file({k: torch.from_numpy(v).bfloat16() for k, v in tensors.items()}, str(d / SAFETENSORS))
    _, t2 = load_checkpoint(d)
    for k, v in tensors.items():
        assert np.array_equal(t2[k], torch.from_numpy(v).bfloat16().float().numpy()), k


def test_safetensors_preferred_over_bin(tmp_path):
    cfg = small_config()
    a, b = small_tensors(cfg, seed=3), small_tensors(cfg, seed=4)
    d = save_checkpoint(tmp_path / "both", cfg, a)
    torch.save({k: torch.from_numpy(v) for k, v in b.items()}, d / TORCH_BIN)
    _, t = load_checkpoint(d)
    assert np.array_equal(t["lm_head.weight"], a["lm_head.weight"])


def test_save_checkpoint_validates(tmp_path):
    cfg = small_config()
    tensors = small_tensors(cfg)
    del tensors["lm_head.weight"]
    with pytest.raises(CheckpointError, match="lm_head.weight"):
        save_checkpoint(tmp_path / "x", cfg, tensors)
    assert not (tmp_path / "x" / SAFETENSORS).exists()


# --------------------------------------------------------------------------
# malformed checkpoints: one line naming the tensor or field, from the API and the CLI

def _write(d: Path, config: dict | str | None, tensors: dict | bytes | None, fmt: str = "st"):
    d.mkdir(parents=True)
    if config is not None:
        (d / CONFIG).write_text(config if isinstance(config, str) else json.dumps(config))
    if tensors is None:
        return
    if isinstance(tensors, bytes):
        (d / (SAFETENSORS if fmt == "st" else TORCH_BIN)).write_bytes(tensors)
    elif fmt == "st":
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(d / SAFETENSORS))
    else:
        torch.save({k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in tensors.items()},
                   d / TORCH_BIN)


def _case_missing_key(c, t):
    del t["model.layers.1.attn.g_proj.weight"]


def _case_wrong_shape(c, t):
    t["model.layers.0.attn.o_proj.weight"] = t["model.layers.0.attn.o_proj.weight"][:, :15].copy()


def _case_nan(c, t):
    t["model.layers.1.mlp.down_proj.weight"][0, 0] = np.nan


def _case_inf(c, t):
    t["lm_head.norm.weight"][3] = -np.inf


def _set(field, value):
    def f(c, t):
        c[field] = value
    return f


def _drop_field(field):
    def f(c, t):
        del c[field]
    return f


def _no_lower_bounds(c, t):
    del t["model.lower_bounds"]


def _no_lower_bounds_more_layers(c, t):
    c["use_lower_bound"] = False
    c["num_hidden_layers"] = 3
    del t["model.lower_bounds"]


def _int_tensor(c, t):
    t["model.norm.weight"] = np.ones(16, dtype=np.int32)


def _extra_tensor(c, t):
    t["model.extra.weight"] = np.ones(3, dtype=np.float32)


def _bin_int_tensor(c, t):
    t["model.layers.0.mlp_norm.weight"] = np.ones(16, dtype=np.int64)


def _bin_non_tensor(c, t):
    t["step"] = 5


def _truncated(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


#: name -> (mutation of (config dict, tensors dict) or raw content, format, words the error must contain)
MALFORMED = {
    "missing_key": (_case_missing_key, "st", ["model.layers.1.attn.g_proj.weight", "missing"]),
    "wrong_shape": (_case_wrong_shape, "st", ["model.layers.0.attn.o_proj.weight", "[16, 15]"]),
    "nan": (_case_nan, "st", ["model.layers.1.mlp.down_proj.weight", "NaN"]),
    "inf": (_case_inf, "st", ["lm_head.norm.weight", "Inf"]),
    "unknown_model_type": (_set("model_type", "llama"), "st", ["model_type", "llama"]),
    "more_layers_in_config": (_set("num_hidden_layers", 3), "st", ["num_hidden_layers"]),
    "fewer_layers_in_config": (_set("num_hidden_layers", 1), "st", ["num_hidden_layers"]),
    "more_layers_no_lower_bounds": (_no_lower_bounds_more_layers, "st", ["num_hidden_layers", "model.layers.2."]),
    "vocab_mismatch": (_set("vocab_size", 300), "st", ["vocab_size", "model.embeddings.weight"]),
    "hidden_mismatch": (_set("hidden_size", 24), "st", ["hidden_size"]),
    "intermediate_mismatch": (_set("intermediate_size", 40), "st", ["intermediate_size"]),
    "lower_bound_missing": (_no_lower_bounds, "st", ["model.lower_bounds", "use_lower_bound"]),
    "lower_bound_unexpected": (_set("use_lower_bound", False), "st", ["model.lower_bounds", "use_lower_bound"]),
    "missing_hidden_size": (_drop_field("hidden_size"), "st", ["hidden_size", "config.json"]),
    "missing_vocab_size": (_drop_field("vocab_size"), "st", ["vocab_size"]),
    "short_conv": (_set("use_short_conv", True), "st", ["use_short_conv"]),
    "bad_field_type": (_set("hidden_size", "16"), "st", ["hidden_size"]),
    "int_tensor": (_int_tensor, "st", ["model.norm.weight", "int32"]),
    "extra_tensor": (_extra_tensor, "st", ["model.extra.weight", "unexpected"]),
    "missing_config": ("no-config", "st", ["config.json"]),
    "invalid_json": ("invalid-json", "st", ["config.json", "JSON"]),
    "json_not_object": ("json-list", "st", ["config.json", "object"]),
    "missing_weights": ("no-weights", "st", ["model.safetensors"]),
    "corrupt_safetensors": (b"this is not a safetensors file at all", "st", ["model.safetensors"]),
    "truncated_safetensors": ("truncate", "st", ["model.safetensors"]),
    "corrupt_bin": (b"\x80\x04garbage", "bin", ["pytorch_model.bin"]),
    "bin_int_tensor": (_bin_int_tensor, "bin", ["model.layers.0.mlp_norm.weight", "int64"]),
    "bin_non_tensor": (_bin_non_tensor, "bin", ["'step'"]),
    "empty_bin": (b"", "bin", ["pytorch_model.bin", "empty"]),
    "bin_not_state_dict": ("bin-tensor", "bin", ["pytorch_model.bin", "state dict"]),
}


def _build(d: Path, name: str) -> Path:
    mutate, fmt, _ = MALFORMED[name]
    cfg = small_config()
    c, t = cfg.to_json(), small_tensors(cfg)
    if callable(mutate):
        mutate(c, t)
        _write(d, c, t, fmt)
    elif isinstance(mutate, bytes):
        _write(d, c, mutate, fmt)
    elif mutate == "no-config":
        _write(d, None, t)
    elif mutate == "invalid-json":
        _write(d, '{"model_type": "hgrn_bit", "hidden_size": 16,,}', t)
    elif mutate == "json-list":
        _write(d, "[1, 2]", t)
    elif mutate == "no-weights":
        _write(d, c, None)
    elif mutate == "bin-tensor":
        d.mkdir(parents=True)
        (d / CONFIG).write_text(json.dumps(c))
        torch.save(torch.ones(3), d / TORCH_BIN)
    elif mutate == "truncate":
        _write(d, c, t)
        (d / SAFETENSORS).write_bytes(_truncated((d / SAFETENSORS).read_bytes()))
    else:
        raise AssertionError(mutate)
    return d


@pytest.fixture(scope="module")
def malformed(tmp_path_factory):
    root = tmp_path_factory.mktemp("malformed")
    return {name: _build(root / name, name) for name in MALFORMED}


#: Through the CLI: every case but the .bin ones past the first (each of those imports torch, ~2 s).
CLI_CASES = [n for n in MALFORMED if MALFORMED[n][1] == "st"] + ["corrupt_bin"]


@pytest.fixture(scope="module")
def cli_results(malformed):
    """``mmfree eval DIR`` on the malformed checkpoints of :data:`CLI_CASES`, run concurrently."""
    procs = {name: subprocess.Popen(mmfree_cmd() + ["eval", str(malformed[name])], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name in CLI_CASES}
    out = {}
    for name, p in procs.items():
        so, se = p.communicate(timeout=120)
        out[name] = (p.returncode, so, se)
    return out


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_api(malformed, name):
    words = MALFORMED[name][2]
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(malformed[name])
    msg = str(e.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


@pytest.mark.parametrize("name", CLI_CASES)
def test_malformed_cli(cli_results, name):
    rc, _, stderr = cli_results[name]
    assert rc != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for w in MALFORMED[name][2]:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        load_checkpoint(f)
