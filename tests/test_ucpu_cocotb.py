# amaranth: UnusedElaboratable=no
"""The micro-CPU (hw/ucpu.py) under cocotb on Verilator against the ISS (tests/cocotb/test_ucpu.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmfree import firmware
from mmfree.compiler.compile import compile_checkpoint
from mmfree.config import ModelConfig
from mmfree.hw.ucpu import UCpu
from mmfree.model.checkpoint import random_checkpoint
from mmfree.sim.runner import run_cocotb

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "cocotb"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("ucpu")
    cfg = ModelConfig(vocab_size=40, hidden_size=12, num_hidden_layers=1, intermediate_size=16)
    ck = random_checkpoint(d / "ck", cfg, seed=4)
    compile_checkpoint(ck, "icebreaker", d / "c")
    return d / "c"


def _run(params, testcase=None):
    words = list(firmware.build().words)
    design = {"fw": UCpu(words), "rp": UCpu(words, writable=True)}
    run_cocotb(design, test_module="test_ucpu", build_dir=BUILD / "ucpu",
               module_dirs=[REPO / "tests" / "cocotb"], params=params, testcase=testcase)


def test_ucpu_cocotb(tiny):
    _run({"programs": 300, "seed": 1, "model": str(tiny), "tokens": [3, 17, 39]})


@pytest.mark.slow
def test_ucpu_many_random_programs_cocotb(tiny):
    _run({"programs": 4000, "seed": 77, "model": str(tiny)}, testcase="test_random_programs")


def test_ucpu_rejects_bad_roms():
    with pytest.raises(ValueError, match="rom has 513 words; the ROM holds 512"):
        UCpu([0] * 513)
    with pytest.raises(ValueError, match="at least one ROM word"):
        UCpu([])
    with pytest.raises(ValueError, match="rom word 2 = -1 is not a 32-bit"):
        UCpu([0, 0, -1])
