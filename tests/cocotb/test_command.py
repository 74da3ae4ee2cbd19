"""cocotb tests of :class:`mmfree.hw.command.CommandDecoder` inside :class:`mmfree.hw.soc.LinkTop`.

The host side speaks bytes through :mod:`mmfree.protocol` (``encode_frame``,
``FrameDecoder`` and the payload classes); the core side is :class:`Bench`'s
Python model of the ``hw/coreif.py`` contract: it records every ``load`` beat
and every ``cmd``, answers a step after a delay with the result beats that
``Bench.results`` chooses, and drops ``busy`` after the last beat (or after a
reset). Handshakes are random on both sides (the host's ``tx_ready``, the
core's ``load.ready`` and result ``valid``).

One loop per clock: inputs change after the falling edge; at ``ReadOnly``
the settled valid/ready pairs say what the next rising edge transfers.
Parameters (``cocotb_params``): ``max_payload``, ``timeout``, ``topk``,
``rows``, ``cols``, ``vec_lanes``, ``clock_hz``, ``memories`` ([id, width,
depth]), ``fuzz_frames``.
"""

from __future__ import annotations

import random
import struct
from collections import deque

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from mmfree import protocol as p
from mmfree.hw.command import HW_VERSION, INTERNAL_BAD_NEXT_TOKEN, INTERNAL_CORE_ERROR, INTERNAL_NO_RESULT
from mmfree.sim.runner import cocotb_params

PARAMS = cocotb_params()
MAX_PAYLOAD = PARAMS.get("max_payload", 256)
TIMEOUT = PARAMS.get("timeout", 64)
K = PARAMS.get("topk", 8)
MEMS = {m: (w, d) for m, w, d in PARAMS.get("memories", [])}
C = p.Command
E = p.ErrorCode
R = p.Reply
N_COUNTERS = len(p.COUNTER_NAMES)


def wbytes(mem: int) -> int:
    return (MEMS[mem][0] + 7) // 8


