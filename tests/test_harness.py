# amaranth: UnusedElaboratable=no
"""SoC tops (mmfree/hw/soc.py) and the Verilator harness (mmfree/sim/harness.py, sim/harness.cpp).

* Target sizing from a compiled directory, PLL settings, BoardTop elaborated
  and converted to RTLIL for both boards (no toolchain run).
* The harness built around a small stand-in core (:class:`StubCore`, which
  plays the hw/coreif.py contract), served on a real TCP socket and driven
  with mmfree.host.driver.Device: every command, a dropped client, a new
  client, a pseudo-terminal. The build is cached in build/harness/stub.
* The same with the real core (mmfree.hw.core.Core) on the shipped ecp5
  model, checked against the golden machine step by step: ``slow``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from pathlib import Path

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring

from mmfree import protocol as P
from mmfree.errors import MmfreeError, ToolError
from mmfree.hw.coreif import CoreSignature
from mmfree.hw.soc import BoardTop, SimTop, board_platform, ecp5_pll_params, ice40_pll_params
from mmfree.sim import harness as H
from mmfree.targets import get

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "harness"


class StubCore(wiring.Component):
    """A stand-in core: a STEP answers ``topk`` beats ``id = (token + j) % 256``, ``acc = 1000 - j`` after
    20 cycles; RESET_STATE takes 20 cycles; loads are taken while idle and counted (counter 2);
    counters 0 and 1 count cycles and steps."""

    def __init__(self, target):
        self.target = target
        self.memories = {m.name: (m.width, m.depth) for m in target.memories}
        super().__init__(CoreSignature(max(m.width for m in target.memories)))

    def elaborate(self, platform):
        m = Module()
        k = self.target.topk
        busy, reset, j, wait, tok = Signal(), Signal(), Signal(8), Signal(8), Signal(16)
        cycles, steps, loads = Signal(48), Signal(48), Signal(48)
        m.d.sync += cycles.eq(cycles + 1)
        m.d.comb += [self.load.ready.eq(~busy), self.cmd.ready.eq(~busy), self.busy.eq(busy),
                     self.counters[0].eq(cycles), self.counters[1].eq(steps), self.counters[2].eq(loads)]
        with m.If(self.load.valid & self.load.ready):
            m.d.sync += loads.eq(loads + 1)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [busy.eq(1), wait.eq(20), j.eq(0), tok.eq(self.cmd.payload.token),
                         reset.eq(self.cmd.payload.reset)]
        with m.If(busy & (wait != 0)):
            m.d.sync += wait.eq(wait - 1)
        with m.If(busy & (wait == 0) & reset):
            m.d.sync += busy.eq(0)
        r = self.result.payload
        m.d.comb += [r.id.eq((tok + j)[:8]), r.acc.eq(1000 - j), r.present.eq(1), r.last.eq(j == k - 1),
                     r.m.eq(0x4000), r.e.eq(-3)]
        with m.If(busy & (wait == 0) & ~reset):
            m.d.comb += self.result.valid.eq(1)
            with m.If(self.result.ready):
                m.d.sync += j.eq(j + 1)
                with m.If(j == k - 1):
                    m.d.sync += [busy.eq(0), steps.eq(steps + 1)]
        return m


def stub_topk(token: int, k: int) -> P.TopK:
    return P.TopK([(token + j) % 256 for j in range(k)], [1000 - j for j in range(k)], 0x4000, -3)


@pytest.fixture(scope="session")
def compiled_ecp5(tmp_path_factory) -> Path:
    """The shipped ecp5 model compiled for the sim target."""
    from mmfree.compiler.compile import compile_checkpoint

    out = tmp_path_factory.mktemp("compiled") / "ecp5-sim"
    compile_checkpoint("ecp5", "sim", out)
    return out


# ----------------------------------------------------------------- targets, PLLs, boards

def test_target_from_compiled(compiled_ecp5):
    man = json.loads((compiled_ecp5 / "manifest.json").read_text())
    t = H.target_from_compiled(compiled_ecp5)
    assert (t.name, t.rows, t.cols, t.vec_lanes, t.topk) == ("sim", 16, 16, 16, 8)
    assert t.max_input == max(man["model"]["hidden_size"], man["model"]["intermediate_size"])
    for m in t.memories:
        used = man["capacity"][m.name]["used_words"]
        assert m.depth >= used and m.depth % 16 == 0 and m.depth - used < 16, (m, used)
    assert H.resolve_target(compiled_ecp5) == t
    assert H.resolve_target(t) is t
    assert H.resolve_target("ulx3s-85f") == get("ulx3s-85f")
    assert H.default_build_dir(t) == H.default_build_dir(dataclasses.replace(t, description="x"))
    assert H.default_build_dir(t) != H.default_build_dir(get("ulx3s-85f"))


def test_resolve_target_errors(tmp_path):
    with pytest.raises(MmfreeError, match=r"target sim: memories wmem, cmem, vmem, pmem have no depth"):
        H.resolve_target("sim")
    with pytest.raises(MmfreeError, match=r"is neither a Target, a compiled directory"):
        H.resolve_target(str(tmp_path))
    with pytest.raises(MmfreeError, match=r"no manifest.json"):
        H.target_from_compiled(tmp_path)
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(MmfreeError, match=r"unexpected content \(KeyError"):
        H.target_from_compiled(tmp_path)


def test_pll_params():
    assert ecp5_pll_params(25e6, 100e6) == {"CLKI_DIV": 1, "CLKFB_DIV": 4, "CLKOP_DIV": 6, "CLKOP_CPHASE": 2,
                                            "f_vco": 600e6, "f_out": 100e6}
    p = ice40_pll_params(12e6, 24e6)
    assert (p["DIVR"], p["DIVF"], p["DIVQ"], p["FILTER_RANGE"], p["f_out"]) == (0, 63, 5, 1, 24e6)
    for f in (48e6, 60e6, 30e6):                   # exact settings exist for these
        q = ice40_pll_params(12e6, f)
        assert q["f_out"] == f and 533e6 <= q["f_vco"] <= 1066e6
    for f in (50e6, 75e6, 125e6):
        r = ecp5_pll_params(25e6, f)
        assert r["f_out"] == f and 400e6 <= r["f_vco"] <= 800e6
    with pytest.raises(ValueError, match="no iCE40 PLL setting"):
        ice40_pll_params(1e6, 24e6)             # the reference is below the 10 MHz PFD minimum
    with pytest.raises(ValueError, match=r"iCE40 PLL: 1000000000.0 Hz from 12000000.0 Hz is off by"):
        ice40_pll_params(12e6, 1e9)
    with pytest.raises(ValueError, match="ECP5 PLL: 123456789 Hz from 25000000.0 Hz is off"):
        ecp5_pll_params(25e6, 123_456_789)


def small(board: str):
    """The board's target with 4 x 4 lanes, 4 vector lanes (the core needs rows == cols == vec_lanes) and
    memories of at most 1024 words: quick to elaborate."""
    t = get(board).with_lanes(4, 4)
    mems = tuple(dataclasses.replace(m, depth=min(m.depth, 1024)) for m in t.memories)
    return dataclasses.replace(t, vec_lanes=4, memories=mems)


def _board_rtlil(board: str, core_factory, target=None) -> str:
    top = BoardTop(board, target=small(board) if target is None else target, core_factory=core_factory)
    plan = board_platform(board).prepare(top)
    return plan.files["top.il"]


@pytest.mark.parametrize("board, clock_hz, cells, absent", [
    ("ulx3s-85f", None, ("EHXPLLL", "CLKFB_DIV", "uart_rx"), ()),
    ("icebreaker", None, ("SB_PLL40_PAD", "DIVF", "uart_rx"), ()),          # 18 MHz
    ("icebreaker", 12_000_000, ("uart_rx",), ("SB_PLL40_PAD",)),   # 12 MHz: the oscillator itself, no PLL
])
def test_board_top_stub_core(board, clock_hz, cells, absent):
    t = small(board) if clock_hz is None else dataclasses.replace(small(board), clock_hz=clock_hz)
    il = _board_rtlil(board, StubCore, t)
    for c in cells:
        assert c in il, c
    for c in absent:
        assert c not in il, c
    # the ECP5 reset rides a global network (a DCCA); the iCE40 keeps the plain synchronizer
    assert ("DCCA" in il) == (board == "ulx3s-85f")


def test_pll_two_outputs():
    """The ULX3S build's PLL: the tile streams' 100 MHz on CLKOP (the feedback), sync's 30 MHz on CLKOS."""
    p = ecp5_pll_params(25e6, 100e6, 30e6)
    assert (p["CLKI_DIV"], p["CLKFB_DIV"], p["CLKOP_DIV"], p["CLKOS_DIV"], p["f_vco"]) == (1, 4, 6, 20, 600e6)
    assert (p["f_out"], p["f_os"]) == (100e6, 30e6)
    with pytest.raises(ValueError, match="on CLKOS beside"):
        ecp5_pll_params(25e6, 100e6, 33.7e6)     # no VCO that makes 100 MHz divides to 33.7 MHz


