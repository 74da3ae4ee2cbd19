"""The host driver (mmfree/host/driver.py) and the hardware path of ``mmfree generate`` / ``mmfree info``.

The Verilator harness and the board come later; here the driver talks through
pyserial's real ``socket://`` URL to :class:`GoldenTestDevice`, a test-only
device (a thread serving one TCP port) that decodes frames with
:class:`mmfree.protocol.FrameDecoder`, keeps the loaded images and answers
STEP/GENERATE from :class:`~mmfree.model.machine.GoldenMachine` built from
them. It can be told to misbehave: stay silent, send garbage, corrupt a
reply, or change one accumulator at a given token index.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mmfree import packing as pk
from mmfree import protocol as P
from mmfree.cli import main as cli_main
from mmfree.compiler.compile import compile_checkpoint, resolve_target
from mmfree.errors import CapacityError, LinkError, MmfreeError
from mmfree.host import driver as drv
from mmfree.host.driver import Device, DeviceError, LinkTimeout
from mmfree.host.generate import pick_target
from mmfree.model.generate import generate_golden
from mmfree.model.machine import GoldenMachine
from mmfree.targets import get

from conftest import mmfree_cmd, tiny_config

_IDS = {"wmem": P.MemoryId.WMEM, "cmem": P.MemoryId.CMEM, "vmem": P.MemoryId.VMEM, "pmem": P.MemoryId.PMEM}


# --------------------------------------------------------------------------- the test device (fixture only)

class GoldenTestDevice:
    """TEST FIXTURE, not shipped: the accelerator's link behaviour on a TCP port, computing with GoldenMachine.

    Parameters
    ----------
    target : Target
        Tile shape, packing, top-k and memory word widths the "bitstream" has.
    depths : dict
        Words per memory (defaults: room for the small test models).
    max_payload : int
        The receiver's limit, reported in INFO.
    Knobs (set any time): ``silent`` (answer nothing), ``garbage`` (bytes
    sent before the next reply), ``corrupt`` (that many next replies get a
    wrong CRC byte), ``tamper(index, topk) -> topk`` (index counts steps since
    RESET_STATE).
    """

    def __init__(self, target, *, depths=None, max_payload=256, hw_version=0x0101, clock_hz=25_000_000):
        self.target = target
        self.depths = dict(wmem=512, cmem=16384, vmem=1024, pmem=512)
        self.depths.update(depths or {})
        self.max_payload = max_payload
        self.hw_version, self.clock_hz = hw_version, clock_hz
        self.widths = {m.name: m.width for m in target.memories}
        self.images = {_IDS[n]: bytearray(self.depths[n] * pk.word_bytes(self.widths[n])) for n in _IDS}
        self.used = {mid: 0 for mid in self.images}
        self.model_hash, self.vocab, self.machine = bytes(16), 0, None
        self.index = 0
        self.log: list[tuple[int, bytes]] = []      # every good frame received: (opcode, payload)
        self.silent, self.garbage, self.corrupt, self.tamper = False, b"", 0, None
        self._stop = threading.Event()
        self._srv = socket.create_server(("127.0.0.1", 0))
        self._srv.settimeout(0.05)
        self.url = f"socket://127.0.0.1:{self._srv.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self._srv.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def commands(self, op=None):
        return [(o, p) for o, p in self.log if op is None or o == op]

    # ------------------------------------------------------------------
    def info(self) -> P.Info:
        t = self.target
        mems = [P.MemoryInfo(int(_IDS[n]), self.widths[n], self.depths[n]) for n in ("wmem", "cmem", "vmem", "pmem")]
        return P.Info(1, self.hw_version, int(self.machine is not None), self.max_payload, t.rows, t.cols,
                      t.vec_lanes, t.topk, self.clock_hz, self.model_hash, mems)

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except (TimeoutError, socket.timeout):
                continue
            with conn:
                conn.settimeout(0.02)
                dec, last = P.FrameDecoder(self.max_payload), time.monotonic()
                while not self._stop.is_set():
                    try:
                        data = conn.recv(4096)
                    except (TimeoutError, socket.timeout):
                        if dec.in_frame and time.monotonic() - last > 0.03:
                            self._events(conn, dec.timeout())
                        continue
                    except OSError:
                        break
                    if not data:
                        break
                    last = time.monotonic()
                    try:
                        self._events(conn, dec.feed(data))
                    except OSError:
                        break

    def _events(self, conn, events):
        for ev in events:
            if isinstance(ev, P.FrameError):
                self._send(conn, P.Reply.ERROR, P.ErrorReply(ev.code, 0xFF, ev.detail).pack())
            else:
                self.log.append((ev.opcode, ev.payload))
                self._handle(conn, ev.opcode, ev.payload)

    def _send(self, conn, op, payload=b""):
        if self.silent:
            return
        frame = bytearray(P.encode_frame(op, payload))
        if self.corrupt:
            self.corrupt -= 1
            frame[-1] ^= 0x5A
        garbage, self.garbage = self.garbage, b""     # taken before sending: the test may set the next at once
        conn.sendall(garbage + bytes(frame))

    def _error(self, conn, code, op, detail=0):
        self._send(conn, P.Reply.ERROR, P.ErrorReply(code, op, detail).pack())

    def _topk(self, token) -> P.TopK:
        r = self.machine.step([token])
        top = P.TopK(r.topk_ids[0].tolist(), r.topk_acc[0].tolist(), int(r.scale_m[0]), int(r.scale_e[0]))
        if self.tamper is not None:
            top = self.tamper(self.index, top)
        self.index += 1
        return top

    def _handle(self, conn, op, payload):
        E = P.ErrorCode
        if op == P.Command.PING:
            self._send(conn, P.Reply.PONG, payload)
        elif op == P.Command.INFO:
            self._send(conn, P.Reply.INFO, self.info().pack())
        elif op == P.Command.LOAD:
            ld = P.Load.unpack(payload)
            if ld.mem not in self.images:
                return self._error(conn, E.BAD_ARGUMENT, op, ld.mem)
            wb = pk.word_bytes(self.widths[P.MemoryId(ld.mem).name.lower()])
            if ld.offset % wb or len(ld.data) % wb or ld.offset + len(ld.data) > len(self.images[ld.mem]):
                return self._error(conn, E.BAD_ARGUMENT, op, ld.offset)
            self.images[ld.mem][ld.offset:ld.offset + len(ld.data)] = ld.data
            self.used[ld.mem] = max(self.used[ld.mem], ld.offset + len(ld.data))
            self.machine, self.model_hash = None, bytes(16)
            self._send(conn, P.Reply.LOAD, P.LoadAck(ld.mem, ld.offset, len(ld.data)).pack())
        elif op == P.Command.SET_MODEL:
            sm = P.SetModel.unpack(payload)
            img = {m: bytes(self.images[m][:self.used[m]]) for m in self.images}
            wmem = np.frombuffer(img[P.MemoryId.WMEM], np.uint8).reshape(-1, pk.word_bytes(self.widths["wmem"]))
            cmem = np.frombuffer(img[P.MemoryId.CMEM], "<u2")
            pmem = [int(w) for w in np.frombuffer(img[P.MemoryId.PMEM], "<u8")]
            t = self.target
            self.machine = GoldenMachine(wmem, cmem, pmem, rows=t.rows, cols=t.cols, packing=t.packing, topk=t.topk,
                                         vmem_words=self.depths["vmem"])
            self.model_hash, self.vocab, self.index = sm.model_hash, sm.vocab, 0
            self._send(conn, P.Reply.SET_MODEL)
        elif op == P.Command.RESET_STATE:
            if self.machine is not None:
                self.machine.reset()
            self.index = 0
            self._send(conn, P.Reply.RESET_STATE)
        elif op in (P.Command.STEP, P.Command.GENERATE):
            if len(payload) != (2 if op == P.Command.STEP else 4):
                return self._error(conn, E.BAD_LENGTH, op, len(payload))
            token, count = (P.Step.unpack(payload).token, None) if op == P.Command.STEP else \
                dataclasses.astuple(P.Generate.unpack(payload))
            if self.machine is None:
                return self._error(conn, E.NO_MODEL, op)
            if token >= self.vocab:
                return self._error(conn, E.BAD_TOKEN, op, token)
            if count is None:
                return self._send(conn, P.Reply.TOPK, self._topk(token).pack())
            for _ in range(count):
                top = self._topk(token)
                self._send(conn, P.Reply.TOPK, top.pack())
                token = top.ids[0]
            self._send(conn, P.Reply.GENERATE_DONE, P.GenerateDone(count).pack())
        elif op == P.Command.READ_COUNTERS:
            self._send(conn, P.Reply.COUNTERS, P.Counters([1000 * self.index, self.index, 0, 0, 0, 0, 0, 0]).pack())
        else:
            self._error(conn, E.UNKNOWN_COMMAND, 0xFF if op > 0xFF else op, op)


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small random byte model and its compile for the ``sim`` target (16x16 lanes, 416-bit wmem words)."""
    from mmfree.model.checkpoint import random_checkpoint

    root = tmp_path_factory.mktemp("driver")
    ckpt = random_checkpoint(root / "ckpt", tiny_config(hidden_size=16, num_hidden_layers=1, intermediate_size=32),
                             seed=5)
    out = root / "sim"
    compile_checkpoint(ckpt, "sim", out)
    return ckpt, out


