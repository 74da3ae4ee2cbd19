"""Benchmarks: ``mmfree bench`` measures cycles per token against the roofline and the references.

One run measures everything it reports; nothing is stored between runs::

    mmfree bench                       # shipped models ecp5, ice40; 32 tokens; 370M compile; -> bench/
    mmfree bench --quick               # 8 tokens, no 370M compile
    mmfree bench --models ecp5 --tokens 64 --json out.json
    mmfree bench --models ecp5,ecp5@8x8  # also the ULX3S target with 8 x 8 lanes

For each shipped model and its target (``ecp5`` on ``ulx3s-85f``, ``ice40``
on ``icebreaker``, :data:`MODEL_TARGETS`; ``MODEL@RxC`` runs the model's
target with another tile, :data:`DEFAULT_MODELS` includes ``ecp5@8x8``):

* **Cycles**: the model is compiled for the target (cached), the Verilator
  harness of the SoC (:mod:`mmfree.sim.harness`) is built for it (cached)
  and started; the host driver loads the images, resets the state, reads
  the cycle counters, runs one GENERATE of ``--tokens`` steps and reads
  the counters again. Cycles per token are the counter differences over
  the token difference: per instruction class (``embed stats quant matrix
  drain head``) and their sum (the core's busy cycles). The free-running
  ``cycles`` counter also counts the time the SoC waits for the host
  between commands, so its difference is kept only as ``span`` in the
  JSON. Every step's TOPK is checked against the golden machine run from
  the same images (``check``).
* **Roofline**: ``ceil(N_trits / lanes)`` cycles per token, with ``N_trits``
  the ternary weights of every LINEAR in the compiled manifest (head
  included) and ``lanes = rows * cols``; utilization = roofline / measured.
* **Board projection**: Fmax from the last build report
  ``bitstreams/BOARD/report.json`` (``bitstreams/BOARD-RxC/`` for another
  tile; ``mmfree bitstream``) if there is one,
  and tokens per second = Fmax / cycles per token; the link's bytes per
  generated token (a TOPK frame for the target's ``k`` plus the GENERATE
  command and GENERATE_DONE frames amortized, all encoded with
  :mod:`mmfree.protocol`) and the tokens per second the board's UART
  (:data:`mmfree.hw.soc.BOARDS` baud, 8N1) can carry.
* **This machine**: tokens per second of the harness (wall clock of the
  GENERATE), of the integer golden model (:class:`~mmfree.model.golden.GoldenModel`
  and :class:`~mmfree.model.machine.GoldenMachine`, batch 1) and of the
  float PyTorch reference's recurrent step.

Then the paper's unit of work, one ``d = 512`` block forward: a random
official-format checkpoint with one layer, ``d = 512`` and the official
intermediate size (:func:`mmfree.config.default_intermediate_size`),
compiled for target ``sim`` (16 x 16 lanes, memories sized to it) and run
in the harness like the models; its block cycles are the busy cycles less
``embed`` and ``head``. The compile benchmark of the 370M-shaped checkpoint
(:func:`mmfree.compiler.bench.bench_compile_370m`) runs last (``--quick``
skips it). The report goes to ``bench/report.md``, ``bench/report.json``
and the plot ``bench/cycles.png`` (matplotlib when installed, the
``[bench]`` extra; else a small built-in PNG writer draws the bars without
text).

A target the core cannot build (the iCEBreaker's 4 x 5 lanes: the core
needs powers of two), or a model that does not fit its target, is reported
as not supported with the reason.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import re
import struct
import sys
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmfree import protocol as P
from mmfree.errors import MmfreeError

__all__ = ["MODEL_TARGETS", "DEFAULT_MODELS", "parse_model_spec", "CLASSES", "PAPER_BLOCK", "roofline_cycles",
           "manifest_trits", "per_token", "link_bytes", "link_bound_tps", "read_fmax", "block_config", "measure_harness", "host_speeds",
           "run_bench", "report_markdown", "readme_section", "write_report", "plot_cycles", "write_png", "cli"]

#: Shipped model -> the target it is benchmarked on.
MODEL_TARGETS = {"ecp5": "ulx3s-85f", "ice40": "icebreaker"}
#: what ``mmfree bench`` runs without ``--models``: the shipped models on their targets, and the
#: ULX3S at 8 x 8 lanes (the largest tile that place-and-routes there today; docs/bitstreams.md)
DEFAULT_MODELS = ("ecp5", "ice40", "ecp5@8x8", "ecp5@16x16/4")


def parse_model_spec(spec: str) -> tuple[str, str, str | None]:
    """``MODEL``, ``MODEL@RxC`` or ``MODEL@RxC/V`` -> (model, target name, lanes or None)."""
    name, _, lanes = spec.partition("@")
    if name not in MODEL_TARGETS:
        raise MmfreeError(f"unknown model {name!r}; benchmarked models: {', '.join(MODEL_TARGETS)} "
                          f"(optionally MODEL@RxC or MODEL@RxC/V for another tile)")
    if lanes and not re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*(/[1-9][0-9]*)?", lanes):
        raise MmfreeError(f"{spec!r}: the tile after @ must look like ROWSxCOLS or ROWSxCOLS/VEC "
                          f"(e.g. ecp5@8x8, ecp5@16x16/4)")
    return name, MODEL_TARGETS[name], lanes or None
#: Cycle-counter classes, in COUNTER_NAMES order (everything after cycles and tokens).
CLASSES = tuple(n for n in P.COUNTER_NAMES if n not in ("cycles", "tokens"))
#: The reference point of the paper (Zhu et al. 2024, "Scalable MatMul-free Language Modeling", FPGA
#: section): one d=512 block forward on their core. A cited figure, not a measurement of this run.
PAPER_BLOCK = {"hidden_size": 512, "ms": 43.0, "clock_mhz": 61.0,
               "source": "Zhu et al. 2024, Scalable MatMul-free Language Modeling (arXiv:2406.02528), FPGA "
                         "section, as cited in issue 8"}
#: First token fed to every GENERATE ("\n").
FIRST_TOKEN = 10
DEFAULT_TOKENS, QUICK_TOKENS = 32, 8
REPO = Path(__file__).resolve().parents[1]
_COLORS = {"embed": (0x8c, 0x56, 0x4b), "stats": (0x1f, 0x77, 0xb4), "quant": (0xff, 0x7f, 0x0e),
           "matrix": (0x2c, 0xa0, 0x2c), "drain": (0xd6, 0x27, 0x28), "head": (0x94, 0x67, 0xbd)}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the arithmetic

def roofline_cycles(n_trits: int, lanes: int) -> int:
    """Cycles per token if every lane did one useful trit every cycle: ``ceil(n_trits / lanes)``."""
    if n_trits < 0 or lanes < 1:
        raise ValueError(f"need n_trits >= 0 and lanes >= 1, got {n_trits}, {lanes}")
    return -(-int(n_trits) // int(lanes))


def manifest_trits(manifest: dict, names=None) -> int:
    """Ternary weights of the LINEARs of a compiled manifest (``n`` inputs x rows of every segment).

    ``names``: only the LINEARs whose name is in it (or, for a callable, for which it is true).
    """
    total = 0
    for lin in manifest["linears"]:
        if names is not None and not (names(lin["name"]) if callable(names) else lin["name"] in names):
            continue
        total += int(lin["n"]) * sum(int(s["rows"]) for s in lin["segments"])
    return total


def per_token(before: dict, after: dict) -> dict:
    """Counter differences per token: each class, ``busy`` (their sum) and ``span`` (the cycles counter)."""
    tokens = after["tokens"] - before["tokens"]
    if tokens <= 0:
        raise MmfreeError(f"the token counter did not advance ({before['tokens']} -> {after['tokens']})")
    out = {c: (after[c] - before[c]) / tokens for c in CLASSES}
    out["busy"] = sum(out[c] for c in CLASSES)
    out["span"] = (after["cycles"] - before["cycles"]) / tokens
    out["tokens"] = tokens
    return out


def link_bytes(k: int, tokens: int) -> dict:
    """Link bytes per generated token for a GENERATE of ``tokens`` steps with top-``k`` replies (and a STEP).

    Every frame is encoded with :mod:`mmfree.protocol` (SOF, opcode, length, payload, CRC).
    """
    if tokens < 1:
        raise ValueError(f"tokens must be >= 1, got {tokens}")
    topk = len(P.encode_frame(P.Reply.TOPK, P.TopK([0] * k, [0] * k, 0, 0).pack()))
    gen = len(P.encode_frame(P.Command.GENERATE, P.Generate(0, tokens).pack()))
    done = len(P.encode_frame(P.Reply.GENERATE_DONE, P.GenerateDone(tokens).pack()))
    step = len(P.encode_frame(P.Command.STEP, P.Step(0).pack()))
    return {"k": k, "tokens": tokens, "topk_frame": topk, "generate_frame": gen, "done_frame": done,
            "step_frame": step,
            "generate_down": topk + done / tokens, "generate_up": gen / tokens,
            "generate_total": topk + (done + gen) / tokens,
            "step_down": topk, "step_up": step, "step_total": topk + step}


def link_bound_tps(bytes_per_token: float, baud: int, bits_per_byte: int = 10) -> float:
    """Tokens per second a UART at ``baud`` (8N1: 10 bits a byte) carries at ``bytes_per_token`` one way."""
    return baud / bits_per_byte / bytes_per_token


def read_fmax(board: str, bitstreams: Path, target=None) -> dict:
    """The core clock's Fmax from ``bitstreams/BOARD/report.json``, or why there is none.

    Returns ``{"file", "available": bool, "reason"?, "clock", "achieved_mhz", "constraint_mhz", "met",
    "status", "built", "lanes"}``. The core clock is the report's only clock, else the one whose
    constraint is the target clock, else the slowest.
    """
    from mmfree.hw.bitstream import report_dir

    path = report_dir(board, target, bitstreams) / "report.json"
    out = {"file": str(path), "available": False}
    if not path.is_file():
        out["reason"] = "no build report"
        return out
    try:
        rep = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        out["reason"] = f"unreadable build report ({e})"
        return out
    out.update(status=rep.get("status"), built=rep.get("built"), lanes=rep.get("lanes"),
               source=rep.get("source"))
    fmax = rep.get("fmax") or {}
    if not fmax:
        out["reason"] = f"build report has no Fmax (status: {rep.get('status')})"
        return out
    if rep.get("fmax_stage") or "provisional" in str(rep.get("status")):
        # nextpnr's estimate after placement is not a routed Fmax
        out["reason"] = f"build report is not routed (status: {rep.get('status')})"
        return out
    if target is not None and rep.get("target", {}).get("rows") is not None:
        rt = rep["target"]
        built = (rt["rows"], rt["cols"], rt.get("vec_lanes", rt["rows"]))
        ran = (target.rows, target.cols, min(target.vec_lanes, target.rows, target.cols))
        if built != ran:
            out["reason"] = (f"build report is for {built[0]}x{built[1]}/{built[2]} lanes, the benchmark ran "
                             f"{ran[0]}x{ran[1]}/{ran[2]}")
            return out
    want = (rep.get("target", {}).get("clock_hz") or 0) / 1e6
    # nextpnr-ice40 times a constant net on block-RAM clock pins (unused write ports) as a clock of its own
    fmax = {c: v for c, v in fmax.items() if not c.startswith("$PACKER_")} or fmax
    if len(fmax) == 1:
        clk = next(iter(fmax))
    else:
        close = [c for c, v in fmax.items() if want and abs(v["constraint_mhz"] - want) < 0.5]
        clk = close[0] if close else min(fmax, key=lambda c: fmax[c]["achieved_mhz"])
    v = fmax[clk]
    out.update(available=True, clock=clk, achieved_mhz=v["achieved_mhz"], constraint_mhz=v["constraint_mhz"],
               met=v.get("met"))
    mat = rep.get("target", {}).get("matrix_clock_hz")
    if mat:
        # two clocks from one PLL: the cycles per token depend on their ratio, so the board's rate is that
        # of the built clocks (when both are met), simulated at that ratio; not of the Fmax
        out.update(matrix_clock_hz=mat, clock_hz=rep["target"]["clock_hz"],
                   met=all(x.get("met") for x in fmax.values()),
                   clocks={c: x["achieved_mhz"] for c, x in fmax.items()})
    return out


def _clocks(fm: dict) -> str:
    """``30 / 100 MHz``: a two-clock build's clock and its tile streams' clock."""
    return f"{fm['clock_hz'] / 1e6:g} / {fm['matrix_clock_hz'] / 1e6:g} MHz"


def block_config(d: int = PAPER_BLOCK["hidden_size"], vocab: int = 256):
    """One ``hgrn_bit`` layer of width ``d`` with the official intermediate size (the paper's unit of work)."""
    from mmfree.config import ModelConfig, default_intermediate_size

    return ModelConfig(vocab_size=vocab, hidden_size=d, num_hidden_layers=1,
                       intermediate_size=default_intermediate_size(d), use_lower_bound=True)


# --------------------------------------------------------------------------- measurements

def measure_harness(compiled: Path, tokens: int, log: Callable[[str], None] = _say,
                    clocks: tuple[int, int] | None = None) -> dict:
    """Build (cached) and run the harness of ``compiled``'s target; GENERATE ``tokens`` steps; counters.

    ``clocks``: ``(clock_hz, matrix_clock_hz)`` for the core whose tile streams have their own clock,
    simulated at that ratio (the counters count ``clock_hz``'s cycles)."""
    from mmfree.host.driver import Device
    from mmfree.host.generate import CheckError, Lockstep
    from mmfree.sim.harness import Harness, build, target_from_compiled

    target = target_from_compiled(compiled)
    if clocks is not None:
        target = dataclasses.replace(target, clock_hz=int(clocks[0]), matrix_clock_hz=int(clocks[1]))
    t0 = time.perf_counter()
    exe = build(target, log=log)
    build_s = time.perf_counter() - t0
    out = {"harness": str(exe), "harness_build_s": round(build_s, 2)}
    with Harness(binary=exe) as h:
        with Device(h.url, timeout=30.0, step_timeout=120.0, settle=0.5) as dev:
            t0 = time.perf_counter()
            dev.load_compiled(compiled)
            out["load_s"] = round(time.perf_counter() - t0, 2)
            info = dev.info()
            dev.reset_state()
            c0 = dev.counters().as_dict()
            t0 = time.perf_counter()
            tops = list(dev.generate(FIRST_TOKEN, tokens))
            out["generate_s"] = time.perf_counter() - t0
            c1 = dev.counters().as_dict()
    out["summary"] = h.summary
    out["counters_before"], out["counters_after"] = c0, c1
    out["per_token"] = per_token(c0, c1)
    out["harness_tps"] = tokens / out["generate_s"]
    out["topk"] = info.topk
    out["clock_hz_info"] = info.clock_hz
    check = Lockstep(compiled, info.topk)
    fed = FIRST_TOKEN
    try:
        for top in tops:
            check(fed, top)
            fed = top.ids[0]
        out["check"] = f"bit-exact: {len(tops)} steps equal the golden machine"
        out["check_ok"] = True
    except CheckError as e:
        out["check"] = str(e)
        out["check_ok"] = False
    out["generated"] = [t.ids[0] for t in tops]
    return out


def _rate(step: Callable[[int], int], tokens: int) -> float:
    tok = step(FIRST_TOKEN)                          # warm-up, not timed
    t0 = time.perf_counter()
    for _ in range(tokens):
        tok = step(tok)
    return tokens / (time.perf_counter() - t0)


def host_speeds(ckpt: Path, compiled: Path, tokens: int) -> dict:
    """Tokens per second on this machine, batch 1: GoldenModel, GoldenMachine, float PyTorch step."""
    import torch

    from mmfree.compiler.fold import fold
    from mmfree.model.checkpoint import load_checkpoint, load_reference
    from mmfree.model.golden import GoldenModel
    from mmfree.model.machine import GoldenMachine

    man = json.loads((Path(compiled) / "manifest.json").read_text())
    config, tensors = load_checkpoint(ckpt)
    gm = GoldenModel(fold(config, tensors, emb_bits=int(man["emb_bits"])), batch=1, k=int(man["target"]["topk"]))
    del tensors
    machine = GoldenMachine.from_dir(compiled)
    ref = load_reference(ckpt)

    def golden(tok):
        return int(gm.step([tok]).topk_ids[0][0])

    def mach(tok):
        return int(machine.step([tok]).topk_ids[0][0])

    state = ref.init_state(1)

    @torch.no_grad()
    def flt(tok):
        nonlocal state
        logits, state = ref.step(torch.tensor([tok]), state)
        return int(torch.argmax(logits[0]))

    out = {"golden_model_tps": _rate(golden, tokens), "golden_machine_tps": _rate(mach, tokens)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # batch 1: intra-op threads only contend (badly on a busy machine)
    try:
        out["float_tps"] = _rate(flt, tokens)
    finally:
        torch.set_num_threads(threads)
    out["torch_threads"] = 1
    return out


def _core_support(target) -> str | None:
    """None when the target's core (:func:`mmfree.hw.soc.default_core_factory`: the serial core on the
    iCEBreaker, else :class:`mmfree.hw.core.Core`) accepts ``target``, else its reason."""
    from amaranth.hdl import UnusedElaboratable

    from mmfree.hw.soc import default_core_factory

    reason = None
    with warnings.catch_warnings():        # the core is built only to ask, never elaborated
        warnings.simplefilter("ignore", UnusedElaboratable)
        try:
            core = default_core_factory(target)
        except (ValueError, TypeError) as e:
            reason = str(e)
        else:
            core._MustUse__silence = True
            del core
        gc.collect()                       # a half-built core (the constructor raised) goes here, silently
    return reason


def _measure_model(name: str, tname: str, tokens: int, bitstreams: Path, log, lanes: str | None = None) -> dict:
    from mmfree.compiler.compile import resolve_target
    from mmfree.config import ModelConfig
    from mmfree.host.generate import compile_cached
    from mmfree.hw.soc import BOARDS
    from mmfree.model.checkpoint import resolve
    from mmfree.sim.harness import target_from_compiled

    base = resolve_target(tname)
    if lanes is not None:               # another tile, shaped as the bitstream flow builds it
        from mmfree.hw.bitstream import board_target

        base = board_target(base.board, lanes, base=base)
    ckpt = resolve(name)
    row = {"model": name, "target": tname + (f"@{lanes}" if lanes else ""), "board": base.board,
           "rows": base.rows, "cols": base.cols,
           "lanes": base.lanes, "vec_lanes": base.vec_lanes, "topk": base.topk, "clock_hz": base.clock_hz,
           "supported": False, "reasons": []}
    try:
        compiled = compile_cached(ckpt, base, log=log)
    except MmfreeError as e:
        compiled = None
        row["reasons"].append(f"compile: {e}")
    if compiled is not None:
        man = json.loads((compiled / "manifest.json").read_text())
        row["compiled"] = str(compiled)
        row["n_trits"] = manifest_trits(man)
        row["n_trits_source"] = "compiled manifest (linears)"
        row["padded_tiles"] = sum(int(lin["tiles"]) for lin in man["linears"])
        target = target_from_compiled(compiled)
    else:
        config = ModelConfig.from_json(json.loads((ckpt / "config.json").read_text()))
        row["n_trits"] = config.n_trits
        row["n_trits_source"] = "checkpoint config (the model did not compile for the target)"
        target = base
    row["roofline_cycles"] = roofline_cycles(row["n_trits"], row["lanes"])
    why = _core_support(target)
    if why is not None:
        row["reasons"].append(f"core: {why}")
    if row["board"] in BOARDS:
        row["baud"] = BOARDS[row["board"]]["baud"]
    row["fmax"] = read_fmax(row["board"], bitstreams, target) if row["board"] else {"available": False,
                                                                                    "reason": "no board"}
    if row["reasons"]:
        row["not_supported"] = "; ".join(row["reasons"])
        log(f"{name} on {row['target']}: not supported: {row['not_supported']}")
        return row
    row["supported"] = True
    log(f"{name} on {row['target']}: harness, {tokens} tokens")
    fm = row["fmax"]
    two = fm.get("available") and fm.get("matrix_clock_hz")
    if two:
        row["clocks"] = {"clock_hz": fm["clock_hz"], "matrix_clock_hz": fm["matrix_clock_hz"]}
        log(f"  two clocks, as built: {fm['clock_hz'] / 1e6:g} MHz and tile streams {fm['matrix_clock_hz'] / 1e6:g} MHz")
    h = measure_harness(compiled, tokens, log, (fm["clock_hz"], fm["matrix_clock_hz"]) if two else None)
    row.update(h)
    pt = h["per_token"]
    if pt["busy"] == 0:                 # the serial core counts no classes: the cycles of GENERATE per token
        pt["busy"] = pt["span"]
        row["cycles_source"] = "span"
    row["cycles_per_token"] = pt["busy"]
    row["utilization"] = row["roofline_cycles"] / pt["busy"]
    row["link"] = link_bytes(h["topk"], tokens)
    if "baud" in row:
        row["link"]["baud"] = row["baud"]
        row["link"]["generate_bound_tps"] = link_bound_tps(row["link"]["generate_down"], row["baud"])
    if fm.get("available") and (not two or fm["met"]):
        # one clock: the Fmax; two: the built clocks, at whose ratio the cycles were counted
        f = fm["clock_hz"] if two else fm["achieved_mhz"] * 1e6
        row["compute_bound_tps"] = f / pt["busy"]
        row["projected_tps"] = min(row["compute_bound_tps"], row["link"].get("generate_bound_tps", math.inf))
    if row["clock_hz"] and not two:         # (two clocks: the cycles are those of the built clocks' ratio)
        row["target_clock_tps"] = row["clock_hz"] / pt["busy"]
    log(f"  {pt['busy']:.0f} cycles/token (roofline {row['roofline_cycles']}, "
        f"utilization {100 * row['utilization']:.1f} %); {row['check']}")
    log("  host references")
    row["host"] = host_speeds(ckpt, compiled, tokens)
    row["host"]["harness_tps"] = h["harness_tps"]
    return row


def _measure_block(tokens: int, cache: Path, fmax: dict, log) -> dict:
    from mmfree.compiler.compile import resolve_target
    from mmfree.host.generate import compile_cached
    from mmfree.model.checkpoint import random_checkpoint

    config = block_config()
    ckpt = cache / f"block_d{config.hidden_size}_i{config.intermediate_size}_v{config.vocab_size}"
    if not ((ckpt / "model.safetensors").is_file() and (ckpt / "config.json").is_file()
            and json.loads((ckpt / "config.json").read_text()) == config.to_json()):
        log(f"random checkpoint {ckpt}")
        random_checkpoint(ckpt, config, seed=0)
    target = resolve_target("sim")
    compiled = compile_cached(ckpt, target, log=log)
    man = json.loads((compiled / "manifest.json").read_text())
    n_block = manifest_trits(man, lambda n: n.startswith("layers.0."))
    out = {"config": config.to_json(), "checkpoint": str(ckpt), "compiled": str(compiled), "target": target.name,
           "rows": target.rows, "cols": target.cols, "lanes": target.lanes,
           "n_trits_block": n_block, "n_trits_model": manifest_trits(man),
           "roofline_cycles": roofline_cycles(n_block, target.lanes)}
    from mmfree import targets as T
    ulx = T.get("ulx3s-85f")
    out["fits_ulx3s_85f"] = {"max_input": ulx.max_input, "needs_input": config.intermediate_size,
                             "weight_capacity_trits": ulx.memory("wmem").depth * ulx.lanes,
                             "needs_trits": out["n_trits_model"]}
    log(f"d={config.hidden_size} block on sim: harness, {tokens} tokens")
    h = measure_harness(compiled, tokens, log)
    out.update(h)
    pt = h["per_token"]
    out["block_cycles"] = pt["busy"] - pt["embed"] - pt["head"]
    out["utilization"] = out["roofline_cycles"] / out["block_cycles"]
    paper_cycles = PAPER_BLOCK["ms"] * 1e-3 * PAPER_BLOCK["clock_mhz"] * 1e6
    out["paper"] = dict(PAPER_BLOCK, cycles=paper_cycles)
    out["cycle_ratio"] = paper_cycles / out["block_cycles"]
    out["fmax"] = fmax
    if fmax.get("available"):
        out["ms_at_fmax"] = out["block_cycles"] / (fmax["achieved_mhz"] * 1e6) * 1e3
        out["speedup_at_fmax"] = PAPER_BLOCK["ms"] / out["ms_at_fmax"]
    out["ms_at_paper_clock"] = out["block_cycles"] / (PAPER_BLOCK["clock_mhz"] * 1e6) * 1e3
    log(f"  block {out['block_cycles']:.0f} cycles (roofline {out['roofline_cycles']}); {h['check']}")
    log("  host references")
    out["host"] = host_speeds(ckpt, compiled, tokens)
    out["host"]["harness_tps"] = h["harness_tps"]
    return out


def _environment() -> dict:
    import torch

    from mmfree.hw.bitstream import git_state

    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source": git_state(), "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "numpy": np.__version__, "torch": torch.__version__}


def run_bench(models=DEFAULT_MODELS, tokens: int = DEFAULT_TOKENS, quick: bool = False,
              bitstreams: Path | None = None, cache: Path | None = None, block: bool = True,
              log: Callable[[str], None] = _say) -> dict:
    """Every measurement of ``mmfree bench``; returns the report dict (see :func:`write_report`)."""
    from mmfree.host.generate import cache_root

    bitstreams = Path(bitstreams) if bitstreams is not None else REPO / "bitstreams"
    cache = Path(cache) if cache is not None else cache_root() / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    rep = {"benchmark": "mmfree bench", "format": 1, "environment": _environment(),
           "settings": {"models": list(models), "tokens": tokens, "quick": quick, "bitstreams": str(bitstreams),
                        "cache": str(cache), "first_token": FIRST_TOKEN},
           "models": []}
    specs = [parse_model_spec(m) for m in models]          # all checked before anything runs
    for name, tname, lanes in specs:
        rep["models"].append(_measure_model(name, tname, tokens, bitstreams, log, lanes))
    if block:
        from mmfree.compiler.compile import resolve_target

        fmax = read_fmax("ulx3s-85f", bitstreams, resolve_target("ulx3s-85f"))
        rep["block"] = _measure_block(tokens, cache, fmax, log)
    if quick:
        rep["compile_370m"] = {"skipped": "--quick"}
    else:
        from mmfree.compiler.bench import bench_compile_370m

        log(f"370M compile benchmark in {cache} (builds a ~1.5 GB checkpoint on first use)")
        rep["compile_370m"] = bench_compile_370m(cache)
        log(f"  {rep['compile_370m']['seconds']:.1f} s, peak {rep['compile_370m']['peak_rss_mb']:.0f} MB")
    rep["seconds"] = round(time.perf_counter() - t_all, 1)
    return rep


# --------------------------------------------------------------------------- the report

def _label(r: dict) -> str:
    """A model row's name in notes and the host table: ``ecp5``, or ``ecp5@8x8`` for another tile."""
    _, at, lanes = r["target"].partition("@")
    return r["model"] + (f"@{lanes}" if at else "")


def _f(v, fmt="{:,.0f}", none="–"):
    return none if v is None else fmt.format(v)


def report_markdown(rep: dict, plot_name: str | None = "cycles.png") -> str:
    """``bench/report.md`` from a report dict (every number in it comes from ``rep``)."""
    env, s = rep["environment"], rep["settings"]
    src = env.get("source") or {}
    changed = f" (uncommitted changes in {', '.join(src['changed'])})" if src.get("changed") else ""
    L = ["# mmfree bench", "",
         f"Run {env['date']} on commit `{(src.get('commit') or 'unknown')[:12]}`{changed}; "
         f"{env['cpus']} CPUs ({env['processor']}), Python {env['python']}, numpy {env['numpy']}, "
         f"torch {env['torch']}; {s['tokens']} tokens per GENERATE{' (--quick)' if s['quick'] else ''}; "
         f"{rep.get('seconds', 0):.0f} s in all. Regenerate with `mmfree bench`; every number below "
         "was measured in this run or read from the named build report, except the paper's figures.", "",
         "## Cycles per token (Verilator harness, GENERATE) against the roofline", "",
         "| model | target | lanes | N_trits | roofline cycles | measured cycles/token | utilization | "
         + " | ".join(CLASSES) + " | golden check |",
         "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(CLASSES) + "---|"]
    rows = list(rep["models"])
    for r in rows:
        head = (f"| {r['model']} | {r['target']} | {r['lanes']} | {r['n_trits']:,} | {r['roofline_cycles']:,} | ")
        if not r["supported"]:
            L.append(head + f"not supported: {r['not_supported']} |" + " |" * (len(CLASSES) + 1))
            continue
        pt = r["per_token"]
        L.append(head + f"{pt['busy']:,.0f} | {100 * r['utilization']:.1f} % | "
                 + " | ".join(f"{pt[c]:,.0f}" for c in CLASSES) + f" | {'ok' if r['check_ok'] else 'FAILED'} |")
    b = rep.get("block")
    if b:
        pt = b["per_token"]
        L.append(f"| d={b['config']['hidden_size']} block (1 layer, random) | {b['target']} | {b['lanes']} | "
                 f"{b['n_trits_model']:,} | {roofline_cycles(b['n_trits_model'], b['lanes']):,} | {pt['busy']:,.0f} | "
                 f"{100 * roofline_cycles(b['n_trits_model'], b['lanes']) / pt['busy']:.1f} % | "
                 + " | ".join(f"{pt[c]:,.0f}" for c in CLASSES) + f" | {'ok' if b['check_ok'] else 'FAILED'} |")
    L += ["", "N_trits: ternary weights of every LINEAR in the compiled manifest, LM head included; roofline "
          "`ceil(N_trits / lanes)`; measured cycles/token: the sum of the per-class cycle counters over the "
          "GENERATE divided by the tokens it produced; utilization = roofline / measured. Golden check: every "
          "TOPK of the run equals the golden machine run from the same images.", ""]
    for r in rows:
        if r["supported"]:
            L.append(f"- {_label(r)}: {r['check']}; padded tiles {r['padded_tiles']:,} "
                     f"(the matrix streams one per cycle); span of the free-running cycle counter "
                     f"{r['per_token']['span']:,.0f} per token (includes waiting for the host).")
    if b:
        L.append(f"- d={b['config']['hidden_size']} block: {b['check']}.")
    L += ["", "## Board projection", "",
          "| model | target | Fmax | cycles/token | compute-bound tok/s | link bytes/token | UART baud | "
          "link-bound tok/s | projected tok/s |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        fm = r.get("fmax", {})
        met = "" if fm.get("met") is None else f", {fm['constraint_mhz']:g} MHz {'met' if fm['met'] else 'not met'}"
        built = (fm.get("source") or {}).get("commit")
        met += f", built from `{built[:7]}`" if built else ""
        fsrc = (f"{fm['achieved_mhz']:.1f} MHz ({fm['clock']}{met}, `{_rel(fm['file'])}`)" if fm.get("available")
                else f"{fm.get('reason', 'none')} (`{_rel(fm['file'])}`)" if fm.get("file") else fm.get("reason", "–"))
        if fm.get("available") and fm.get("matrix_clock_hz"):
            got = ", ".join(f"{v:.1f}" for v in fm["clocks"].values())
            fsrc = (f"two clocks built at {_clocks(fm)} ({got} MHz achieved, {'both met' if fm['met'] else 'not met'}"
                    + (f", built from `{built[:7]}`" if built else "") + f", `{_rel(fm['file'])}`)")
        if not r["supported"]:
            L.append(f"| {r['model']} | {r['target']} | {fsrc} | not supported | | | {_f(r.get('baud'))} | | |")
            continue
        lk = r["link"]
        L.append(f"| {r['model']} | {r['target']} | {fsrc} | {r['cycles_per_token']:,.0f} | "
                 f"{_f(r.get('compute_bound_tps'))} | {lk['generate_down']:.2f} down + {lk['generate_up']:.2f} up | "
                 f"{_f(lk.get('baud'))} | {_f(lk.get('generate_bound_tps'))} | {_f(r.get('projected_tps'))} |")
    L += ["", "Compute-bound: Fmax / measured cycles per token. Link bytes per generated token in a GENERATE: "
          "one TOPK frame (k = the target's top-k, framing and CRC included) plus the GENERATE_DONE (down) and "
          "GENERATE (up) frames shared by the run's tokens; link-bound: baud / 10 bits per byte / the down "
          "bytes (the UART is full duplex). Projected = the smaller of the two."]
    for r in rows:
        if r["supported"] and r.get("target_clock_tps"):
            L.append(f"- {_label(r)}: at the target's design clock ({r['clock_hz'] / 1e6:g} MHz, not a timing "
                     f"result) {r['target_clock_tps']:,.0f} tok/s compute-bound. One STEP round trip moves "
                     f"{r['link']['step_up']} + {r['link']['step_down']} bytes.")
    L += ["", "## Measured on this machine (batch 1, tokens per second)", "",
          "| model | Verilator harness | golden numpy (GoldenModel) | golden machine (images) | float PyTorch step |",
          "|---|---:|---:|---:|---:|"]
    hosts = [(_label(r), r) for r in rows if r["supported"]]
    if b:
        hosts.append((f"d={b['config']['hidden_size']} block", b))
    for name, r in hosts:
        hs = r["host"]
        L.append(f"| {name} | {hs['harness_tps']:.1f} | {hs['golden_model_tps']:.1f} | "
                 f"{hs['golden_machine_tps']:.1f} | {hs['float_tps']:.1f} |")
    L += ["", "Harness: wall clock of the GENERATE over the socket (the simulated SoC's cycles per second are in "
          "its summary line in report.json); golden and float: one token at a time after a warm-up step; "
          "PyTorch with one intra-op thread (batch 1)."]
    if b:
        cfg = b["config"]
        fit = b["fits_ulx3s_85f"]
        L += ["", f"## The paper's unit of work: one d={cfg['hidden_size']} block forward", "",
              f"A random official-format checkpoint with one layer, d = {cfg['hidden_size']}, I = "
              f"{cfg['intermediate_size']} (the official rule), vocabulary {cfg['vocab_size']}, compiled for target "
              f"`{b['target']}` ({b['rows']}x{b['cols']} lanes, memories sized to it: the ulx3s-85f build holds "
              f"inputs up to {fit['max_input']} and {fit['weight_capacity_trits']:,} trits, the block needs "
              f"{fit['needs_input']} and {fit['needs_trits']:,}). Block cycles = measured busy cycles less embed "
              "and head.", "",
              "| | cycles | roofline | utilization | time |", "|---|---:|---:|---:|---|"]
        fm = b["fmax"]
        t_ours = (f"{b['ms_at_fmax']:.3f} ms at {fm['achieved_mhz']:.1f} MHz (Fmax, `{_rel(fm['file'])}`)"
                  if fm.get("available") else f"{b['ms_at_paper_clock']:.3f} ms at the paper's "
                  f"{PAPER_BLOCK['clock_mhz']:g} MHz ({fm.get('reason', 'no build report')} for our Fmax)")
        L.append(f"| this core, {b['lanes']} lanes | {b['block_cycles']:,.0f} | {b['roofline_cycles']:,} | "
                 f"{100 * b['utilization']:.1f} % | {t_ours} |")
        L.append(f"| paper core (cited) | {b['paper']['cycles']:,.0f} | | | {PAPER_BLOCK['ms']:g} ms at "
                 f"{PAPER_BLOCK['clock_mhz']:g} MHz |")
        L += ["", f"{b['cycle_ratio']:,.0f}x fewer cycles than the paper's core"
              + (f"; {b['speedup_at_fmax']:,.0f}x less time at our Fmax." if b.get("speedup_at_fmax") else ".")
              + f" Paper figure: {PAPER_BLOCK['source']}; its cycles are 43 ms x 61 MHz."]
    c = rep.get("compile_370m") or {}
    L += ["", "## Compile: 370M-shaped official-format checkpoint (random weights), target sim", ""]
    if c.get("skipped"):
        L.append(f"Skipped ({c['skipped']}).")
    else:
        L += ["| trits | compile s | peak RSS MB | budget | within |", "|---:|---:|---:|---|---|",
              f"| {c['trits']:,} | {c['seconds']:.1f} | {c['peak_rss_mb']:,.0f} | {c['budget_seconds']:g} s, "
              f"{c['budget_rss_mb']:,.0f} MB | {'yes' if c['within_budget'] else 'NO'} |", "",
              "Steps (s): " + ", ".join(f"{k} {v:.2f}" for k, v in c["steps"].items())
              + f". `mmfree.compiler.bench.bench_compile_370m`, a fresh process; checkpoint in `{c['checkpoint']}`."]
    if plot_name:
        L += ["", "## Cycles per token by instruction class", "", f"![cycles per token]({plot_name})", "",
              rep.get("plot_note", "")]
    return "\n".join(L).rstrip() + "\n"


def readme_section(rep: dict, report_dir: str = "bench") -> str:
    """The README's "Benchmarks" section from a report dict: the main table, the block, the compile, the plot."""
    env = rep["environment"]
    src = env.get("source") or {}
    L = ["## Benchmarks", "",
         f"`mmfree bench` ([docs/bench.md](docs/bench.md)) measures cycles per token in the Verilator harness "
         "of the SoC (GENERATE through the host driver, cycle counters before and after, every step checked "
         "against the golden machine) and sets them against the roofline `ceil(N_trits / lanes)`; tokens per "
         "second come from the build report's Fmax and the UART's baud. "
         f"Run of {env['date'][:10]} on commit `{(src.get('commit') or 'unknown')[:7]}`, "
         f"{rep['settings']['tokens']} tokens ([{report_dir}/report.md]({report_dir}/report.md), "
         f"[report.json]({report_dir}/report.json)); rerun `mmfree bench` to update.", "",
         "| model | target | N_trits | lanes | roofline cycles/token | measured cycles/token | utilization | "
         "board tok/s (Fmax) | link-bound tok/s | harness / golden / float tok/s here |",
         "|---|---|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in rep["models"]:
        head = f"| {r['model']} | {r['target']} | {r['n_trits']:,} | {r['lanes']} | {r['roofline_cycles']:,} | "
        if not r["supported"]:
            why = "; ".join(x.split(" (")[0] for x in r["reasons"])
            L.append(head + f"not supported: {why} | | | | |")
            continue
        fm = r["fmax"]
        if r.get("projected_tps"):
            at = f"{_clocks(fm)}, both met" if fm.get("matrix_clock_hz") else f"{fm['achieved_mhz']:.1f} MHz"
            board = f"{r['projected_tps']:,.0f} ({at})"
        else:
            board = f"– ({fm.get('reason', 'no build report') if not fm.get('available') else 'timing not met'})"
        hs = r["host"]
        L.append(head + f"{r['cycles_per_token']:,.0f} | {100 * r['utilization']:.1f} % | {board} | "
                 f"{_f(r['link'].get('generate_bound_tps'))} | {hs['harness_tps']:.1f} / "
                 f"{hs['golden_model_tps']:.0f} / {hs['float_tps']:.0f} |")
    b = rep.get("block")
    if b:
        t = (f"{b['ms_at_fmax']:.3f} ms at our Fmax" if b.get("ms_at_fmax")
             else f"{b['ms_at_paper_clock']:.3f} ms at the paper's {PAPER_BLOCK['clock_mhz']:g} MHz")
        L += ["", f"One d={b['config']['hidden_size']} block forward (the paper's unit of work; 1 layer, I = "
              f"{b['config']['intermediate_size']}, random weights, target {b['target']}): "
              f"{b['block_cycles']:,.0f} cycles against a roofline of {b['roofline_cycles']:,} "
              f"({100 * b['utilization']:.1f} %), {t}; the paper's core: {PAPER_BLOCK['ms']:g} ms at "
              f"{PAPER_BLOCK['clock_mhz']:g} MHz ({b['paper']['cycles']:,.0f} cycles, cited), "
              f"{b['cycle_ratio']:,.0f}x more cycles."]
    c = rep.get("compile_370m") or {}
    if c and not c.get("skipped"):
        L += ["", f"Compiling the 370M-shaped official-format checkpoint: {c['seconds']:.1f} s, peak "
              f"{c['peak_rss_mb']:,.0f} MB (budget {c['budget_seconds']:g} s, {c['budget_rss_mb'] / 1024:g} GB)."]
    L += ["", f"![cycles per token by instruction class, against the roofline]({report_dir}/cycles.png)", ""]
    import textwrap

    return "\n".join(ln if ln.startswith(("|", "!", "#")) or not ln else
                     textwrap.fill(ln, 76, break_long_words=False, break_on_hyphens=False) for ln in L)


def _rel(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _bars(rep: dict) -> list[tuple[str, dict | None, int]]:
    """(label, per-class cycles or None if not supported, roofline) per bar."""
    out = []
    for r in rep["models"]:
        out.append((f"{r['model']} / {r['target']}", r["per_token"] if r["supported"] else None,
                    r["roofline_cycles"]))
    b = rep.get("block")
    if b:
        out.append((f"d={b['config']['hidden_size']} block / {b['target']}", b["per_token"],
                    roofline_cycles(b["n_trits_model"], b["lanes"])))
    return out


def write_png(path, rgb: np.ndarray) -> Path:
    """Write an 8-bit RGB image ``[H, W, 3]`` as a PNG (zlib + struct, no dependency)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an [H, W, 3] image, got shape {rgb.shape}")
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    Path(path).write_bytes(png)
    return Path(path)


def _plot_numpy(bars, path) -> str:
    """Stacked bars in a raster (no text): classes bottom-up in CLASSES order, roofline as a black line."""
    W, H, m = 640, 400, 40
    img = np.full((H, W, 3), 255, np.uint8)
    top = max([sum(p[c] for c in CLASSES) for _, p, _ in bars if p] + [r for _, _, r in bars] + [1])
    scale = (H - 2 * m) / (top * 1.1)
    img[H - m, m:W - m] = 0
    img[m:H - m, m] = 0
    slot = (W - 2 * m) // max(len(bars), 1)
    for i, (_, p, roof) in enumerate(bars):
        x0, x1 = m + i * slot + slot // 4, m + (i + 1) * slot - slot // 4
        if p is None:                                   # not supported: a grey hatch
            img[H - m - 8:H - m, x0:x1:4] = 160
        else:
            y = H - m
            for c in CLASSES:
                hgt = int(round(p[c] * scale))
                img[max(y - hgt, 0):y, x0:x1] = _COLORS[c]
                y -= hgt
        yr = H - m - int(round(roof * scale))
        img[max(yr - 1, 0):yr + 1, x0 - 6:x1 + 6] = 0
    write_png(path, img)
    return ("Drawn without matplotlib (no text): bars bottom-up " + ", ".join(
        f"{c} #{''.join(f'{v:02x}' for v in _COLORS[c])}" for c in CLASSES)
        + "; black line: roofline; a grey hatch: not supported. Order: " + ", ".join(l for l, _, _ in bars) + ".")


def plot_cycles(rep: dict, path, use_matplotlib: bool | None = None) -> str:
    """Write the stacked-bar PNG of cycles per class per token (roofline as a line); returns a caption."""
    bars = _bars(rep)
    if use_matplotlib is not False:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            if use_matplotlib:
                raise
        else:
            fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
            xs = np.arange(len(bars))
            bottom = np.zeros(len(bars))
            for c in CLASSES:
                vals = np.array([p[c] if p else 0.0 for _, p, _ in bars])
                ax.bar(xs, vals, 0.55, bottom=bottom, label=c, color=[v / 255 for v in _COLORS[c]])
                bottom += vals
            for i, (_, p, roof) in enumerate(bars):
                ax.hlines(roof, i - 0.38, i + 0.38, colors="black", linewidth=2,
                          label="roofline ceil(N_trits/lanes)" if i == 0 else None)
                if p is None:
                    ax.text(i, roof * 0.97, "not supported\n(roofline only)", ha="center", va="top", fontsize=8)
                else:
                    ax.text(i, bottom[i], f"{bottom[i]:,.0f}", ha="center", va="bottom", fontsize=8)
            ax.set_xticks(xs, [l for l, _, _ in bars], fontsize=8)
            ax.set_ylabel("cycles per token")
            ax.set_title("Cycles per token by instruction class (Verilator harness)")
            ax.legend(fontsize=8, loc="upper left")
            fig.tight_layout()
            fig.savefig(path)
            plt.close(fig)
            return f"matplotlib {matplotlib.__version__}."
    return _plot_numpy(bars, path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def write_report(rep: dict, out_dir, json_file=None, plot: bool = True, use_matplotlib: bool | None = None) -> dict:
    """Write ``report.md``, ``report.json`` and ``cycles.png`` into ``out_dir`` (and ``json_file``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    if plot:
        rep["plot_note"] = plot_cycles(rep, out / "cycles.png", use_matplotlib)
        files["plot"] = out / "cycles.png"
    (out / "report.md").write_text(report_markdown(rep, "cycles.png" if plot else None))
    files["markdown"] = out / "report.md"
    text = json.dumps(rep, indent=1, default=_json_default) + "\n"
    (out / "report.json").write_text(text)
    files["json"] = out / "report.json"
    if json_file is not None:
        Path(json_file).write_text(text)
        files["json_extra"] = Path(json_file)
    return files


# --------------------------------------------------------------------------- CLI

def cli(parser):
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated shipped models, MODEL or MODEL@RxC for another tile (default "
                             f"{','.join(DEFAULT_MODELS)}; targets: "
                             + ", ".join(f"{m} on {t}" for m, t in MODEL_TARGETS.items()) + ")")
    parser.add_argument("--tokens", type=int, default=None,
                        help=f"tokens per GENERATE and per host measurement (default {DEFAULT_TOKENS}, "
                             f"--quick {QUICK_TOKENS})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TOKENS} tokens, skip the 370M compile")
    parser.add_argument("--no-block", action="store_true", help="skip the d=512 block")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the JSON report to FILE")
    parser.add_argument("-o", "--out", default="bench", help="report folder (default ./bench)")
    parser.add_argument("--bitstreams", default=None, help="build reports folder (default: the repository's bitstreams/)")
    parser.add_argument("--cache", default=None,
                        help="work folder for the benchmark checkpoints (default $MMFREE_CACHE_DIR/bench, "
                             "~/.cache/mmfree/bench)")

    def run(args):
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        tokens = args.tokens if args.tokens is not None else (QUICK_TOKENS if args.quick else DEFAULT_TOKENS)
        if not 1 <= tokens <= P.MAX_TOKEN:
            raise MmfreeError(f"--tokens must be in 1..{P.MAX_TOKEN}, got {tokens}")
        rep = run_bench(models, tokens, args.quick, args.bitstreams, args.cache, block=not args.no_block)
        files = write_report(rep, args.out, args.json)
        for f in files.values():
            print(f)
        return 0

    return run