def test_board_top_matrix_clock():
    """With a matrix clock the ECP5 top has a second PLL output, a mat domain and a reset on a global for each."""
    from mmfree.hw.soc import default_core_factory, matrix_domain

    t = dataclasses.replace(small("ulx3s-85f"), clock_hz=30_000_000, matrix_clock_hz=100_000_000)
    assert matrix_domain(t) == "mat" and matrix_domain(small("ulx3s-85f")) == "sync"
    il = _board_rtlil("ulx3s-85f", default_core_factory, t)
    assert "CLKOS_DIV" in il and "mat_clk" in il and il.count("DCCA") == 2
    with pytest.raises(ValueError, match="icebreaker: a separate matrix clock needs an ECP5 board"):
        BoardTop("icebreaker", target=dataclasses.replace(get("icebreaker"), matrix_clock_hz=36_000_000))


def test_board_top_real_core():
    """BoardTop with each board's real core elaborates and converts to RTLIL."""
    from mmfree.hw.core import Core
    from mmfree.hw.soc import default_core_factory

    il = _board_rtlil("ulx3s-85f", Core)
    assert "uart_rx" in il and "EHXPLLL" in il
    il = _board_rtlil("icebreaker", default_core_factory, get("icebreaker"))     # the serial core
    assert "uart_rx" in il and il.count("SB_SPRAM256KA") == 4


