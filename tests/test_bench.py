"""``mmfree bench``: roofline math, link bytes against the protocol encoders, build-report reading,
report writing from a measured dict, the PNG writer; ``slow``: ``mmfree bench --quick`` end to end."""

from __future__ import annotations

import dataclasses

import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from mmfree import protocol as P
from mmfree.errors import MmfreeError
from mmfree.config import ModelConfig, default_intermediate_size
from mmfree.host import bench as B

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- arithmetic

def test_roofline_cycles():
    assert B.roofline_cycles(1_474_560, 256) == 5760
    assert B.roofline_cycles(1_474_561, 256) == 5761
    assert B.roofline_cycles(0, 256) == 0
    assert B.roofline_cycles(451_000, 20) == math.ceil(451_000 / 20)
    with pytest.raises(ValueError):
        B.roofline_cycles(10, 0)


def test_manifest_trits_of_a_compiled_model(tmp_path):
    from mmfree.compiler.compile import compile_checkpoint

    res = compile_checkpoint("ecp5", "ulx3s-85f", tmp_path / "c")
    man = res.manifest
    config = ModelConfig.from_json(man["model"])
    assert B.manifest_trits(man) == config.n_trits
    d, i, v, nl = config.hidden_size, config.intermediate_size, config.vocab_size, config.num_hidden_layers
    assert B.manifest_trits(man, {"head"}) == v * d
    assert B.manifest_trits(man, lambda n: n.startswith("layers.0.")) == 4 * d * d + 2 * i * d + d * i
    assert sum(B.manifest_trits(man, lambda n, l=l: n.startswith(f"layers.{l}.")) for l in range(nl)) \
        + v * d == config.n_trits


def test_manifest_trits_synthetic():
    man = {"linears": [{"name": "a", "n": 10, "segments": [{"rows": 3}, {"rows": 4}]},
                       {"name": "head", "n": 5, "segments": [{"rows": 7}]}]}
    assert B.manifest_trits(man) == 10 * 7 + 35
    assert B.manifest_trits(man, ["a"]) == 70


def test_block_config_follows_the_official_rule():
    c = B.block_config()
    assert (c.hidden_size, c.num_hidden_layers) == (512, 1)
    assert c.intermediate_size == default_intermediate_size(512) == 256 * math.ceil(int(512 * 4 * 2 / 3) / 256)
    assert c.intermediate_size == 1536


def test_per_token():
    names = P.COUNTER_NAMES
    c0 = dict.fromkeys(names, 0) | {"cycles": 1000, "tokens": 3}
    c1 = {"cycles": 1000 + 4 * 130 + 77, "tokens": 7, "embed": 40, "stats": 80, "quant": 40, "matrix": 200,
          "drain": 80, "head": 80}
    pt = B.per_token(c0, c1)
    assert pt["tokens"] == 4
    assert pt["matrix"] == 50 and pt["head"] == 20
    assert pt["busy"] == sum(c1[c] for c in B.CLASSES) / 4 == 130
    assert pt["span"] == (4 * 130 + 77) / 4
    with pytest.raises(Exception, match="did not advance"):
        B.per_token(c0, c0)


def test_core_support_names_the_reason():
    import gc

    from mmfree.targets import get

    assert B._core_support(get("icebreaker")) is None             # the serial core
    assert B._core_support(get("ulx3s-85f")) is None
    assert "cols must be a power of two, got 12" in B._core_support(get("ulx3s-85f").with_lanes(16, 12))
    odd = dataclasses.replace(get("icebreaker"), topk=8)
    assert "the serial core needs topk = 4" in B._core_support(odd)
    gc.collect()                       # no UnusedElaboratable from either core (warnings are errors here)


# --------------------------------------------------------------------------- link