@pytest.fixture
def device():
    with GoldenTestDevice(get("sim")) as d:
        yield d


def _dev(d, **kw) -> Device:
    kw = {"timeout": 1.0, "step_timeout": 1.0, "settle": 0.05, **kw}
    return Device(d.url, **kw)


def _golden(out, k=8):
    m = GoldenMachine.from_dir(out)
    m.k = k
    return m


def _same(top: P.TopK, r) -> bool:
    return (list(top.ids), list(top.accs), top.scale_m, top.scale_e) == \
        (r.topk_ids[0].tolist(), r.topk_acc[0].tolist(), int(r.scale_m[0]), int(r.scale_e[0]))


# --------------------------------------------------------------------------- driver

def test_info_and_ping(device):
    with _dev(device) as dev:
        info = dev.info()
        assert info == device.info()
        assert (info.rows, info.cols, info.topk, info.max_payload) == (16, 16, 8, 256)
        assert not info.model_set
        assert dev.ping(b"hello") == b"hello"
        with pytest.raises(MmfreeError, match="max_payload"):
            dev.ping(bytes(300))
    assert not dev.is_open


def test_load_chunks_aligned_then_set_model(model):
    _, out = model
    man = json.loads((out / "manifest.json").read_text())
    with GoldenTestDevice(get("sim"), max_payload=64) as d, _dev(d) as dev:
        seen = []
        img = dev.load_compiled(out, progress=lambda name, done, total: seen.append((name, done, total)))
        loads = [P.Load.unpack(p) for _, p in d.commands(P.Command.LOAD)]
        assert loads, "nothing loaded"
        for name in drv.IMAGE_MEMORIES:
            wb = pk.word_bytes(man["images"][name]["width"])
            mine = [ld for ld in loads if ld.mem == _IDS[name]]
            assert all(ld.offset % wb == 0 and len(ld.data) % wb == 0 for ld in mine), name
            assert all(0 < len(ld.data) <= 64 - 5 for ld in mine), name
            # contiguous, in order, covering the image exactly
            assert [ld.offset for ld in mine] == list(np.cumsum([0] + [len(ld.data) for ld in mine[:-1]]))
            data = (out / f"{name}.bin").read_bytes()
            assert b"".join(ld.data for ld in mine) == data
            assert bytes(d.images[_IDS[name]][:len(data)]) == data
        # wmem words are 52 bytes: one per LOAD at max_payload 64
        assert {len(ld.data) for ld in loads if ld.mem == P.MemoryId.WMEM} == {52}
        assert seen[-1][1:] == (img.total_bytes, img.total_bytes)
        # SET_MODEL last: hash = first 16 bytes of content_hash, vocab of the model
        op, payload = d.log[-1]
        assert op == P.Command.SET_MODEL
        sm = P.SetModel.unpack(payload)
        assert sm.model_hash == bytes.fromhex(man["content_hash"])[:16] and sm.vocab == 256
        assert dev.loaded_matches(man) and dev.loaded_matches(out)
        assert dev.info().model_set