def test_board_top_rejects():
    with pytest.raises(ValueError, match="unknown board 'de10'; known boards: ulx3s-85f, icebreaker"):
        BoardTop("de10")
    with pytest.raises(ValueError, match="has no clock_hz"):
        BoardTop("icebreaker", target=dataclasses.replace(get("icebreaker"), clock_hz=None))
    with pytest.raises(ValueError, match="elaborated with its board's platform"):
        rtlil.convert(BoardTop("icebreaker", target=small("icebreaker"), core_factory=StubCore))


def test_sim_top_ports():
    top = SimTop(small("ulx3s-85f"), core_factory=StubCore)
    text = rtlil.convert(top, name="simtop")
    for port in ("rx_data", "rx_valid", "rx_ready", "tx_data", "tx_valid", "tx_ready", "idle", "model_set"):
        assert f"wire width" in text and f"\\{port}" in text, port
    with pytest.raises(ValueError, match="SimTop needs a target or a core"):
        SimTop()


# ----------------------------------------------------------------- harness processes

def test_harness_errors(tmp_path):
    with pytest.raises(MmfreeError, match="no harness executable"):
        H.Harness(binary=tmp_path / "nothing")
    with pytest.raises(ValueError, match="Harness needs a model"):
        H.Harness()
    script = tmp_path / "dies"
    script.write_text("#!/bin/sh\necho 'simtop: broken on purpose' >&2\nexit 3\n")
    script.chmod(0o755)
    with pytest.raises(ToolError, match=r"exited \(3\) before listening(.|\n)*broken on purpose"):
        H.Harness(binary=script).start()
    silent = tmp_path / "silent"
    silent.write_text("#!/bin/sh\nexec sleep 30\n")
    silent.chmod(0o755)
    h = H.Harness(binary=silent, startup_timeout=0.5)
    with pytest.raises(ToolError, match="no address within"):
        h.start()
    assert h.proc is None


@pytest.fixture(scope="session")
def stub_binary(compiled_ecp5) -> Path:
    """The harness around StubCore, sized like the ecp5 model on the sim target (built once, cached)."""
    return H.build(compiled_ecp5, BUILD / "stub", core_factory=StubCore, timeout=20_000)


def _frames(sock: socket.socket, n: int, timeout: float = 10.0) -> list[P.Frame]:
    dec, out = P.FrameDecoder(), []
    sock.settimeout(0.2)
    end = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < end, f"got {len(out)} of {n} frames: {out}"
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        assert data, "the harness closed the connection"
        for ev in dec.feed(data):
            assert isinstance(ev, P.Frame), ev
            out.append(ev)
    return out