@pytest.mark.parametrize("k", [1, 4, 8, 255])
def test_link_bytes_match_the_encoders(k):
    ids = list(range(k))
    accs = [(-1) ** j * 1000 * j for j in range(k)]
    frame = P.encode_frame(P.Reply.TOPK, P.TopK(ids, accs, 123, -5).pack())
    assert P.TopK.unpack(P.decode_frame(frame).payload).ids == tuple(ids)
    lb = B.link_bytes(k, 32)
    assert lb["topk_frame"] == len(frame) == P.OVERHEAD + 5 + 6 * k
    gen = P.encode_frame(P.Command.GENERATE, P.Generate(10, 32).pack())
    done = P.encode_frame(P.Reply.GENERATE_DONE, P.GenerateDone(32).pack())
    step = P.encode_frame(P.Command.STEP, P.Step(10).pack())
    assert (lb["generate_frame"], lb["done_frame"], lb["step_frame"]) == (len(gen), len(done), len(step))
    assert lb["generate_down"] == pytest.approx(len(frame) + len(done) / 32)
    assert lb["generate_up"] == pytest.approx(len(gen) / 32)
    assert lb["generate_total"] == pytest.approx(lb["generate_down"] + lb["generate_up"])
    assert lb["step_total"] == len(frame) + len(step)


def test_link_bound_tps():
    assert B.link_bound_tps(59, 3_000_000) == pytest.approx(3_000_000 / 10 / 59)
    lb = B.link_bytes(8, 1)
    assert lb["generate_down"] == 59 + 8          # one token carries the whole GENERATE_DONE
    with pytest.raises(ValueError):
        B.link_bytes(8, 0)


# --------------------------------------------------------------------------- build reports

def _report(path: Path, **kw) -> Path:
    rep = {"board": "ulx3s-85f", "status": "built", "lanes": 256,
           "target": {"rows": 16, "cols": 16, "clock_hz": 100_000_000}, "fmax": {}} | kw
    path.mkdir(parents=True, exist_ok=True)
    (path / "report.json").write_text(json.dumps(rep))
    return path / "report.json"


def test_read_fmax(tmp_path):
    from mmfree.targets import get

    t = get("ulx3s-85f")
    r = B.read_fmax("ulx3s-85f", tmp_path, t)
    assert not r["available"] and r["reason"] == "no build report"
    assert r["file"].endswith("ulx3s-85f/report.json")
    _report(tmp_path / "ulx3s-85f", status="started")
    r = B.read_fmax("ulx3s-85f", tmp_path, t)
    assert not r["available"] and "no Fmax" in r["reason"] and "started" in r["reason"]
    _report(tmp_path / "ulx3s-85f", fmax={
        "$glbnet$clk25": {"achieved_mhz": 180.0, "constraint_mhz": 25.0, "met": True},
        "$glbnet$sync_clk": {"achieved_mhz": 71.3, "constraint_mhz": 100.0, "met": False}})
    r = B.read_fmax("ulx3s-85f", tmp_path, t)
    assert r["available"] and r["clock"] == "$glbnet$sync_clk" and r["achieved_mhz"] == 71.3
    assert r["met"] is False
    _report(tmp_path / "ulx3s-85f", target={"rows": 8, "cols": 8, "clock_hz": 100_000_000},
            fmax={"clk": {"achieved_mhz": 90.0, "constraint_mhz": 100.0, "met": False}})
    r = B.read_fmax("ulx3s-85f", tmp_path, t)
    assert not r["available"] and "8x8" in r["reason"]
    # same array, other vector lanes: not this configuration's Fmax either
    _report(tmp_path / "ulx3s-85f", target={"rows": 16, "cols": 16, "vec_lanes": 4, "clock_hz": 40_000_000},
            fmax={"clk": {"achieved_mhz": 41.0, "constraint_mhz": 40.0, "met": True}})
    r = B.read_fmax("ulx3s-85f", tmp_path, t)
    assert not r["available"] and r["reason"] == ("build report is for 16x16/4 lanes, the benchmark ran "
                                                  "16x16/16")
    _report(tmp_path / "ulx3s-85f", status="placed, routing not finished (provisional)",
            fmax_stage="after placement (nextpnr estimate)",
            fmax={"clk": {"achieved_mhz": 6.83, "constraint_mhz": 100.0, "met": False}})
    r = B.read_fmax("ulx3s-85f", tmp_path, t)
    assert not r["available"] and r["reason"].startswith("build report is not routed (status: placed, routing")
    # a two-clock build: the clocks it was built at, met or not, go with the harness run at their ratio
    _report(tmp_path / "ulx3s-85f", target={"rows": 16, "cols": 16, "clock_hz": 30_000_000,
                                            "matrix_clock_hz": 100_000_000},
            fmax={"clk": {"achieved_mhz": 43.9, "constraint_mhz": 30.0, "met": True},
                  "mat_clk": {"achieved_mhz": 104.0, "constraint_mhz": 100.0, "met": True}})
    r = B.read_fmax("ulx3s-85f", tmp_path, t)
    assert r["available"] and r["clock"] == "clk" and r["met"] is True
    assert (r["clock_hz"], r["matrix_clock_hz"], r["clocks"]) == (30_000_000, 100_000_000,
                                                                  {"clk": 43.9, "mat_clk": 104.0})
    _report(tmp_path / "ulx3s-85f", target={"rows": 16, "cols": 16, "clock_hz": 30_000_000,
                                            "matrix_clock_hz": 100_000_000},
            fmax={"clk": {"achieved_mhz": 43.9, "constraint_mhz": 30.0, "met": True},
                  "mat_clk": {"achieved_mhz": 90.8, "constraint_mhz": 100.0, "met": False}})
    assert B.read_fmax("ulx3s-85f", tmp_path, t)["met"] is False


