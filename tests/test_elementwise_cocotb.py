# amaranth: UnusedElaboratable=no
"""Epilogue blocks under cocotb on Verilator (tests/cocotb/test_elementwise.py), plus constructor checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmfree.hw.elementwise import Dequant, GLUCell, MLGRUCell, ResidualAdd
from mmfree.sim.runner import run_cocotb

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "cocotb"


def _run(n_bulk: int, testcase=None):
    design = {"dq": Dequant(), "mlgru": MLGRUCell(), "glu": GLUCell(), "add": ResidualAdd()}
    run_cocotb(design, test_module="test_elementwise", build_dir=BUILD / "elementwise",
               module_dirs=[REPO / "tests" / "cocotb"], params={"n_bulk": n_bulk}, testcase=testcase)


def test_elementwise_cocotb():
    _run(n_bulk=10000)


@pytest.mark.slow
def test_elementwise_bulk_cocotb():
    _run(n_bulk=300000, testcase="test_bulk")


@pytest.mark.parametrize("kw", [{"acc_bits": 1}, {"acc_bits": 33}, {"acc_bits": 24.0}, {"acc_bits": True},
                                {"exp_bits": 0}, {"exp_bits": 40}, {"exp_bits": "18"}])
def test_dequant_rejects(kw):
    with pytest.raises(ValueError, match="must be an integer"):
        Dequant(**kw)


def test_dequant_widths():
    d = Dequant(acc_bits=16, exp_bits=16)
    assert len(d.i.payload.acc) == 16 and len(d.i.payload.e) == 16 and len(d.o.payload) == 32