def test_load_refused_before_sending(model):
    _, out = model
    man = json.loads((out / "manifest.json").read_text())
    need = man["images"]["wmem"]["words"]
    # too small a wmem
    with GoldenTestDevice(get("sim"), depths={"wmem": need - 1}) as d, _dev(d) as dev:
        with pytest.raises(CapacityError, match=rf"wmem: the model needs {need} words of 416 bits, the device "
                                                rf"holds {need - 1}"):
            dev.load_compiled(out)
        assert d.commands(P.Command.LOAD) == [] and d.commands(P.Command.SET_MODEL) == []
    # other word width (2-bit packing: 512-bit words)
    with GoldenTestDevice(get("sim").with_packing("2b"), max_payload=512) as d, _dev(d) as dev:
        with pytest.raises(MmfreeError, match="wmem: compiled words are 416 bits, the device's 512 bits"):
            dev.load_compiled(out)
        assert d.commands(P.Command.LOAD) == []
    # other tile shape
    with GoldenTestDevice(get("icebreaker")) as d, _dev(d) as dev:
        with pytest.raises(MmfreeError, match="compiled for 16x16 TAC lanes .*the device has 5x4"):
            dev.load_compiled(out)
        assert d.commands(P.Command.LOAD) == []
    # vectors aligned to 4 lanes, a core with 16 vector lanes (the other way round is fine)
    v4 = compile_checkpoint(model[0], resolve_target("sim", "16x16/4"), out.parent / "simv4").out
    with GoldenTestDevice(get("sim")) as d, _dev(d) as dev:
        with pytest.raises(MmfreeError, match=r"vectors aligned to 4 lanes, the device's core has 16 vector lanes "
                                              r"and needs a multiple of that; compile with --lanes 16x16/16"):
            dev.load_compiled(v4)
        assert d.commands(P.Command.LOAD) == []
    # a word larger than one LOAD can carry: 2-bit packing, 64-byte words, max_payload 64
    two = compile_checkpoint(model[0], resolve_target("sim", None, "2b"), out.parent / "sim2b").out
    with GoldenTestDevice(get("sim").with_packing("2b"), max_payload=P.MIN_MAX_PAYLOAD) as d, _dev(d) as dev:
        with pytest.raises(MmfreeError, match="wmem: a 64-byte word does not fit one LOAD"):
            dev.load_compiled(two)
        assert d.commands(P.Command.LOAD) == []
    with pytest.raises(MmfreeError, match="no manifest.json"):
        drv.read_compiled(out.parent)