def sext(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


class Bench:
    """The host's byte streams and the core model, advanced one clock per loop."""

    def __init__(self, dut, seed=0):
        self.dut = dut
        self.rng = random.Random(seed)
        self.to_dut: deque[int] = deque()
        self.host = p.FrameDecoder(p.MAX_PAYLOAD)
        self.replies: list[p.Frame] = []
        self.loads: list[tuple[int, int, int]] = []
        self.cmds: list[tuple[int, int]] = []
        self.counters = [((j + 1) * 0x0101_0101_0101 + 0x1000 * j) & ((1 << 48) - 1) for j in range(N_COUNTERS)]
        self.p_rx = self.p_tx = self.p_load = self.p_result = 1.0
        self.delay = (3, 20)
        self.results = self.default_results
        self.fail_tokens: set[int] = set()
        self.vocab = 1 << 16
        self.core = "idle"
        self.count = 0
        self.beats: list = []
        self.beat = 0
        self.err = 0
        self.line_error_at: set[int] = set()
        self.cycle = 0
        self.tx_cycle = 0            # last cycle a reply byte left

    # ------------------------------------------------------------- core model
    def default_results(self, token):
        """k beats, all present: ids derived from the token, accs descending, scale (m, e)."""
        ids = [(token * 31 + 7 * j + 1) % self.vocab for j in range(K)]
        accs = [(1 << 22) - 1 - 1000 * j - token for j in range(K)]
        accs[-1] = -(1 << 23)                   # the most negative accumulator
        m, e = 0x8000 + token % 0x8000, (-5 if token % 2 else 40000)
        return [(i, a, 1) for i, a in zip(ids, accs)], m, e

    def expected_topk(self, token) -> p.TopK:
        beats, m, e = self.results(token)
        pres = [(i, a) for i, a, pr in beats if pr]
        return p.TopK([i for i, _ in pres], [a for _, a in pres], m, sext(e, 16))

    async def run(self):
        dut = self.dut
        while True:
            await FallingEdge(dut.clk)
            rng = self.rng
            offer = bool(self.to_dut) and rng.random() < self.p_rx
            dut.rx_valid.value = int(offer)
            if offer:
                dut.rx_payload.value = self.to_dut[0]
            dut.tx_ready.value = int(rng.random() < self.p_tx)
            dut.line_error.value = int(self.cycle in self.line_error_at)
            busy = self.core != "idle"
            dut.core_busy.value = int(busy)
            dut.core_cmd_ready.value = int(not busy)
            dut.core_load_ready.value = int(not busy and rng.random() < self.p_load)
            dut.core_error.value = self.err
            dut.core_counters.value = sum(c << (48 * j) for j, c in enumerate(self.counters))
            rvalid = self.core == "result" and rng.random() < self.p_result
            dut.core_result_valid.value = int(rvalid)
            if rvalid:
                (i, a, pr), m, e = self.beats[self.beat], self.scale[0], self.scale[1]
                dut.core_result_payload_id.value = i
                dut.core_result_payload_acc.value = a & 0xFFFFFF
                dut.core_result_payload_present.value = pr
                dut.core_result_payload_last.value = int(self.beat == len(self.beats) - 1)
                dut.core_result_payload_m.value = m
                dut.core_result_payload_e.value = e & 0x3FFFF
            await ReadOnly()
            if offer and int(dut.rx_ready.value):
                self.to_dut.popleft()
            if int(dut.tx_valid.value) and int(dut.tx_ready.value):
                self.tx_cycle = self.cycle
                for ev in self.host.feed(bytes([int(dut.tx_payload.value)])):
                    assert isinstance(ev, p.Frame), f"the device sent a bad frame: {ev}"
                    self.replies.append(ev)
            if int(dut.core_load_valid.value) and int(dut.core_load_ready.value):
                self.loads.append((int(dut.core_load_payload_mem.value), int(dut.core_load_payload_addr.value),
                                   int(dut.core_load_payload_data.value)))
            if int(dut.core_cmd_valid.value) and int(dut.core_cmd_ready.value):
                reset, token = int(dut.core_cmd_payload_reset.value), int(dut.core_cmd_payload_token.value)
                self.cmds.append((reset, token))
                self.err = 0
                if reset:
                    self.core, self.count = "reset", self.rng.randint(1, 10)
                else:
                    self.core, self.count = "compute", self.rng.randint(*self.delay)
                    self.beats, m, e = self.results(token)
                    self.scale = (m, e)
                    self.beat = 0
                    self.pending_err = int(token in self.fail_tokens)
            elif self.core in ("reset", "compute"):
                self.count -= 1
                if self.count <= 0:
                    if self.core == "reset":
                        self.core = "idle"
                    else:
                        self.core = "result"
                        self.err = self.pending_err
            if rvalid and int(dut.core_result_ready.value):
                self.beat += 1
                if self.beat == len(self.beats):
                    self.core = "idle"
            self.cycle += 1

    # ------------------------------------------------------------- host helpers
    def send(self, data: bytes):
        self.to_dut.extend(data)

    def send_cmd(self, opcode: int, payload: bytes = b""):
        self.send(p.encode_frame(opcode, payload))

    async def wait_replies(self, n: int, max_cycles: int = 20000) -> list[p.Frame]:
        start = self.cycle
        while len(self.replies) < n:
            await ClockCycles(self.dut.clk, 1)
            assert self.cycle - start < max_cycles, \
                f"only {len(self.replies)} of {n} replies after {max_cycles} cycles: {self.replies}"
        out, self.replies = self.replies[:n], self.replies[n:]
        return out

    async def cmd(self, opcode: int, payload: bytes = b"", n: int = 1, **kw):
        self.send_cmd(opcode, payload)
        got = await self.wait_replies(n, **kw)
        return got[0] if n == 1 else got

    async def quiet(self, cycles: int):
        """Wait until nothing is sent to or from the device for ``cycles`` cycles and no reply is pending."""
        while True:
            await ClockCycles(self.dut.clk, 1)
            if not self.to_dut and self.cycle - self.tx_cycle > cycles and int(self.dut.idle.value):
                return


def err(frame: p.Frame) -> p.ErrorReply:
    assert frame.opcode == R.ERROR, f"expected an ERROR reply, got {frame}"
    return p.ErrorReply.unpack(frame.payload)


def expect_error(frame: p.Frame, code, command, detail=None):
    e = err(frame)
    assert (e.code, e.command) == (code, command), f"got {e}, want {E(code).name} for command {command:#x}"
    if detail is not None:
        assert e.detail == detail, f"{e}: detail {e.detail}, want {detail}"


async def start(dut, seed=0, **kw) -> Bench:
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    bench = Bench(dut, seed)
    for name, v in kw.items():
        setattr(bench, name, v)
    dut.rst.value = 1
    dut.rx_valid.value = 0
    dut.core_result_valid.value = 0
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    cocotb.start_soon(bench.run())
    return bench


async def no_model(b: Bench):
    """Clear the model flag with an empty LOAD."""
    r = await b.cmd(C.LOAD, p.Load(1, 0, b"").pack())
    assert r.opcode == R.LOAD and p.LoadAck.unpack(r.payload) == p.LoadAck(1, 0, 0)


async def set_model(b: Bench, vocab: int, h: bytes = bytes(range(16))):
    b.vocab = vocab
    r = await b.cmd(C.SET_MODEL, p.SetModel(h, vocab).pack())
    assert (r.opcode, r.payload) == (R.SET_MODEL, b""), r


# ----------------------------------------------------------------- tests

@cocotb.test()
async def test_ping_info_counters(dut):
    """PONG echoes any payload (0, 1, max bytes); INFO constants and flags; COUNTERS as u64."""
    b = await start(dut, seed=1, p_tx=0.7, p_rx=0.8)
    for data in (b"", b"\x00", bytes(range(256))[:MAX_PAYLOAD], b"\xa5\xa5hello"):
        r = await b.cmd(C.PING, data)
        assert (r.opcode, r.payload) == (R.PONG, data)
    await no_model(b)
    info = p.Info.unpack((await b.cmd(C.INFO)).payload)
    want = p.Info(p.PROTOCOL_VERSION, HW_VERSION, 0, MAX_PAYLOAD, PARAMS["rows"], PARAMS["cols"],
                  PARAMS["vec_lanes"], K, PARAMS["clock_hz"], bytes(16),
                  tuple(p.MemoryInfo(m, w, d) for m, (w, d) in sorted(MEMS.items())))
    assert info == want, f"{info} != {want}"
    await set_model(b, 300, bytes(range(100, 116)))
    info = p.Info.unpack((await b.cmd(C.INFO)).payload)
    assert info.model_set and info.flags == 1 and info.model_hash == bytes(range(100, 116))
    r = await b.cmd(C.READ_COUNTERS)
    assert r.opcode == R.COUNTERS
    assert p.Counters.unpack(r.payload).values == tuple(b.counters)
    # a reset keeps the model flag and hash (reset_less registers, like the memories)
    await FallingEdge(dut.clk)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    info = p.Info.unpack((await b.cmd(C.INFO)).payload)
    assert info.model_set and info.model_hash == bytes(range(100, 116))


@cocotb.test()
async def test_bad_frames(dut):
    """UNKNOWN_COMMAND, BAD_LENGTH per command, receive errors, LINE_ERROR; the link keeps working."""
    b = await start(dut, seed=2, p_tx=0.5)
    for op in (0x08, 0x42, 0x80, 0x84, 0xFE, 0xFF):
        for payload in (b"", b"xyz"):
            expect_error(await b.cmd(op, payload), E.UNKNOWN_COMMAND, op, op)
    wrong = {C.INFO: (1, 5), C.RESET_STATE: (1, 2), C.READ_COUNTERS: (1, 8), C.STEP: (0, 1, 3, 4),
             C.GENERATE: (0, 2, 3, 5), C.SET_MODEL: (0, 16, 19, 21), C.LOAD: (0, 1, 4)}
    for op, lens in wrong.items():
        for n in lens:
            expect_error(await b.cmd(op, bytes(n)), E.BAD_LENGTH, op, n)
    # receive errors: CRC, length above max_payload, a frame cut short (timeout)
    bad = bytearray(p.encode_frame(C.PING, b"abc"))
    bad[-2] ^= 0x10
    b.send(bytes(bad))
    expect_error((await b.wait_replies(1))[0], E.BAD_CRC, 0xFF, 0)
    b.send(bytes([p.SOF, C.PING]) + (MAX_PAYLOAD + 1).to_bytes(2, "little"))
    expect_error((await b.wait_replies(1))[0], E.BAD_LENGTH, 0xFF, 0)
    b.send(p.encode_frame(C.PING, b"cut")[:5])
    expect_error((await b.wait_replies(1, max_cycles=TIMEOUT + 200))[0], E.TRUNCATED, 0xFF, 0)
    b.line_error_at = {b.cycle + 5}
    expect_error((await b.wait_replies(1))[0], E.LINE_ERROR, 0xFF, 0)
    # several errors and good frames back to back: one reply each, in order
    b.send(bytes(bad) + p.encode_frame(0x33) + p.encode_frame(C.PING, b"ok") + p.encode_frame(C.INFO, b"x"))
    got = await b.wait_replies(4)
    expect_error(got[0], E.BAD_CRC, 0xFF)
    expect_error(got[1], E.UNKNOWN_COMMAND, 0x33, 0x33)
    assert (got[2].opcode, got[2].payload) == (R.PONG, b"ok")
    expect_error(got[3], E.BAD_LENGTH, C.INFO, 1)
    assert b.cmds == [] and b.loads == []


@cocotb.test()
async def test_load(dut):
    """Word assembly for every memory, the offset/length/range/id checks, and the model flag."""
    b = await start(dut, seed=3, p_load=0.4, p_tx=0.8, p_rx=0.9)
    rng = random.Random(3)
    for p_load in (1.0, 0.4):                   # back to back (one byte per cycle), and with stalls
        b.p_load = p_load
        b.loads.clear()
        for mem, (width, depth) in sorted(MEMS.items()):
            wb = wbytes(mem)
            words = min(depth, 5 if wb > 8 else 60)
            data = bytes(rng.randrange(256) for _ in range(wb * words))
            chunk = (MAX_PAYLOAD - p.LOAD_HEADER_BYTES) // wb * wb
            for off in range(0, len(data), chunk):
                part = data[off:off + chunk]
                r = await b.cmd(C.LOAD, p.Load(mem, off, part).pack())
                assert r.opcode == R.LOAD and p.LoadAck.unpack(r.payload) == p.LoadAck(mem, off, len(part)), r
            got = [(a, d) for m, a, d in b.loads if m == mem]
            want = [(j, int.from_bytes(data[j * wb:(j + 1) * wb], "little")) for j in range(words)]
            assert got == want, f"mem {mem}: loads {got[:3]}... != {want[:3]}..."
    # the last word of each memory, at a nonzero offset
    b.loads.clear()
    for mem, (width, depth) in sorted(MEMS.items()):
        wb = wbytes(mem)
        word = bytes(rng.randrange(256) for _ in range(wb))
        r = await b.cmd(C.LOAD, p.Load(mem, (depth - 1) * wb, word).pack())
        assert p.LoadAck.unpack(r.payload) == p.LoadAck(mem, (depth - 1) * wb, wb)
        assert b.loads[-1] == (mem, depth - 1, int.from_bytes(word, "little"))
    # rejected LOADs write nothing
    b.loads.clear()
    await set_model(b, 256)
    mem0 = min(MEMS)
    wb0 = wbytes(mem0)
    bad_mem = [m for m in range(256) if m not in MEMS]
    for m in bad_mem[:3] + [255]:
        expect_error(await b.cmd(C.LOAD, p.Load(m, 0, bytes(4)).pack()), E.BAD_ARGUMENT, C.LOAD, m)
    for mem, (width, depth) in sorted(MEMS.items()):
        wb = wbytes(mem)
        if wb > 1:
            expect_error(await b.cmd(C.LOAD, p.Load(mem, 1, bytes(wb)).pack()), E.BAD_ARGUMENT, C.LOAD, 1)
            expect_error(await b.cmd(C.LOAD, p.Load(mem, wb, bytes(wb + 1)).pack()), E.BAD_ARGUMENT, C.LOAD,
                         wb + 1)
        end = depth * wb
        expect_error(await b.cmd(C.LOAD, p.Load(mem, end, bytes(wb)).pack()), E.BAD_ARGUMENT, C.LOAD, end + wb)
        expect_error(await b.cmd(C.LOAD, p.Load(mem, end - wb, bytes(2 * wb)).pack()), E.BAD_ARGUMENT, C.LOAD,
                     end + wb)
        big = (0xFFFFFFFF // wb) * wb
        expect_error(await b.cmd(C.LOAD, p.Load(mem, big, bytes(wb)).pack()), E.BAD_ARGUMENT, C.LOAD,
                     (big + wb) & 0xFFFFFFFF)
        # an empty LOAD at the very end is in range
        r = await b.cmd(C.LOAD, p.Load(mem, end, b"").pack())
        assert p.LoadAck.unpack(r.payload) == p.LoadAck(mem, end, 0)
    assert b.loads == []
    # rejected LOADs keep the model flag; an accepted one clears it
    await set_model(b, 256)
    expect_error(await b.cmd(C.LOAD, p.Load(bad_mem[0], 0, b"").pack()), E.BAD_ARGUMENT, C.LOAD)
    assert p.Info.unpack((await b.cmd(C.INFO)).payload).model_set
    r = await b.cmd(C.LOAD, p.Load(mem0, 0, bytes(wb0)).pack())
    assert r.opcode == R.LOAD
    assert not p.Info.unpack((await b.cmd(C.INFO)).payload).model_set


@cocotb.test()
async def test_step(dut):
    """NO_MODEL, SET_MODEL checks, BAD_TOKEN, TOPK layout, absent beats, INTERNAL, RESET_STATE, queued frames."""
    b = await start(dut, seed=4, p_tx=0.6, p_result=0.5)
    await no_model(b)
    expect_error(await b.cmd(C.STEP, p.Step(0).pack()), E.NO_MODEL, C.STEP, 0)
    expect_error(await b.cmd(C.GENERATE, p.Generate(0, 3).pack()), E.NO_MODEL, C.GENERATE, 0)
    for v in (0, 65537, 0xFFFFFFFF):
        r = await b.cmd(C.SET_MODEL, bytes(16) + struct.pack("<I", v))
        expect_error(r, E.BAD_ARGUMENT, C.SET_MODEL, v)
    assert not p.Info.unpack((await b.cmd(C.INFO)).payload).model_set
    await set_model(b, 300)
    for t in (300, 301, 0xFFFF):
        expect_error(await b.cmd(C.STEP, p.Step(t).pack()), E.BAD_TOKEN, C.STEP, t)
        expect_error(await b.cmd(C.GENERATE, p.Generate(t, 2).pack()), E.BAD_TOKEN, C.GENERATE, t)
    assert b.cmds == []
    for t in (0, 1, 65, 299):
        r = await b.cmd(C.STEP, p.Step(t).pack())
        assert r.opcode == R.TOPK, r
        assert len(r.payload) == 5 + 6 * K
        assert p.TopK.unpack(r.payload) == b.expected_topk(t), (p.TopK.unpack(r.payload), b.expected_topk(t))
    assert b.cmds == [(0, t) for t in (0, 1, 65, 299)]
    # a vocabulary of 65536 accepts every token
    await set_model(b, 1 << 16)
    assert (await b.cmd(C.STEP, p.Step(0xFFFF).pack())).opcode == R.TOPK
    await set_model(b, 300)
    # fewer present beats than k: k in the reply is the present count
    base = b.default_results

    def partial(token):
        beats, m, e = base(token)
        n = 1 + token % K
        return [(i, a, int(j < n)) for j, (i, a, _) in enumerate(beats)], m, e

    b.results = partial
    for t in (0, 3, K - 1):
        r = await b.cmd(C.STEP, p.Step(t).pack())
        tk = p.TopK.unpack(r.payload)
        assert tk.k == 1 + t % K and tk == b.expected_topk(t)
    b.results = lambda token: ([(1, 2, 0)] * K, 1, 1)
    expect_error(await b.cmd(C.STEP, p.Step(5).pack()), E.INTERNAL, C.STEP, INTERNAL_NO_RESULT)
    b.results = base
    b.fail_tokens = {7}
    expect_error(await b.cmd(C.STEP, p.Step(7).pack()), E.INTERNAL, C.STEP, INTERNAL_CORE_ERROR)
    assert (await b.cmd(C.STEP, p.Step(8).pack())).opcode == R.TOPK
    # RESET_STATE: one reset command, reply after busy drops
    b.cmds.clear()
    r = await b.cmd(C.RESET_STATE)
    assert (r.opcode, r.payload) == (R.RESET_STATE, b"") and b.cmds == [(1, 0)]
    # frames sent during a STEP wait for it (no BUSY): replies in order
    b.delay = (300, 400)
    b.send_cmd(C.STEP, p.Step(9).pack())
    b.send_cmd(C.PING, b"during step")
    b.send_cmd(C.INFO)
    got = await b.wait_replies(3)
    assert [f.opcode for f in got] == [R.TOPK, R.PONG, R.INFO] and got[1].payload == b"during step"


@cocotb.test()
async def test_generate(dut):
    """Token chaining, GENERATE_DONE, count 0, BUSY for every frame meanwhile, early end on an error."""
    b = await start(dut, seed=5, p_tx=0.7)
    await set_model(b, 300)
    b.cmds.clear()
    got = await b.cmd(C.GENERATE, p.Generate(42, 5).pack(), n=6)
    tokens = [42]
    for f in got[:5]:
        assert f.opcode == R.TOPK
        tk = p.TopK.unpack(f.payload)
        assert tk == b.expected_topk(tokens[-1])
        tokens.append(tk.ids[0])
    assert b.cmds == [(0, t) for t in tokens[:5]]
    assert got[5].opcode == R.GENERATE_DONE and p.GenerateDone.unpack(got[5].payload).count == 5
    r = await b.cmd(C.GENERATE, p.Generate(1, 0).pack())
    assert r.opcode == R.GENERATE_DONE and p.GenerateDone.unpack(r.payload).count == 0
    r = await b.cmd(C.GENERATE, p.Generate(1, 1).pack(), n=2)
    assert [f.opcode for f in r] == [R.TOPK, R.GENERATE_DONE] and p.GenerateDone.unpack(r[1].payload).count == 1

    # frames during a GENERATE: each answered BUSY (its opcode), receive errors reported, in between the TOPKs
    b.delay = (400, 500)
    b.send_cmd(C.GENERATE, p.Generate(3, 3).pack())
    await ClockCycles(dut.clk, 100)
    bad = bytearray(p.encode_frame(C.PING, b"zz"))
    bad[4] ^= 1
    others = [(C.PING, b"x" * 40), (C.INFO, b""), (0x42, b"junk"), (C.STEP, p.Step(1).pack()),
              (C.LOAD, p.Load(1, 0, b"\x01\x02").pack()), (C.SET_MODEL, bytes(20)), (C.GENERATE, bytes(4))]
    for op, payload in others:
        b.send_cmd(op, payload)
    b.send(bytes(bad))
    got = await b.wait_replies(3 + 1 + len(others) + 1, max_cycles=20000)
    assert got[-1].opcode == R.GENERATE_DONE and p.GenerateDone.unpack(got[-1].payload).count == 3
    topks = [f for f in got if f.opcode == R.TOPK]
    errors = [err(f) for f in got if f.opcode == R.ERROR]
    assert len(topks) == 3 and len(errors) == len(others) + 1
    assert [(e.code, e.command) for e in errors] == [(E.BUSY, op) for op, _ in others] + [(E.BAD_CRC, 0xFF)]
    assert got.index(topks[0]) > 0, "the BUSY replies should come while the first step computes"
    assert b.loads == [], "a LOAD during GENERATE must not write"
    assert p.Info.unpack((await b.cmd(C.INFO)).payload).model_set, "SET_MODEL during GENERATE must not apply"

    # an error ends the run: ERROR INTERNAL instead of the failing step's TOPK, then GENERATE_DONE
    b.delay = (3, 20)
    first = b.expected_topk(10).ids[0]
    b.fail_tokens = {first}
    got = await b.cmd(C.GENERATE, p.Generate(10, 4).pack(), n=3)
    assert got[0].opcode == R.TOPK
    expect_error(got[1], E.INTERNAL, C.GENERATE, INTERNAL_CORE_ERROR)
    assert p.GenerateDone.unpack(got[2].payload).count == 1
    # ids[0] beyond the vocabulary cannot be fed back
    b.fail_tokens = set()
    base = b.default_results
    b.results = lambda token: ([(299 + 5, 1, 1)] + base(token)[0][1:], 1, 0)
    got = await b.cmd(C.GENERATE, p.Generate(10, 4).pack(), n=2)
    expect_error(got[0], E.INTERNAL, C.GENERATE, INTERNAL_BAD_NEXT_TOKEN)
    assert p.GenerateDone.unpack(got[1].payload).count == 0
    b.results = base
    r = await b.cmd(C.PING, b"after")
    assert (r.opcode, r.payload) == (R.PONG, b"after")


def random_frame(rng: random.Random) -> bytes:
    """A random command frame: valid, or with a wrong length, or an unknown opcode."""
    kind = rng.choice(["ping", "info", "load", "reset", "step", "gen", "ctr", "model", "unknown", "len"])
    if kind == "ping":
        return p.encode_frame(C.PING, bytes(rng.randrange(256) for _ in range(rng.choice([0, 3, MAX_PAYLOAD]))))
    if kind == "info":
        return p.encode_frame(C.INFO)
    if kind == "load":
        mem = rng.choice([*MEMS, 7])
        wb = wbytes(mem) if mem in MEMS else 2
        n = rng.randrange(0, (MAX_PAYLOAD - 5) // wb + 1) * wb + rng.choice([0, 0, 0, 1])
        off = rng.choice([0, wb, 3, rng.randrange(1 << 32)])
        return p.encode_frame(C.LOAD, struct.pack("<BI", mem, off) + bytes(rng.randrange(256) for _ in range(n)))
    if kind == "reset":
        return p.encode_frame(C.RESET_STATE)
    if kind == "step":
        return p.encode_frame(C.STEP, p.Step(rng.randrange(400)).pack())
    if kind == "gen":
        return p.encode_frame(C.GENERATE, p.Generate(rng.randrange(400), rng.randrange(4)).pack())
    if kind == "ctr":
        return p.encode_frame(C.READ_COUNTERS)
    if kind == "model":
        return p.encode_frame(C.SET_MODEL, bytes(16) + struct.pack("<I", rng.choice([0, 300, 1 << 16, 1 << 20])))
    if kind == "unknown":
        return p.encode_frame(rng.randrange(8, 256), bytes(rng.randrange(5)))
    return p.encode_frame(rng.randrange(8), bytes(rng.randrange(30)))


def check_reply(f: p.Frame):
    """Every reply is a known opcode with a payload its decoder accepts."""
    op = R(f.opcode)
    dec = {R.PONG: None, R.INFO: p.Info, R.LOAD: p.LoadAck, R.RESET_STATE: None, R.TOPK: p.TopK,
           R.GENERATE_DONE: p.GenerateDone, R.COUNTERS: p.Counters, R.SET_MODEL: None, R.ERROR: p.ErrorReply}[op]
    if dec is not None:
        dec.unpack(f.payload)
    elif op in (R.RESET_STATE, R.SET_MODEL):
        assert f.payload == b""


@cocotb.test()
async def test_fuzz(dut):
    """Random bytes, corrupted and cut frames and random commands; afterwards a PING gets its PONG."""
    n = PARAMS.get("fuzz_frames", 100)
    b = await start(dut, seed=6, p_tx=0.8, p_load=0.7, p_result=0.7, delay=(1, 30))
    rng = random.Random(6)
    for _ in range(n):
        kind = rng.choices(["frame", "garbage", "flip", "cut", "sof"], [6, 2, 2, 1, 1])[0]
        raw = bytearray(random_frame(rng))
        if kind == "garbage":
            raw = bytearray(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        elif kind == "flip":
            raw[rng.randrange(1, len(raw))] ^= 1 << rng.randrange(8)
        elif kind == "cut":
            raw = raw[:rng.randrange(1, len(raw))]
        elif kind == "sof":
            raw = bytearray([p.SOF]) + bytearray(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
        b.send(bytes(raw))
        if rng.random() < 0.1:                 # let the line go quiet sometimes (TRUNCATED)
            while b.to_dut:
                await ClockCycles(dut.clk, 16)
            await ClockCycles(dut.clk, rng.choice([TIMEOUT // 2, TIMEOUT + 5]))
        if rng.random() < 0.05:
            b.line_error_at = {b.cycle + rng.randrange(50)}
    await b.quiet(TIMEOUT + 100)
    for f in b.replies:
        check_reply(f)
    b.replies.clear()
    r = await b.cmd(C.PING, b"still alive")
    assert (r.opcode, r.payload) == (R.PONG, b"still alive")
    await ClockCycles(dut.clk, 200)
    assert b.replies == []
