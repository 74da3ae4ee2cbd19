# amaranth: UnusedElaboratable=no
"""The iCEBreaker's serial core on Verilator equals the golden machine, token by token.

The same testbench as the parallel core (``tests/cocotb/test_core.py``):
images through the load port, a state reset, steps; every step's top-k ids,
accumulators and head scale must equal :class:`GoldenMachine`'s. Models: two
small random ones of odd shapes (d not a multiple of 4 or 5, lower bounds
on and off, 16-bit embedding codes) and, marked slow, the shipped ``ice40``
model. The measured cycles per token go to
``build/cocotb/serial_core/counters_*.json``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mmfree import targets
from mmfree.compiler.compile import compile_checkpoint
from mmfree.config import ModelConfig
from mmfree.hw.serial_core import SerialCore
from mmfree.model.checkpoint import random_checkpoint, resolve
from mmfree.sim.runner import run_cocotb

from test_core_cocotb import _expected

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "cocotb" / "serial_core"

RANDOM = {
    "rand_d12": (dict(vocab_size=40, hidden_size=12, num_hidden_layers=1, intermediate_size=16), 8),
    "rand_d23": (dict(vocab_size=130, hidden_size=23, num_hidden_layers=2, intermediate_size=30,
                      use_lower_bound=False), 16),
}


def _run(tmp_path, ckpts: dict, build: Path) -> dict:
    target = targets.get("icebreaker")
    build.mkdir(parents=True, exist_ok=True)
    models = []
    for name, (ckpt, tokens, emb_bits) in ckpts.items():
        d = tmp_path / f"{name}.compiled"
        compile_checkpoint(ckpt, target, out=d, emb_bits=emb_bits)
        exp = build / f"expected_{name}.json"
        _expected(d, b"def f(x):\n", exp, tokens)
        models.append({"name": name, "dir": str(d), "expected": str(exp)})
    run_cocotb(SerialCore(target), test_module="test_core", build_dir=build,
               module_dirs=[REPO / "tests" / "cocotb"],
               params={"models": models, "step_timeout_cycles": 3_000_000})
    return {m["name"]: json.loads((build / f"counters_{m['name']}.json").read_text()) for m in models}


def test_serial_core_small_models(tmp_path):
    ckpts = {}
    for i, (name, (cfg, tokens)) in enumerate(RANDOM.items()):
        ckpts[name] = (random_checkpoint(tmp_path / name, ModelConfig(rms_norm_eps=1e-6, **cfg), seed=20 + i),
                       tokens, 16 if i else 8)
    per = _run(tmp_path, ckpts, BUILD)
    for name, c in per.items():        # cycles counted; the per-class counters are not built (read 0)
        assert c["cycles"] > 0 and all(c[k] == 0 for k in ("embed", "stats", "quant", "matrix", "drain", "head"))


@pytest.mark.slow
def test_serial_core_shipped_ice40(tmp_path):
    per = _run(tmp_path, {"ice40": (resolve("ice40"), 4, None)}, BUILD.with_name("serial_core_ice40"))
    assert per["ice40"]["cycles"] > 0


@pytest.mark.parametrize("change, msg", [
    (dict(rows=4, cols=5), "the serial core needs rows = 5, target icebreaker has 4"),
    (dict(topk=8), "the serial core needs topk = 4"),
    (dict(max_input=512), "takes inputs up to 256, target icebreaker has max_input 512"),
])
def test_serial_core_constructor_errors(change, msg):
    t = dataclasses.replace(targets.get("icebreaker"), **change)
    with pytest.raises(ValueError, match=msg):
        SerialCore(t)