def test_step_and_generate_match_golden(model, device):
    _, out = model
    ref = _golden(out)
    with _dev(device) as dev:
        with pytest.raises(DeviceError, match="STEP: device error NO_MODEL") as ei:
            dev.step(65)
        assert ei.value.code == P.ErrorCode.NO_MODEL and isinstance(ei.value.reply, P.ErrorReply)
        dev.load_compiled(out)
        dev.reset_state()
        for tok in b"def f":
            assert _same(dev.step(tok), ref.step([tok]))
        tops = list(dev.generate(ord("("), 6))
        assert len(tops) == 6
        tok = ord("(")
        for top in tops:
            assert _same(top, ref.step([tok]))
            tok = top.ids[0]
        c = dev.counters()
        assert c.as_dict()["tokens"] == 11
        # a new context after reset_state
        dev.reset_state()
        ref.reset()
        assert _same(dev.step(10), ref.step([10]))
        assert list(dev.generate(1, 0)) == []


def test_error_reply_names_code_and_command(model, device):
    _, out = model
    with _dev(device) as dev:
        dev.load_compiled(out)
        with pytest.raises(DeviceError) as ei:
            dev.step(300)
        assert "STEP" in str(ei.value) and "BAD_TOKEN" in str(ei.value) and "300" in str(ei.value)
        assert ei.value.reply.code == P.ErrorCode.BAD_TOKEN and ei.value.reply.detail == 300
        assert isinstance(ei.value, LinkError)
        dev.load(P.MemoryId.CMEM, 0, b"\0\0")            # a LOAD clears the model
        with pytest.raises(DeviceError, match="GENERATE: device error NO_MODEL"):
            list(dev.generate(1, 3))
        with pytest.raises(DeviceError, match="LOAD: device error BAD_ARGUMENT"):
            dev.load(P.MemoryId.CMEM, 1, b"\0\0")        # misaligned: the device refuses
        assert device.commands(P.Command.LOAD)[-1][1][:1] == bytes([P.MemoryId.CMEM])