def test_read_fmax_other_tile(tmp_path):
    from mmfree.compiler.compile import resolve_target

    t8 = resolve_target("ulx3s-85f", "8x8")
    _report(tmp_path / "ulx3s-85f", fmax={"clk": {"achieved_mhz": 20.0, "constraint_mhz": 100.0, "met": False}})
    r = B.read_fmax("ulx3s-85f", tmp_path, t8)
    assert not r["available"] and r["reason"] == "no build report"
    assert r["file"].endswith("ulx3s-85f-8x8/report.json")
    _report(tmp_path / "ulx3s-85f-8x8", lanes=64, target={"rows": 8, "cols": 8, "clock_hz": 30_000_000},
            fmax={"clk": {"achieved_mhz": 31.5, "constraint_mhz": 30.0, "met": True}})
    r = B.read_fmax("ulx3s-85f", tmp_path, t8)
    assert r["available"] and r["achieved_mhz"] == 31.5 and r["met"] is True
    # the board's own tile still reads bitstreams/BOARD
    assert B.read_fmax("ulx3s-85f", tmp_path, resolve_target("ulx3s-85f"))["achieved_mhz"] == 20.0


def test_parse_model_spec():
    assert B.parse_model_spec("ecp5") == ("ecp5", "ulx3s-85f", None)
    assert B.parse_model_spec("ecp5@8x8") == ("ecp5", "ulx3s-85f", "8x8")
    with pytest.raises(MmfreeError, match=r"unknown model 'tiny'; benchmarked models: ecp5, ice40"):
        B.parse_model_spec("tiny@8x8")
    with pytest.raises(MmfreeError, match=r"'ecp5@8': the tile after @ must look like ROWSxCOLS"):
        B.parse_model_spec("ecp5@8")
    with pytest.raises(MmfreeError, match="unknown model"):
        B.run_bench(models=("ecp5", "nope"))          # checked before anything runs


# --------------------------------------------------------------------------- report writing