def test_harness_stub_socket(stub_binary):
    from mmfree.host.driver import Device

    with H.Harness(binary=stub_binary) as h:
        assert h.url == f"socket://127.0.0.1:{h.port}" and h.running
        with Device(h.url, timeout=5.0, step_timeout=5.0, settle=0.1) as dev:
            assert dev.ping(b"hello") == b"hello"
            info = dev.info()
            assert (info.rows, info.cols, info.topk, info.max_payload) == (16, 16, 8, P.MAX_PAYLOAD)
            wmem = next(m for m in info.memories if m.mem == 0)
            assert wmem.width == 416
            data = bytes(range(256)) * 52
            dev.load_image(0, data, 416)                 # 256 words in LOADs of whole words
            assert dev.counters().values[2] == 256
            dev.set_model(b"0123456789abcdef", 256)
            info = dev.info()
            assert info.model_set and info.model_hash == b"0123456789abcdef"
            assert dev.step(65) == stub_topk(65, 8)
            tops = list(dev.generate(3, 5))
            assert tops[0] == stub_topk(3, 8) and [x.ids[0] for x in tops] == [3, 3, 3, 3, 3]
            dev.reset_state()
            c = dev.counters().as_dict()
            assert c["tokens"] == 6 and c["cycles"] > 0
        # a client that leaves in the middle of a frame and of a GENERATE: the next one is served
        with socket.create_connection(("127.0.0.1", h.port)) as s:
            s.sendall(P.encode_frame(P.Command.GENERATE, P.Generate(1, 2000).pack()) + b"\xa5\x00\x10")
            _frames(s, 2)
        with socket.create_connection(("127.0.0.1", h.port)) as s:
            s.sendall(P.encode_frame(P.Command.PING, b"again") + P.encode_frame(P.Command.INFO))
            got = _frames(s, 2)
            assert got[0] == P.Frame(P.Reply.PONG, b"again")
            assert P.Info.unpack(got[1].payload).model_set, "the model flag survives a new client"
            # a frame cut short: TRUNCATED after the timeout, then the link works again
            s.sendall(P.encode_frame(P.Command.PING, b"cut")[:5])
            err = P.ErrorReply.unpack(_frames(s, 1)[0].payload)
            assert err.code == P.ErrorCode.TRUNCATED
            s.sendall(P.encode_frame(P.Command.PING, b"ok"))
            assert _frames(s, 1)[0] == P.Frame(P.Reply.PONG, b"ok")
        proc = h.proc
    assert proc.poll() is not None and not h.running
    assert h.summary and h.summary.startswith("simtop:") and "3 clients" in h.summary


