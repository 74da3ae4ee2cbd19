# amaranth: UnusedElaboratable=no
"""The micro-CPU (hw/ucpu.py) under cocotb on Verilator against the ISS (tests/cocotb/test_ucpu.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmfree import firmware
from mmfree.hw.ucpu import UCpu
from mmfree.sim.runner import run_cocotb

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "cocotb"


def _run(params, testcase=None):
    words = list(firmware.build().words)
    design = {"fw": UCpu(words), "rp": UCpu(words, writable=True)}
    run_cocotb(design, test_module="test_ucpu", build_dir=BUILD / "ucpu",
               module_dirs=[REPO / "tests" / "cocotb"], params=params, testcase=testcase)


def test_ucpu_cocotb(tiny_icebreaker):
    _run({"programs": 300, "seed": 1, "model": str(tiny_icebreaker), "tokens": [3, 17, 39]})


@pytest.mark.slow
def test_ucpu_many_random_programs_cocotb(tiny_icebreaker):
    _run({"programs": 4000, "seed": 77, "model": str(tiny_icebreaker)}, testcase="test_random_programs")


def test_ucpu_rejects_bad_roms():
    with pytest.raises(ValueError, match="rom has 513 words; the ROM holds 512"):
        UCpu([0] * 513)
    with pytest.raises(ValueError, match="at least one ROM word"):
        UCpu([])
    with pytest.raises(ValueError, match="rom word 2 = -1 is not a 32-bit"):
        UCpu([0, 0, -1])