def _measured() -> dict:
    """A report dict shaped as run_bench returns it (numbers made up for the test only)."""
    classes = {"embed": 100.0, "stats": 900.0, "quant": 500.0, "matrix": 6000.0, "drain": 1000.0, "head": 300.0}
    pt = dict(classes, busy=sum(classes.values()), span=9100.0, tokens=8)
    link = B.link_bytes(8, 8) | {"baud": 3_000_000}
    link["generate_bound_tps"] = B.link_bound_tps(link["generate_down"], 3_000_000)
    host = {"harness_tps": 9.5, "golden_model_tps": 900.0, "golden_machine_tps": 300.0, "float_tps": 700.0,
            "torch_threads": 2}
    fmax = {"file": str(REPO / "bitstreams/ulx3s-85f/report.json"), "available": True, "clock": "sync",
            "achieved_mhz": 62.5, "constraint_mhz": 100.0, "met": False}
    ecp5 = {"model": "ecp5", "target": "ulx3s-85f", "board": "ulx3s-85f", "rows": 16, "cols": 16, "lanes": 256,
            "vec_lanes": 16, "topk": 8, "clock_hz": 100_000_000, "supported": True, "reasons": [],
            "n_trits": 1_474_560, "padded_tiles": 5760, "roofline_cycles": 5760, "baud": 3_000_000,
            "fmax": fmax, "per_token": pt, "cycles_per_token": pt["busy"], "utilization": 5760 / pt["busy"],
            "link": link, "compute_bound_tps": 62.5e6 / pt["busy"],
            "projected_tps": min(62.5e6 / pt["busy"], link["generate_bound_tps"]),
            "target_clock_tps": 1e8 / pt["busy"], "check": "bit-exact: 8 steps equal the golden machine",
            "check_ok": True, "host": host, "summary": "simtop: ...", "generate_s": 0.8}
    ice40 = {"model": "ice40", "target": "icebreaker", "board": "icebreaker", "rows": 4, "cols": 5, "lanes": 20,
             "vec_lanes": 1, "topk": 4, "clock_hz": 24_000_000, "supported": False,
             "reasons": ["core: needs rows == cols == vec_lanes"], "not_supported": "core: needs rows == cols",
             "n_trits": 450_560, "roofline_cycles": 22_528, "baud": 3_000_000,
             "fmax": {"file": str(REPO / "bitstreams/icebreaker/report.json"), "available": False,
                      "reason": "no build report"}}
    bpt = dict(classes, matrix=13_400.0, busy=sum(classes.values()) - 6000 + 13_400, span=17_000.0, tokens=8)
    block = {"config": B.block_config().to_json(), "target": "sim", "rows": 16, "cols": 16, "lanes": 256,
             "n_trits_block": 3_407_872, "n_trits_model": 3_538_944, "roofline_cycles": 13_312,
             "fits_ulx3s_85f": {"max_input": 1024, "needs_input": 1536, "weight_capacity_trits": 1_572_864,
                                "needs_trits": 3_538_944},
             "per_token": bpt, "block_cycles": bpt["busy"] - 400, "check": "bit-exact", "check_ok": True,
             "host": host, "fmax": fmax}
    block["utilization"] = 13_312 / block["block_cycles"]
    block["paper"] = dict(B.PAPER_BLOCK, cycles=43e-3 * 61e6)
    block["cycle_ratio"] = block["paper"]["cycles"] / block["block_cycles"]
    block["ms_at_fmax"] = block["block_cycles"] / 62.5e6 * 1e3
    block["speedup_at_fmax"] = 43.0 / block["ms_at_fmax"]
    block["ms_at_paper_clock"] = block["block_cycles"] / 61e6 * 1e3
    c370 = {"trits": ModelConfig(32000, 1024, 24, 2816).n_trits, "seconds": 41.5, "peak_rss_mb": 2900.0,
            "budget_seconds": 60.0, "budget_rss_mb": 4096.0, "within_budget": True, "checkpoint": "/x/ckpt",
            "steps": {"load": 10.0, "write": 3.0}}
    return {"benchmark": "mmfree bench", "format": 1,
            "environment": {"date": "2026-11-29T21:00:00+00:00", "source": {"commit": "a" * 40, "changed": []},
                            "python": "3.11", "machine": "x86_64", "processor": "x86_64", "cpus": 2,
                            "numpy": np.__version__, "torch": "2.13"},
            "settings": {"models": ["ecp5", "ice40"], "tokens": 8, "quick": False},
            "models": [ecp5, ice40], "block": block, "compile_370m": c370, "seconds": 300.0}


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF, tag
        out.append((tag, body))
        pos += 12 + n
    assert out[0][0] == b"IHDR" and out[-1][0] == b"IEND"
    return out


