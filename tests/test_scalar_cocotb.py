"""Scalar units under cocotb on Verilator (tests/cocotb/test_scalar.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmfree.hw.scalar import OutputScale, QuantRecip, SumSqSqrt
from mmfree.sim.runner import run_cocotb

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "cocotb"


def _run(params, testcase=None):
    design = {"recip": QuantRecip(), "sqrt": SumSqSqrt(), "scale": OutputScale()}
    run_cocotb(design, test_module="test_scalar", build_dir=BUILD / "scalar",
               module_dirs=[REPO / "tests" / "cocotb"], params=params, testcase=testcase)


def test_scalar_cocotb():
    _run({"vectors": 12})


@pytest.mark.slow
def test_scalar_chain_many_cocotb():
    _run({"vectors": 500, "seed": 99}, testcase="test_chain_against_golden")
