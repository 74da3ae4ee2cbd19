# amaranth: UnusedElaboratable=no
"""Whole-core test: the Amaranth core on Verilator equals the golden machine, token by token.

One Verilator build per core configuration of the ``ulx3s-85f`` target (the
board's memory sizes): its own 16 x 16 lanes with 16 vector lanes, the same
array with 4 vector lanes (fewer vector lanes than array rows: a row block is
several vmem words, a qbuf word several quantizer beats), and a non-square
8 x 16 array with 2 vector lanes. Each runs the shipped ``ecp5`` model and
three random models of odd shapes (d not a multiple of 16, several I, lower
bounds on and off, a vocabulary that is not a multiple of 16), 32 tokens each;
every step's top-k ids, accumulators and head scale must equal
:class:`GoldenMachine`'s. The measured cycles per token are written to
``build/cocotb/core[-RxCvV]/counters_*.json``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from mmfree import targets
from mmfree.compiler.compile import compile_checkpoint
from mmfree.config import ModelConfig
from mmfree.hw.core import Core
from mmfree.model.checkpoint import random_checkpoint, resolve
from mmfree.model.machine import GoldenMachine
from mmfree.sim.runner import run_cocotb

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "cocotb" / "core"
TARGET = "ulx3s-85f"
TOKENS = 32

RANDOM = {
    "rand_d40": dict(vocab_size=256, hidden_size=40, num_hidden_layers=2, intermediate_size=72, use_lower_bound=True),
    "rand_d72": dict(vocab_size=300, hidden_size=72, num_hidden_layers=1, intermediate_size=100,
                     use_lower_bound=False),
    "rand_d24": dict(vocab_size=100, hidden_size=24, num_hidden_layers=3, intermediate_size=56, use_lower_bound=True),
}


def _expected(d: Path, prompt: bytes, out: Path, n_tokens: int = TOKENS) -> None:
    """Feed the prompt, then the golden machine's own greedy choices; record ``n_tokens`` steps' top-k."""
    gm = GoldenMachine.from_dir(d)
    man = json.loads((d / "manifest.json").read_text())
    vocab = man["model"]["vocab_size"]
    tokens, steps, tok = [], [], prompt[0] % vocab
    for i in range(n_tokens):
        r = gm.step([tok])
        tokens.append(int(tok))
        steps.append({"ids": r.topk_ids[0].tolist(), "accs": r.topk_acc[0].tolist(),
                      "m": int(r.scale_m[0]), "e": int(r.scale_e[0])})
        tok = prompt[i + 1] % vocab if i + 1 < len(prompt) else int(r.topk_ids[0, 0])
    out.write_text(json.dumps({"topk": gm.k, "tokens": tokens, "steps": steps}))


def _target(lanes):
    t = targets.get(TARGET)
    if lanes is None:
        return t, BUILD
    r, c, v = targets.parse_tile(lanes)
    return dataclasses.replace(t.with_lanes(r, c), vec_lanes=v), BUILD.with_name(f"core-{r}x{c}v{v}")


def _models(tmp_path, target, build) -> list[dict]:
    """The shipped ``ecp5`` model and the random ones compiled for ``target``, with golden steps in ``build``."""
    models = []
    ckpts = {"ecp5": resolve("ecp5")}
    for i, (name, cfg) in enumerate(RANDOM.items()):
        ckpts[name] = random_checkpoint(tmp_path / name, ModelConfig(rms_norm_eps=1e-6, **cfg), seed=10 + i)
    for name, ckpt in ckpts.items():
        d = tmp_path / f"{name}.compiled"
        compile_checkpoint(ckpt, target, out=d)
        exp = build / f"expected_{name}.json"
        build.mkdir(parents=True, exist_ok=True)
        _expected(d, b"def main():\n    return 0\n", exp)
        models.append({"name": name, "dir": str(d), "expected": str(exp)})
    return models


@pytest.mark.parametrize("lanes", [None, "16x16/4", "8x16/2"])
def test_core_whole_model(tmp_path, lanes):
    target, build = _target(lanes)
    models = _models(tmp_path, target, build)
    run_cocotb(Core(target), test_module="test_core", build_dir=build,
               module_dirs=[REPO / "tests" / "cocotb"], params={"models": models})
    for m in models:
        per = json.loads((build / f"counters_{m['name']}.json").read_text())
        assert per["cycles"] > 0


@pytest.mark.parametrize("matrix_period_ps", [3000, 13300])
def test_core_matrix_clock(tmp_path, matrix_period_ps):
    """The tile streams on their own clock (the ULX3S's two-clock build): 3.33x faster than ``clk`` (100 MHz
    beside 30 MHz) and 1.33x slower.

    Bit-exact at both ratios; the faster clock takes fewer ``clk`` cycles per token than the one-clock core.
    """
    target, build = _target("16x16/4")
    build = build.with_name(build.name + "-mat")
    models = _models(tmp_path, target, build)
    run_cocotb(Core(target, matrix_domain="mat"), test_module="test_core", build_dir=build,
               module_dirs=[REPO / "tests" / "cocotb"],
               params={"models": models, "matrix_period_ps": matrix_period_ps})
    one_clock = _target("16x16/4")[1]
    for m in models:
        per = json.loads((build / f"counters_{m['name']}.json").read_text())
        (build / f"counters_{m['name']}_{matrix_period_ps}ps.json").write_text(json.dumps(per, indent=1))
        ref = one_clock / f"counters_{m['name']}.json"
        if matrix_period_ps < 10_000 and m["name"] == "ecp5" and ref.is_file():
            assert per["cycles"] < json.loads(ref.read_text())["cycles"]


@pytest.mark.parametrize("change, msg", [
    (dict(rows=8), "vec_lanes must divide rows and cols, got 8 x 16 with vec_lanes 16"),
    (dict(cols=12, vec_lanes=4), "cols must be a power of two, got 12"),
    (dict(vec_lanes=3), "vec_lanes must be a power of two, got 3"),
    (dict(max_input=None), "max_input must be set"),
])
def test_core_constructor_errors(change, msg):
    t = dataclasses.replace(targets.get(TARGET), **change)
    with pytest.raises(ValueError, match=msg):
        Core(t)


@pytest.mark.parametrize("domain", ["", "mat-clk", 3])
def test_core_matrix_domain_checked(domain):
    with pytest.raises(ValueError, match="matrix_domain must be a clock domain name, not"):
        Core(targets.get(TARGET), matrix_domain=domain)


def test_core_needs_depths():
    with pytest.raises(ValueError, match="memory wmem has no depth; size it to the model first"):
        Core(targets.get("sim"))