def test_write_png_is_valid(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(7, 11, 3), dtype=np.uint8)
    path = B.write_png(tmp_path / "x.png", img)
    chunks = _png_chunks(path.read_bytes())
    w, h, depth, ctype, *_ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (w, h, depth, ctype) == (11, 7, 8, 2)
    raw = zlib.decompress(b"".join(b for t, b in chunks if t == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(7, 1 + 11 * 3)
    assert (rows[:, 0] == 0).all()
    assert np.array_equal(rows[:, 1:].reshape(7, 11, 3), img)
    with pytest.raises(ValueError):
        B.write_png(tmp_path / "y.png", np.zeros((3, 3)))


def test_report_from_a_measured_dict(tmp_path):
    rep = _measured()
    files = B.write_report(rep, tmp_path / "bench", tmp_path / "extra.json", use_matplotlib=False)
    md = files["markdown"].read_text()
    assert json.loads(files["json"].read_text()) == json.loads((tmp_path / "extra.json").read_text())
    back = json.loads(files["json"].read_text())
    assert back["models"][0]["per_token"]["busy"] == rep["models"][0]["per_token"]["busy"]
    # the table rows carry the measured numbers
    assert "| ecp5 | ulx3s-85f | 256 | 1,474,560 | 5,760 | 8,800 | 65.5 % |" in md
    assert "| ice40 | icebreaker | 20 | 450,560 | 22,528 | not supported: core: needs rows == cols |" in md
    assert "62.5 MHz (sync, 100 MHz not met, `bitstreams/ulx3s-85f/report.json`)" in md
    assert "no build report (`bitstreams/icebreaker/report.json`)" in md
    assert f"{rep['models'][0]['projected_tps']:,.0f}" in md
    assert "| ecp5 | 9.5 | 900.0 | 300.0 | 700.0 |" in md
    assert "paper core (cited) | 2,623,000 |" in md
    assert "| 41.5 | 2,900 |" in md
    assert "![cycles per token](cycles.png)" in md
    assert "Drawn without matplotlib" in md
    _png_chunks(files["plot"].read_bytes())


def test_report_without_fmax_and_quick(tmp_path):
    rep = _measured()
    for r in rep["models"]:
        r["fmax"] = {"file": str(REPO / "bitstreams/x/report.json"), "available": False, "reason": "no build report"}
        r.pop("compute_bound_tps", None)
        r.pop("projected_tps", None)
    b = rep["block"]
    b["fmax"] = rep["models"][0]["fmax"]
    del b["ms_at_fmax"], b["speedup_at_fmax"]
    rep["compile_370m"] = {"skipped": "--quick"}
    md = B.report_markdown(rep, None)
    assert "no build report" in md and "Skipped (--quick)." in md
    assert f"at the paper's 61 MHz" in md
    assert "cycles.png" not in md


def test_report_two_clocks(tmp_path):
    """A two-clock build: the board's rate is the built sync clock over the cycles counted at the clocks'
    ratio, and the tables name both clocks."""
    rep = _measured()
    r = rep["models"][0]
    r["fmax"] = {"file": str(REPO / "bitstreams/ulx3s-85f-16x16v4/report.json"), "available": True, "clock": "clk",
                 "achieved_mhz": 43.92, "constraint_mhz": 30.0, "met": True, "clock_hz": 30_000_000,
                 "matrix_clock_hz": 100_000_000, "clocks": {"clk": 43.92, "mat_clk": 104.03},
                 "source": {"commit": "b" * 40}}
    r["compute_bound_tps"] = 30e6 / r["cycles_per_token"]
    r["projected_tps"] = min(r["compute_bound_tps"], r["link"]["generate_bound_tps"])
    md = B.report_markdown(rep, None)
    assert ("two clocks built at 30 / 100 MHz (43.9, 104.0 MHz achieved, both met, built from `bbbbbbb`, "
            "`bitstreams/ulx3s-85f-16x16v4/report.json`)") in md
    assert f"{r['projected_tps']:,.0f} (30 / 100 MHz, both met)" in B.readme_section(rep)
    r["fmax"]["met"] = False
    del r["compute_bound_tps"], r["projected_tps"]
    assert "– (timing not met)" in B.readme_section(rep)


def test_readme_section():
    rep = _measured()
    sec = B.readme_section(rep)
    assert sec.startswith("## Benchmarks\n")
    assert "| ecp5 | ulx3s-85f | 1,474,560 | 256 | 5,760 | 8,800 | 65.5 % |" in sec
    assert f"{rep['models'][0]['projected_tps']:,.0f} (62.5 MHz)" in sec
    assert "| ice40 | icebreaker | 450,560 | 20 | 22,528 | not supported: core: needs rows == cols == vec_lanes |" in sec
    assert "(bench/cycles.png)" in sec and "41.5 s" in sec and "2,623,000 cycles" in sec


def test_plot_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    note = B.plot_cycles(_measured(), tmp_path / "c.png", use_matplotlib=True)
    assert note.startswith("matplotlib")
    _png_chunks((tmp_path / "c.png").read_bytes())


def test_plot_fallback(tmp_path):
    note = B.plot_cycles(_measured(), tmp_path / "c.png", use_matplotlib=False)
    chunks = _png_chunks((tmp_path / "c.png").read_bytes())
    assert struct.unpack(">II", chunks[0][1][:8]) == (640, 400)
    assert "ecp5 / ulx3s-85f" in note and "not supported" in note


def test_cli_registered():
    from mmfree.cli import build_parser

    parser, runners = build_parser()
    args = parser.parse_args(["bench", "--quick", "--models", "ecp5", "--json", "x.json"])
    assert args.quick and args.models == "ecp5" and args.json == "x.json" and "bench" in runners


def test_cli_rejects_unknown_model(tmp_path, capsys):
    from mmfree.cli import main

    assert main(["bench", "--models", "nope", "--no-block", "--quick", "-o", str(tmp_path)]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err


# --------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_bench_quick_end_to_end(tmp_path):
    """``mmfree bench --quick``: harness builds (cached), 8 tokens per model and for the d=512 block."""
    from mmfree.cli import main

    assert main(["bench", "--quick", "-o", str(tmp_path / "bench"), "--json", str(tmp_path / "r.json")]) == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["settings"]["tokens"] == 8 and rep["compile_370m"] == {"skipped": "--quick"}
    ecp5, ice40 = rep["models"]
    assert ecp5["supported"] and ecp5["check_ok"], ecp5.get("check")
    assert ecp5["per_token"]["tokens"] == 8
    assert ecp5["n_trits"] == ModelConfig.from_json(
        json.loads((REPO / "mmfree/models/ecp5/config.json").read_text())).n_trits
    assert ecp5["roofline_cycles"] == math.ceil(ecp5["n_trits"] / 256)
    assert 0 < ecp5["utilization"] <= 1
    assert ecp5["per_token"]["matrix"] + ecp5["per_token"]["head"] >= ecp5["roofline_cycles"] * 0.9
    assert ecp5["host"]["harness_tps"] > 0 and ecp5["host"]["float_tps"] > 0
    assert not ice40["supported"] and ice40["not_supported"]
    b = rep["block"]
    assert b["check_ok"], b.get("check")
    assert b["block_cycles"] >= b["roofline_cycles"]
    md = (tmp_path / "bench" / "report.md").read_text()
    assert "not supported" in md and "d=512" in md
    _png_chunks((tmp_path / "bench" / "cycles.png").read_bytes())


def test_read_fmax_skips_constant_nets(tmp_path):
    # nextpnr-ice40 reports the GND net on unused block-RAM clock pins as a clock; the core clock is clk
    from mmfree.targets import get

    d = tmp_path / "icebreaker"
    d.mkdir()
    fmax = {"$PACKER_GND_NET_$glb_clk": {"achieved_mhz": 256.1, "constraint_mhz": 12, "met": True},
            "clk": {"achieved_mhz": 18.81, "constraint_mhz": 12.0, "met": True}}
    (d / "report.json").write_text(json.dumps({"status": "built", "fmax": fmax, "target": {
        "rows": 5, "cols": 4, "vec_lanes": 1, "clock_hz": 12_000_000}}))
    f = B.read_fmax("icebreaker", tmp_path, get("icebreaker"))
    assert f["available"] and (f["clock"], f["achieved_mhz"]) == ("clk", 18.81)
