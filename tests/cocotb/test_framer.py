"""cocotb tests of :mod:`mmfree.hw.framer`: ``dec_`` (FrameDecoder) and ``enc_`` (FrameEncoder).

The reference is :mod:`mmfree.protocol`: the decoder must produce exactly the
events of ``protocol.FrameDecoder`` for the same bytes (``timeout()`` where
the test leaves ``timeout`` or more idle cycles inside the stream), and the
encoder exactly the bytes of ``protocol.encode_frame``.

One loop per clock: inputs change after the falling edge; at ``ReadOnly`` the
settled valid/ready pairs say what the next rising edge transfers.
Parameters (``cocotb_params``): ``max_payload``, ``timeout``, ``fuzz_items``.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from mmfree import protocol as p
from mmfree.sim.runner import cocotb_params

PARAMS = cocotb_params()
MAX_PAYLOAD = PARAMS.get("max_payload", 64)
TIMEOUT = PARAMS.get("timeout", 24)


async def reset(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for name in ("dec_i_valid", "enc_header_valid", "enc_payload_valid"):
        getattr(dut, name).value = 0
    for name in ("dec_header_ready", "dec_payload_ready", "dec_error_ready", "enc_o_ready"):
        getattr(dut, name).value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


def bit(handle) -> int:
    return int(handle.value)


async def run_decoder(dut, items, *, p_ready=1.0, error_ready=None, seed=0, tail=None):
    """Feed ``items`` = [(byte, idle cycles after it)]; return the decoder's events.

    Events: ``protocol.Frame`` for each good frame (header plus its payload)
    and ``protocol.ErrorCode`` for each error transfer, in order. Also checks
    the payload contract: exactly ``length`` bytes, ``last`` on the final one,
    no payload before its header.
    """
    rng = random.Random(seed)
    events, frame = [], None          # frame: [opcode, length, bytearray] between header and last byte
    idx, idle, quiet = 0, 0, 0
    tail = TIMEOUT + 8 if tail is None else tail
    while True:
        await FallingEdge(dut.clk)
        offer = idle == 0 and idx < len(items)
        dut.dec_i_valid.value = int(offer)
        if offer:
            dut.dec_i_payload.value = items[idx][0]
        dut.dec_header_ready.value = int(rng.random() < p_ready)
        dut.dec_payload_ready.value = int(rng.random() < p_ready)
        dut.dec_error_ready.value = 1 if error_ready is None else int(error_ready(rng))
        await ReadOnly()
        busy = False
        if offer and bit(dut.dec_i_ready):
            idle = items[idx][1]
            idx += 1
        elif not offer and idle:
            idle -= 1
        if bit(dut.dec_header_valid):
            busy = True
            if bit(dut.dec_header_ready):
                assert frame is None, "header while a payload is still open"
                op, n = bit(dut.dec_header_payload_opcode), bit(dut.dec_header_payload_length)
                assert n <= MAX_PAYLOAD, f"header length {n} above max_payload {MAX_PAYLOAD}"
                if n == 0:
                    events.append(p.Frame(op, b""))
                else:
                    frame = [op, n, bytearray()]
        if bit(dut.dec_payload_valid):
            busy = True
            assert frame is not None, "payload.valid without a header"
            if bit(dut.dec_payload_ready):
                frame[2].append(bit(dut.dec_payload_payload_data))
                last = bit(dut.dec_payload_payload_last)
                assert last == (len(frame[2]) == frame[1]), \
                    f"last={last} at byte {len(frame[2])} of {frame[1]}"
                if last:
                    events.append(p.Frame(frame[0], bytes(frame[2])))
                    frame = None
        if bit(dut.dec_error_valid):
            busy = True
            if bit(dut.dec_error_ready):
                events.append(p.ErrorCode(bit(dut.dec_error_payload)))
        done = idx == len(items) and idle == 0 and frame is None and not busy
        quiet = quiet + 1 if done else 0
        if quiet > tail:
            return events


def reference(items, max_payload=MAX_PAYLOAD):
    """The Python decoder's events for the same bytes and idle gaps (the stream ends in silence)."""
    d = p.FrameDecoder(max_payload)
    out = []
    for byte, idle in items:
        out += d.feed(bytes([byte]))
        if idle >= TIMEOUT:
            out += d.timeout()
    out += d.timeout()
    return [e if isinstance(e, p.Frame) else e.code for e in out]


