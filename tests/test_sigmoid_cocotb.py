# amaranth: UnusedElaboratable=no
"""Sigmoid and SiLU under cocotb on Verilator (tests/cocotb/test_sigmoid.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from amaranth.hdl import Module
from amaranth.lib import stream

from mmfree.hw.sigmoid import Sigmoid, SiLU, stream_pipeline
from mmfree.sim.runner import run_cocotb

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "cocotb"


def _run(n_bulk: int, testcase=None):
    run_cocotb({"sig": Sigmoid(), "silu": SiLU()}, test_module="test_sigmoid", build_dir=BUILD / "sigmoid",
               module_dirs=[REPO / "tests" / "cocotb"], params={"n_bulk": n_bulk}, testcase=testcase)


def test_sigmoid_silu_cocotb():
    _run(n_bulk=10000)


@pytest.mark.slow
def test_sigmoid_silu_bulk_cocotb():
    _run(n_bulk=500000, testcase="test_bulk")


@pytest.mark.parametrize("latency", [0, -1])
def test_stream_pipeline_rejects(latency):
    i, o = stream.Signature(8).flip().create(), stream.Signature(8).create()
    with pytest.raises(ValueError, match="latency must be >= 1"):
        stream_pipeline(Module(), i, o, latency)


def test_latencies():
    assert (Sigmoid.LATENCY, SiLU.LATENCY) == (6, 9)
    assert len(Sigmoid().o.payload) == 17 and Sigmoid().i.payload.shape().signed
