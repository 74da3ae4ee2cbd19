"""cocotb test of a core (``Core`` or ``SerialCore``): every step's top-k equals the golden machine's.

``cocotb_params()``: ``models``, a list of ``{"name", "dir", "expected"}``
where ``dir`` is a compiled directory and ``expected`` a JSON file with the
tokens fed and, per step, the golden top-k ids, accumulators and head scale;
``matrix_period_ps`` for a core with a ``mat`` clock domain (``clk`` is 10 ns).
Ports are the plain names of :mod:`mmfree.hw.coreif` (``load_valid``,
``load_payload_mem``, ``cmd_payload_token``, ``result_payload_id``, ...).
The measured cycle counters are written to ``counters_<name>.json`` next to
the expected file.
"""

from __future__ import annotations

import json
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge, with_timeout

from mmfree import packing as pk
from mmfree.protocol import COUNTER_NAMES, MemoryId
from mmfree.sim.runner import cocotb_params

PARAMS = cocotb_params()
#: 200k cycles (``step_timeout_cycles`` overrides): far beyond any model of the test on the parallel core
STEP_TIMEOUT_NS = 10 * PARAMS.get("step_timeout_cycles", 200_000)
#: the period of ``mat_clk`` for a core whose tile streams have their own clock (``matrix_domain="mat"``);
#: ``clk`` runs at 10 ns
MATRIX_PERIOD_PS = PARAMS.get("matrix_period_ps")


def _signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) else v


async def reset(dut) -> None:
    dut.rst.value = 1
    if MATRIX_PERIOD_PS:
        dut.mat_rst.value = 1
    dut.load_valid.value = 0
    dut.cmd_valid.value = 0
    dut.result_ready.value = 1
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    if MATRIX_PERIOD_PS:
        dut.mat_rst.value = 0


async def load(dut, mem: int, words) -> None:
    """Write ``words`` (ints) from address 0 of memory ``mem`` through the load port.

    The parallel core takes one word per cycle; a core may hold ``ready`` low
    for a few cycles (the serial core writes a pmem word as four quarters).
    """
    dut.load_payload_mem.value = mem
    dut.load_valid.value = 1
    for addr, w in enumerate(words):
        dut.load_payload_addr.value = addr
        dut.load_payload_data.value = int(w)
        for _ in range(8):
            await RisingEdge(dut.clk)
            if dut.load_ready.value:
                break
        else:
            raise AssertionError("load refused for 8 cycles while idle")
    await FallingEdge(dut.clk)
    dut.load_valid.value = 0


async def command(dut, token: int, reset_state: bool = False) -> None:
    await FallingEdge(dut.clk)
    dut.cmd_payload_reset.value = int(reset_state)
    dut.cmd_payload_token.value = token
    dut.cmd_valid.value = 1
    for _ in range(8):                  # a core may finish writing a LOAD first (the serial core's pmem)
        await ReadOnly()
        if dut.cmd_ready.value:
            break
        await RisingEdge(dut.clk)
    else:
        dump(dut)
        raise AssertionError("command refused for 8 cycles while idle")
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.cmd_valid.value = 0


async def results(dut, k: int) -> list[tuple[int, int, int, int, int]]:
    """The ``k`` result beats of one step: (id, acc, present, m, e)."""
    if not dut.result_valid.value:
        try:
            await with_timeout(RisingEdge(dut.result_valid), STEP_TIMEOUT_NS, "ns")
        except Exception:
            dump(dut)
            raise
    beats = []
    while True:
        await ReadOnly()
        if dut.result_valid.value:
            beats.append((int(dut.result_payload_id.value), _signed(int(dut.result_payload_acc.value), 24),
                          int(dut.result_payload_present.value), int(dut.result_payload_m.value),
                          _signed(int(dut.result_payload_e.value), 18)))
            last = bool(dut.result_payload_last.value)
        else:
            last = False
        await RisingEdge(dut.clk)           # the beat is taken at this edge
        if last:
            break
    assert len(beats) == k, f"expected {k} result beats, got {len(beats)}"
    return beats


DEBUG = ("seq_state", "have_head", "fpc", "n_valid", "mat_run", "a_done", "a_rb_left", "a_idx", "q_avail", "codes_ok",
         "blocks", "credit_ok", "tac_error", "f_run", "c_rb", "c_s",
         "beats_ok", "aux_ok", "f_rb", "f_r", "f_done", "sh_armed", "sh_dead", "sh_ok", "col_rb", "col_r", "col_done", "col_nrb", "stats_done",
         "rd_c", "rd_k", "rd_q", "q_out_c", "e_j", "e_tag", "e_hold", "scales_ready", "recips_ready", "sb", "nb",
         "nrb", "trk_valid", "trk_max", "run_max")


