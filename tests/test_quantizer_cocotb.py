# amaranth: UnusedElaboratable=no
"""Stats and quant passes under cocotb on Verilator (tests/cocotb/test_quantizer.py), plus constructor checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmfree.hw.quantizer import QuantPass, StatsPass
from mmfree.sim.runner import run_cocotb

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "cocotb"


def _run(params, testcase=None):
    design = {"st": StatsPass(lanes=4, quants=3), "st1": StatsPass(lanes=1, quants=1),
              "qp": QuantPass(lanes=4), "qp1": QuantPass(lanes=1)}
    run_cocotb(design, test_module="test_quantizer", build_dir=BUILD / "quantizer",
               module_dirs=[REPO / "tests" / "cocotb"], params=params, testcase=testcase)


def test_quantizer_cocotb():
    _run({"vectors": 12})


@pytest.mark.slow
def test_quantizer_many_cocotb():
    _run({"vectors": 300, "seed": 77}, testcase="test_vectors")


@pytest.mark.parametrize("cls,kw,match", [
    (StatsPass, {"lanes": 0}, "lanes"), (StatsPass, {"lanes": 257}, "lanes"), (StatsPass, {"lanes": 2.0}, "lanes"),
    (StatsPass, {"quants": 0}, "quants"), (StatsPass, {"quants": 4}, "quants"), (StatsPass, {"quants": True}, "quants"),
    (QuantPass, {"lanes": 0}, "lanes"), (QuantPass, {"lanes": "4"}, "lanes"),
])
def test_constructor_rejects(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls(**kw)


def test_latency_attributes():
    assert StatsPass(lanes=1).LATENCY == 6
    assert StatsPass(lanes=16).LATENCY == 10
    assert StatsPass(lanes=5).LATENCY == 9
    assert QuantPass(lanes=3).LATENCY == 6
