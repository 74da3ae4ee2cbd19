"""Post-synthesis check: the SoC's ECP5 netlist, on Yosys's cell models, equals the golden machine.

The SoC top of the Verilator harness (link path, command decoder, a 2 x 2-lane
core with memories sized to a small random model: two layers, lower bounds
on, d and I not multiples of the lanes) goes through the bitstream flow's
synthesis, ``synth_ecp5 -nodsp`` (Yosys has no simulation model of
MULT18X18D), into LUT4, CCU2C, PFUMX, TRELLIS_FF, distributed-RAM and DP16KD
cells. Verilator compiles that netlist with ``share/ecp5/cells_sim.v``; the
host driver loads the model over the link and every step's top-k and head
scale must equal the golden machine's. Slow (tens of minutes: synthesis,
then the C++ of some 75k cells): ``make test-slow``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mmfree import targets
from mmfree.compiler.compile import compile_checkpoint
from mmfree.config import ModelConfig
from mmfree.errors import ToolError
from mmfree.host.driver import Device
from mmfree.host.generate import Lockstep
from mmfree.model.checkpoint import random_checkpoint
from mmfree.sim import harness as H
from mmfree.sim.netlist import cell_models, synth_netlist

CONFIG = dict(vocab_size=40, hidden_size=10, num_hidden_layers=2, intermediate_size=14, use_lower_bound=True)
PROMPT = b"def f(x):"


@pytest.mark.slow
def test_ecp5_netlist_equals_golden(tmp_path):
    sim2 = dataclasses.replace(targets.get("sim").with_lanes(2, 2), vec_lanes=2, topk=2)
    ckpt = random_checkpoint(tmp_path / "ckpt", ModelConfig(rms_norm_eps=1e-6, **CONFIG), seed=5)
    d = tmp_path / "compiled"
    compile_checkpoint(ckpt, sim2, out=d)
    exe = H.build(d, netlist="ecp5", trace=False, max_payload=256, log=print)
    cells = json.loads((exe.parent / "netlist_stat.json").read_text())["design"]["num_cells_by_type"]
    print("netlist cells:", cells)
    assert cells.get("TRELLIS_FF", 0) > 1000 and cells.get("CCU2C", 0) > 0 and cells.get("TRELLIS_DPR16X4", 0) > 0
    modelled = {"LUT4", "PFUMX", "L6MUX21", "CCU2C", "TRELLIS_FF", "TRELLIS_DPR16X4", "$scopeinfo"}
    assert set(cells) <= modelled, f"cells without a simulation model: {set(cells) - modelled}"
    with H.Harness(binary=exe) as h, Device(h.url, timeout=20.0, step_timeout=300.0, settle=0.5) as dev:
        dev.load_compiled(d)
        check = Lockstep(d, dev.info().topk)
        dev.reset_state()
        check.reset()
        for tok in PROMPT:
            check(tok % CONFIG["vocab_size"], dev.step(tok % CONFIG["vocab_size"]))
    assert check.index == len(PROMPT)


def test_cell_models_found():
    model, share = cell_models("ecp5")
    assert model.name == "cells_sim.v" and (share / "common_sim.vh").is_file()
    with pytest.raises(ValueError, match="netlist simulation supports ecp5, got 'ice40'"):
        cell_models("ice40")


def test_synth_netlist_error(tmp_path: Path):
    with pytest.raises(ToolError, match=r"yosys synth_ecp5 -nodsp -nobram of top failed \(exit 1\); log .*yosys\.log"):
        synth_netlist("this is not rtlil\n", "top", tmp_path)