def test_timeout_is_clear_and_bounded(model):
    _, out = model
    with GoldenTestDevice(get("sim")) as d, _dev(d, timeout=0.2, step_timeout=0.1, retries=1) as dev:
        d.silent = True
        t0 = time.monotonic()
        with pytest.raises(LinkTimeout, match=r"no reply to INFO within 0\.\d+ s \(2 attempts\)") as ei:
            dev.info()
        assert time.monotonic() - t0 < 2.0
        assert d.url[len("socket://"):] in str(ei.value)
        assert len(d.commands(P.Command.INFO)) == 2          # sent, then resent once
        d.silent = False
        dev.load_compiled(out)
        dev.reset_state()
        d.silent = True
        t0 = time.monotonic()
        with pytest.raises(LinkTimeout, match="GENERATE step 0 of 5"):
            list(dev.generate(1, 5))
        assert time.monotonic() - t0 < 2.0


def test_refused_connection_is_a_link_error():
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(LinkError, match=rf"cannot open socket://127.0.0.1:{port}"):
        Device(f"socket://127.0.0.1:{port}")


def test_garbage_and_garbled_replies_resync(model, device):
    _, out = model
    ref = _golden(out)
    with _dev(device) as dev:
        device.garbage = bytes(range(1, 100))                # noise without SOF: dropped by the decoder
        assert dev.info().rows == 16 and dev.resends == 0
        device.garbage = b"\x00\xA5\x01\xff\xff"             # a false SOF with a length over 4096:
        assert dev.info().cols == 16 and dev.resends == 0    # BAD_LENGTH, then the real reply decodes
        device.corrupt = 1                                   # a reply with a bad CRC: resent once
        assert dev.info().topk == 8 and dev.resends == 1
        device.garbage = b"\xA5\x81\x10\x00" + bytes(5)      # a false frame that swallows the real reply
        assert dev.info().topk == 8 and dev.resends == 2
        dev.load_compiled(out)
        dev.reset_state()
        for tok in b"ab":
            assert _same(dev.step(tok), ref.step([tok]))
        device.corrupt = 1                                   # a lost STEP reply: reset, replay "ab", resend
        assert _same(dev.step(ord("c")), ref.step([ord("c")]))
        assert dev.resends == 3
        steps = [P.Step.unpack(p).token for _, p in device.commands(P.Command.STEP)]
        assert steps[-6:] == list(b"abcabc")
        # the device reports a frame it could not read (receive error): resent
        dev._port().write(b"\xA5\x00\x01\x00x\x00\x00")   # bad CRC on the way in -> ERROR BAD_CRC, 0xFF
        assert dev.ping(b"ok") == b"ok" and dev.resends == 4
        dev._send(P.Command.PING, b"stale")                  # an earlier PING's echo is not this one's
        assert dev.ping(b"fresh") == b"fresh" and dev.resends == 4
        dev.reopen()
        assert dev.ping(b"again") == b"again"
        # a garbled TOPK inside a GENERATE stream is a lost step: an error, not a skipped token
        dev.reset_state()
        device.corrupt = 1
        with pytest.raises(LinkError, match="GENERATE step 0 of 4: garbled reply to GENERATE"):
            list(dev.generate(1, 4))
        assert dev.ping(b"after") == b"after"                # the rest of the stream is drained first
        # a lost STEP reply when the driver does not know the context (no reset_state since the load)
        dev.load_compiled(out)
        device.corrupt = 1
        with pytest.raises(LinkError, match="garbled reply to STEP .*recovery failed: .*context is unknown"):
            dev.step(1)