def test_harness_idle_sleeps(stub_binary):
    """An idle harness sleeps in poll(): little CPU time while nobody talks."""
    with H.Harness(binary=stub_binary) as h:
        with socket.create_connection(("127.0.0.1", h.port)) as s:
            s.sendall(P.encode_frame(P.Command.PING, b"x"))
            _frames(s, 1)
            time.sleep(1.5)
            with open(f"/proc/{h.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu0 = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            time.sleep(2.0)
            with open(f"/proc/{h.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu1 = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            assert cpu1 - cpu0 < 0.5, f"idle harness used {cpu1 - cpu0:.2f} s of CPU in 2 s"
            s.sendall(P.encode_frame(P.Command.PING, b"wake"))
            assert _frames(s, 1)[0].payload == b"wake"


def test_harness_pty_and_exceptions(stub_binary):
    """--pty serves a pseudo-terminal; the process is killed when the with-block raises."""
    import serial

    with pytest.raises(RuntimeError, match="boom"):
        with H.Harness(binary=stub_binary, pty=True) as h:
            assert h.url.startswith("/dev/pts/") and h.pty_path == h.url and h.port is None
            proc = h.proc
            with serial.Serial(h.url, timeout=5) as ser:
                ser.write(P.encode_frame(P.Command.PING, b"tty"))
                want = P.encode_frame(P.Reply.PONG, b"tty")
                assert ser.read(len(want)) == want
            raise RuntimeError("boom")
    assert proc.poll() is not None


def test_harness_build_cached(stub_binary, compiled_ecp5):
    """An unchanged design is not rebuilt (stamp), and the CLI reports the same binary."""
    t0 = time.perf_counter()
    again = H.build(compiled_ecp5, stub_binary.parent, core_factory=StubCore, timeout=20_000)
    assert again == stub_binary and time.perf_counter() - t0 < 30


def test_harness_rebuild_ignores_another_checkouts_objects(compiled_ecp5, tmp_path):
    """The build cache is shared between checkouts: a rebuild must not trip over make dependency files
    that name another checkout's harness.cpp (seen in a fresh clone: "No rule to make target")."""
    out = tmp_path / "stub"
    H.build(compiled_ecp5, out, core_factory=StubCore, timeout=20_000, trace=False)
    for dep in (out / "obj").glob("*.d"):
        dep.write_text(dep.read_text().replace(str(H.HARNESS_SOURCE), "/elsewhere/checkout/sim/harness.cpp"))
    exe = H.build(compiled_ecp5, out, core_factory=StubCore, timeout=20_000, trace=False, force=True)
    assert exe.is_file()


def test_cli_sim_help():
    from mmfree.cli import main

    with pytest.raises(SystemExit) as e:
        main(["sim", "build", "--help"])
    assert e.value.code == 0


# ----------------------------------------------------------------- the real core

@pytest.mark.slow
def test_harness_real_core(compiled_ecp5, tmp_path):
    """The harness of the real core: load the ecp5 model over TCP, STEP and GENERATE equal the golden machine."""
    try:
        from mmfree.hw.core import Core  # noqa: F401
    except ImportError as e:
        pytest.skip(f"mmfree.hw.core is not available yet ({e})")
    from mmfree.host.driver import Device
    from mmfree.host.generate import Lockstep

    exe = H.build(compiled_ecp5, BUILD / "core-ecp5")
    with H.Harness(binary=exe) as h, Device(h.url, timeout=30.0, step_timeout=120.0, settle=0.5) as dev:
        t0 = time.perf_counter()
        dev.load_compiled(compiled_ecp5)
        load_s = time.perf_counter() - t0
        assert dev.loaded_matches(compiled_ecp5)
        info = dev.info()
        check = Lockstep(compiled_ecp5, info.topk)
        dev.reset_state()
        check.reset()
        t0 = time.perf_counter()
        prompt = b"def main("
        for tok in prompt:
            top = dev.step(tok)
            check(tok, top)
        fed = top.ids[0]
        steps = 10
        for top in dev.generate(fed, steps):
            check(fed, top)
            fed = top.ids[0]
        secs = time.perf_counter() - t0
        c = dev.counters().as_dict()
    print(f"\nload {load_s:.1f} s; {secs:.1f} s for {len(prompt) + steps} steps; {c['cycles'] / max(c['tokens'], 1):.0f} cycles/token;"
          f" {h.summary}")


def test_harness_two_clocks(compiled_ecp5):
    """A target with a matrix clock: the harness clocks the core's tile streams on mat_clk (100 MHz beside
    30 MHz here, as on the ULX3S) and STEP equals the golden machine, in fewer clk cycles than one clock."""
    from mmfree.host.driver import Device
    from mmfree.host.generate import Lockstep

    t = dataclasses.replace(H.target_from_compiled(compiled_ecp5), clock_hz=30_000_000, matrix_clock_hz=100_000_000)
    exe = H.build(t, BUILD / "core-ecp5-mat")
    assert "#define MAT_HALF_PS 1500\n" in (BUILD / "core-ecp5-mat" / "harness_main.cpp").read_text()
    with H.Harness(binary=exe) as h, Device(h.url, timeout=30.0, step_timeout=120.0, settle=0.5) as dev:
        dev.load_compiled(compiled_ecp5)
        check = Lockstep(compiled_ecp5, dev.info().topk)
        dev.reset_state()
        check.reset()
        c0 = dev.counters().as_dict()
        for tok in b"def ":
            check(tok, dev.step(tok))
        c = dev.counters().as_dict()
    from mmfree.host.bench import per_token

    pt = per_token(c0, c)
    print(f"\ntwo clocks, 100:30: {pt['busy']:.0f} busy clk cycles/token; {h.summary}")
    assert pt["tokens"] == 4 and 0 < pt["busy"] < 7_582      # one clock, 16x16/16: 7,582 (test_core_cocotb)


def test_harness_matrix_clock_needs_clock(compiled_ecp5, tmp_path):
    t = dataclasses.replace(H.target_from_compiled(compiled_ecp5), clock_hz=None, matrix_clock_hz=100_000_000)
    with pytest.raises(MmfreeError, match="target sim: a matrix clock needs clock_hz for the ratio of the two"):
        H.build(t, tmp_path / "never")