def as_items(data: bytes, idle: int = 0):
    return [(b, idle) for b in data]


def describe(events):
    return [f"Frame({e.opcode:#x}, {len(e.payload)} B)" if isinstance(e, p.Frame) else e.name for e in events]


async def check_decoder(dut, items, **kw):
    got = await run_decoder(dut, items, **kw)
    exp = reference(items)
    assert got == exp, f"decoder events differ:\n got {describe(got)}\n exp {describe(exp)}"
    return got


@cocotb.test()
async def test_decoder_directed(dut):
    """Good frames of every size class, garbage, each error kind, and resynchronization after each."""
    await reset(dut)
    good = [p.encode_frame(op, bytes((i * 7 + op) & 0xFF for i in range(n)))
            for op, n in ((0x01, 0), (0x02, 1), (0x84, 2), (0x7F, MAX_PAYLOAD - 1), (0xFF, MAX_PAYLOAD))]
    bad_crc = bytearray(p.encode_frame(0x04, b"\x41\x00"))
    bad_crc[-1] ^= 0x80
    too_long = bytes([p.SOF, 0x02]) + (MAX_PAYLOAD + 1).to_bytes(2, "little")
    items = as_items(b"\x00garbage\xff" + good[0] + good[1])
    items += as_items(bytes(bad_crc) + good[2])
    items += as_items(too_long + b"\x13\x37" + good[3])
    items += as_items(good[4][:7])
    items[-1] = (items[-1][0], TIMEOUT)                       # a frame cut short: TRUNCATED
    items += as_items(good[4] + good[0])
    events = await check_decoder(dut, items)
    assert describe(events).count("BAD_CRC") == 1 and describe(events).count("TRUNCATED") == 1
    assert sum(isinstance(e, p.Frame) for e in events) == 6


@cocotb.test()
async def test_decoder_timeout_boundary(dut):
    """``timeout - 1`` idle cycles inside a frame are fine; ``timeout`` abandon it."""
    await reset(dut)
    frame = p.encode_frame(0x05, b"abc")
    for cut in range(1, len(frame)):
        ok = as_items(frame)
        ok[cut - 1] = (ok[cut - 1][0], TIMEOUT - 1)
        assert await check_decoder(dut, ok) == [p.Frame(0x05, b"abc")]
        cut_items = as_items(frame)
        cut_items[cut - 1] = (cut_items[cut - 1][0], TIMEOUT)
        assert await check_decoder(dut, cut_items) == [p.ErrorCode.TRUNCATED]


@cocotb.test()
async def test_decoder_error_not_blocking(dut):
    """With ``error.ready`` low, decoding goes on; the first waiting error is kept, later ones dropped."""
    await reset(dut)
    bad = bytearray(p.encode_frame(0x09, b"xyz"))
    bad[4] ^= 1
    too_long = bytes([p.SOF, 0x02, 0xFF, 0xFF])
    good = p.encode_frame(0x0A, b"ok")
    items = as_items(bytes(bad) + too_long + good)
    state = {"n": 0}

    def error_ready(rng):                 # low for the first 150 cycles
        state["n"] += 1
        return state["n"] > 150

    got = await run_decoder(dut, items, error_ready=error_ready)
    assert got == [p.Frame(0x0A, b"ok"), p.ErrorCode.BAD_CRC], describe(got)