# --------------------------------------------------------------------------- target choice

def test_pick_target():
    def info_of(t):
        mems = [P.MemoryInfo(int(_IDS[m.name]), m.width, m.depth or 1000) for m in t.memories]
        return P.Info(1, 1, 0, 256, t.rows, t.cols, t.vec_lanes, t.topk, 0, bytes(16), mems)

    assert pick_target(info_of(get("ulx3s-85f"))).name == "ulx3s-85f"
    assert pick_target(info_of(get("icebreaker"))).name == "icebreaker"
    assert pick_target(info_of(get("sim"))).name == "sim"
    odd = pick_target(info_of(resolve_target("sim", (3, 7), "2b")))
    assert (odd.rows, odd.cols, odd.packing) == (3, 7, "2b")
    assert pick_target(info_of(get("sim")), "ulx3s-85f").name == "ulx3s-85f"
    # a core with fewer vector lanes runs vectors aligned to more; a named target is aligned to the device's
    narrow = dataclasses.replace(get("ulx3s-85f"), vec_lanes=4)
    assert pick_target(info_of(narrow)).name == "ulx3s-85f"
    wide = dataclasses.replace(get("sim"), vec_lanes=32)
    assert pick_target(info_of(get("icebreaker")), "icebreaker").vec_lanes == 1
    assert pick_target(info_of(wide), "sim").vec_lanes == 32
    with pytest.raises(MmfreeError, match="target icebreaker has 5x4 TAC lanes, the device 16x16"):
        pick_target(info_of(get("sim")), "icebreaker")


# --------------------------------------------------------------------------- CLI