def dump(dut) -> None:
    """Log the sequencer's state (on a timeout)."""
    vals = []
    for name in DEBUG:
        try:
            vals.append(f"{name}={int(getattr(dut.dut, name).value)}")
        except Exception as e:          # noqa: BLE001 - a debugging aid
            vals.append(f"{name}=?({type(e).__name__})")
    for name in ("result_valid", "result_ready", "result_payload_last", "result_payload_id", "cmd_valid"):
        vals.append(f"{name}={getattr(dut, name).value}")
    dut._log.error("core state: %s", " ".join(vals))


async def trace_states(dut) -> None:
    """Debugging aid: log every sequencer state change of one step with its cycle count."""
    last, t0, rows = None, 0, []
    cyc = 0
    while True:
        await RisingEdge(dut.clk)
        await ReadOnly()
        st = int(dut.dut.seq_state.value)
        if st != last:
            if last is not None:
                rows.append(f"{last}:{cyc - t0}")
            last, t0 = st, cyc
        cyc += 1
        if dut.result_valid.value:
            break
    dut._log.info("state trace (state:cycles): %s", " ".join(rows))


def counters(dut) -> dict[str, int]:
    raw = int(dut.counters.value)
    return {name: (raw >> (48 * i)) & ((1 << 48) - 1) for i, name in enumerate(COUNTER_NAMES)}


@cocotb.test()
async def core_equals_golden(dut):
    """Load each compiled model, reset the state, step its tokens; compare every top-k with the golden machine."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    if MATRIX_PERIOD_PS:
        cocotb.start_soon(Clock(dut.mat_clk, MATRIX_PERIOD_PS, unit="ps").start())
    await reset(dut)
    for model in PARAMS["models"]:
        d = Path(model["dir"])
        man = json.loads((d / "manifest.json").read_text())
        exp = json.loads(Path(model["expected"]).read_text())
        for name, mem in (("wmem", MemoryId.WMEM), ("cmem", MemoryId.CMEM), ("pmem", MemoryId.PMEM)):
            img = man["images"][name]
            words = pk.read_bin(d / img["bin"], img["width"])
            await load(dut, mem, pk.words_int(words, img["width"]).tolist()
                       if img["width"] <= 64 else [int.from_bytes(bytes(w), "little") for w in words])
            dut._log.info("%s: %s loaded (%d words)", model["name"], name, len(words))
        await command(dut, 0, reset_state=True)
        await ReadOnly()
        if dut.busy.value:
            await with_timeout(FallingEdge(dut.busy), STEP_TIMEOUT_NS, "ns")
        k = exp["topk"]
        c0 = counters(dut)
        for i, (tok, want) in enumerate(zip(exp["tokens"], exp["steps"])):
            await command(dut, tok)
            if i == PARAMS.get("trace_token", -1):
                await trace_states(dut)
            got = await results(dut, k)
            assert not dut.error.value, f"{model['name']} token {i}: core error flag set"
            n = len(want["ids"])
            ids = [b[0] for b in got[:n]]
            accs = [b[1] for b in got[:n]]
            assert all(b[2] for b in got[:n]) and not any(b[2] for b in got[n:]), \
                f"{model['name']} token {i}: present flags {[b[2] for b in got]}"
            assert (ids, accs) == (want["ids"], want["accs"]), \
                f"{model['name']} token {i} (fed {tok}): top-k ids {ids} accs {accs}, golden {want['ids']} {want['accs']}"
            assert (got[0][3], got[0][4]) == (want["m"], want["e"]), \
                f"{model['name']} token {i}: head scale {(got[0][3], got[0][4])}, golden {(want['m'], want['e'])}"
        await FallingEdge(dut.clk)
        c1 = counters(dut)
        steps = len(exp["tokens"])
        per = {name: (c1[name] - c0[name]) / steps for name in COUNTER_NAMES if name not in ("cycles", "tokens")}
        per["cycles"] = (c1["cycles"] - c0["cycles"]) / steps
        assert c1["tokens"] - c0["tokens"] == steps
        Path(model["expected"]).with_name(f"counters_{model['name']}.json").write_text(json.dumps(per, indent=1))
        dut._log.info("%s: %d tokens bit-exact; cycles per token %s", model["name"], steps, per)