def fuzz_items(rng: random.Random, n: int):
    """A random byte stream: good frames, garbage, corrupted, oversized and cut frames, random gaps."""
    items = []
    for _ in range(n):
        kind = rng.choices(["good", "garbage", "flip", "long", "cut", "short"], [6, 2, 2, 1, 1, 1])[0]
        size = rng.choice([0, 1, 2, rng.randrange(MAX_PAYLOAD + 1), MAX_PAYLOAD])
        raw = bytearray(p.encode_frame(rng.randrange(256), bytes(rng.randrange(256) for _ in range(size))))
        if kind == "garbage":
            raw = bytearray(rng.randrange(256) for _ in range(rng.randrange(1, 12)))
        elif kind == "flip":
            raw[rng.randrange(1, len(raw))] ^= 1 << rng.randrange(8)
        elif kind == "long":
            raw[2:4] = rng.randrange(MAX_PAYLOAD + 1, 1 << 16).to_bytes(2, "little")
        elif kind == "short":                 # the length says less than what follows
            raw[2:4] = rng.randrange(0, max(1, size)).to_bytes(2, "little")
        if kind == "cut":
            raw = raw[:rng.randrange(1, len(raw))]
        for j, b in enumerate(raw):
            gap = 0
            r = rng.random()
            if r < 0.05:
                gap = rng.randrange(1, TIMEOUT)
            elif r < 0.06:
                gap = TIMEOUT + rng.randrange(4)
            items.append((b, gap))
        if kind == "cut":
            items[-1] = (items[-1][0], TIMEOUT + rng.randrange(4))
    return items


@cocotb.test()
async def test_decoder_fuzz(dut):
    """Random streams under random backpressure match the Python decoder event for event."""
    await reset(dut)
    rng = random.Random(2024)
    n = PARAMS.get("fuzz_items", 60)
    kinds = set()
    for round_ in range(4):
        items = fuzz_items(rng, n)
        events = await check_decoder(dut, items, p_ready=(1.0, 0.5, 0.8, 0.3)[round_], seed=round_)
        kinds |= set(describe(events))
    assert {"BAD_CRC", "BAD_LENGTH", "TRUNCATED"} <= kinds, kinds


async def run_encoder(dut, frames, *, p_valid=1.0, p_ready=1.0, seed=0):
    """Send ``frames`` through the encoder; return the output bytes and the cycles used."""
    rng = random.Random(seed)
    out = bytearray()
    fi, pi, in_payload = 0, 0, False
    cycles = quiet = 0
    while True:
        await FallingEdge(dut.clk)
        cycles += 1
        hv = not in_payload and fi < len(frames) and rng.random() < p_valid
        dut.enc_header_valid.value = int(hv)
        if hv:
            dut.enc_header_payload_opcode.value = frames[fi].opcode
            dut.enc_header_payload_length.value = len(frames[fi].payload)
        pv = in_payload and rng.random() < p_valid
        dut.enc_payload_valid.value = int(pv)
        if pv:
            data = frames[fi].payload
            dut.enc_payload_payload_data.value = data[pi]
            dut.enc_payload_payload_last.value = int(pi == len(data) - 1)
        dut.enc_o_ready.value = int(rng.random() < p_ready)
        await ReadOnly()
        if bit(dut.enc_o_valid) and bit(dut.enc_o_ready):
            out.append(bit(dut.enc_o_payload))
        if hv and bit(dut.enc_header_ready):
            if frames[fi].payload:
                in_payload, pi = True, 0
            else:
                fi += 1
        elif pv and bit(dut.enc_payload_ready):
            pi += 1
            if pi == len(frames[fi].payload):
                in_payload, fi = False, fi + 1
        quiet = quiet + 1 if fi == len(frames) and not bit(dut.enc_o_valid) else 0
        if quiet > 4:
            return bytes(out), cycles


@cocotb.test()
async def test_encoder(dut):
    """Encoder bytes equal ``protocol.encode_frame``; one byte per cycle; decodable by the reference."""
    await reset(dut)
    rng = random.Random(5)
    frames = [p.Frame(0x81, b""), p.Frame(0x84, b"\x01"), p.Frame(0xFF, bytes(range(256)) * 4)]
    out, cycles = await run_encoder(dut, frames)
    assert out == b"".join(f.encode() for f in frames)
    # one byte per cycle plus one idle cycle per frame (and the loop's 5 quiet cycles)
    assert cycles <= len(out) + len(frames) + 8, f"{cycles} cycles for {len(out)} bytes"
    for seed, (pv, pr) in enumerate([(0.5, 1.0), (1.0, 0.4), (0.6, 0.6)]):
        frames = [p.Frame(rng.randrange(256), bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 37, 300]))))
                  for _ in range(8)]
        out, _ = await run_encoder(dut, frames, p_valid=pv, p_ready=pr, seed=seed)
        assert out == b"".join(f.encode() for f in frames)
        assert p.FrameDecoder().feed(out) == frames