def _generate(capsys, *args):
    rc = cli_main(["generate", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def _golden_text(ckpt, prompt, n, **kw):
    import codecs

    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    toks = generate_golden(ckpt, prompt.encode(), n, **kw)
    return prompt + "".join(dec.decode(bytes([t])) for t in toks) + dec.decode(b"", final=True) + "\n"


@pytest.mark.parametrize("mode", [[], ["--stepwise"], ["--temperature", "0.9", "--seed", "4"]],
                         ids=["generate", "stepwise", "sampled"])
def test_cli_generate_port_checked(model, device, capsys, mode):
    ckpt, out = model
    base = ["--port", device.url, "--compiled", str(out), "--prompt", "ab", "--max-tokens", "12", "--check", *mode]
    rc, text, err = _generate(capsys, *base)
    assert rc == 0, err
    kw = {"temperature": 0.9, "seed": 4} if "--temperature" in mode else {}
    assert text == _golden_text(ckpt, "ab", 12, **kw)
    assert "13 steps match the golden machine" in err   # 2 prompt bytes + 11 fed back
    ops = {op for op, _ in device.log}
    assert (P.Command.GENERATE in ops) == (mode == [])
    # a second run finds the model loaded
    n_loads = len(device.commands(P.Command.LOAD))
    rc, text2, err = _generate(capsys, *base, "--stats")
    assert rc == 0 and text2 == text and len(device.commands(P.Command.LOAD)) == n_loads
    assert "cycles per token since reset" in err      # the test device counts no classes


@pytest.mark.parametrize("stepwise", [False, True], ids=["generate", "stepwise"])
def test_cli_check_catches_a_wrong_device(model, device, capsys, stepwise):
    _, out = model

    def flip(index, top):
        return dataclasses.replace(top, accs=(top.accs[0] ^ 1,) + top.accs[1:]) if index == 3 else top

    device.tamper = flip
    rc, text, err = _generate(capsys, "--port", device.url, "--compiled", str(out), "--prompt", "ab",
                              "--max-tokens", "8", "--check", *(["--stepwise"] if stepwise else []))
    assert rc == 1
    lines = err.strip().splitlines()
    assert "token index 3" in lines[-1] and "accs[0] device" in lines[-1], err
    assert lines[-1].startswith("mmfree generate: error: --check:")


def test_cli_generate_compiles_into_cache(model, device, capsys, monkeypatch, tmp_path):
    ckpt, _ = model
    monkeypatch.setenv("MMFREE_CACHE_DIR", str(tmp_path / "cache"))
    rc, text, err = _generate(capsys, "--port", device.url, "--model", str(ckpt), "--prompt", "x", "--max-tokens", "5")
    assert rc == 0, err
    assert text == _golden_text(ckpt, "x", 5)
    dirs = list((tmp_path / "cache" / "compiled").iterdir())
    assert len(dirs) == 1 and (dirs[0] / "manifest.json").is_file()
    assert "compiling" in err and "loaded" in err
    rc, text2, err = _generate(capsys, "--port", device.url, "--model", str(ckpt), "--prompt", "x", "--max-tokens", "5")
    assert rc == 0 and text2 == text and "compiling" not in err and "loaded" not in err
    # a target whose lanes are not the device's
    rc, _, err = _generate(capsys, "--port", device.url, "--model", str(ckpt), "--target", "icebreaker")
    assert rc == 1 and "icebreaker has 5x4 TAC lanes, the device 16x16" in err


def test_cli_generate_option_errors(model, capsys):
    ckpt, out = model
    rc, _, err = _generate(capsys, "--model", str(ckpt), "--check")
    assert rc == 1 and "--check needs --port or --sim" in err
    with pytest.raises(SystemExit):
        cli_main(["generate", "--port", "x", "--sim"])
    capsys.readouterr()
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rc, _, err = _generate(capsys, "--port", f"socket://127.0.0.1:{port}", "--compiled", str(out))
    assert rc == 1 and "cannot open" in err and len(err.strip().splitlines()) == 1


def test_cli_info_port(model, device):
    _, out = model
    with _dev(device) as dev:
        dev.load_compiled(out)
    res = subprocess.run(mmfree_cmd() + ["info", "--port", device.url], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "16 x 16 = 256 TAC lanes" in res.stdout and "wmem   416-bit" in res.stdout
    man = json.loads((Path(out) / "manifest.json").read_text())
    assert f"set, hash {man['content_hash'][:32]}" in res.stdout
    res = subprocess.run(mmfree_cmd() + ["info", "--port", device.url, "--json", "--counters"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["rows"] == 16 and d["model_set"] and "cycles" in d["counters"]


def test_default_baudrate_is_the_boards():
    """A plain ``mmfree generate --port /dev/ttyUSB0`` must talk at the rate BoardTop's UART runs."""
    from mmfree.hw.soc import BOARDS
    assert {spec["baud"] for spec in BOARDS.values()} == {drv.DEFAULT_BAUDRATE}
