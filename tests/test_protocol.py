"""The link protocol contract (mmfree/protocol.py): CRC, frames, streaming decoder, payloads."""

from __future__ import annotations

import random

import pytest

from mmfree import protocol as p
from mmfree.errors import LinkError
from mmfree.protocol import (CRC_INIT, MAX_PAYLOAD, SOF, Command, ErrorCode, Frame, FrameDecoder, FrameError,
                             ProtocolError, Reply, crc16, decode_frame, encode_frame)


def crc16_bitwise(data: bytes) -> int:
    """CRC-16/CCITT-FALSE straight from the definition (reference for the table version)."""
    crc = 0xFFFF
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


# --------------------------------------------------------------------------- CRC

def test_crc_check_value():
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == CRC_INIT == 0xFFFF


def test_crc_table_matches_bitwise_and_chains():
    rng = random.Random(7)
    for n in (1, 2, 5, 64, 300):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert crc16(data) == crc16_bitwise(data)
        cut = rng.randrange(n + 1)
        assert crc16(data[cut:], crc16(data[:cut])) == crc16(data)
        crc = CRC_INIT
        for b in data:
            crc = p.crc16_update(crc, b)
        assert crc == crc16(data)


# --------------------------------------------------------------------------- frames

def test_frame_bytes_exactly():
    assert encode_frame(Command.STEP, p.Step(65).pack()) == bytes.fromhex("a504020041009f4b")  # docs/protocol.md
    f = encode_frame(Command.STEP, bytes([0x41, 0x00]))
    body = bytes([0x04, 0x02, 0x00, 0x41, 0x00])
    crc = crc16(body)
    assert f == bytes([SOF]) + body + bytes([crc & 0xFF, crc >> 8])
    assert encode_frame(Command.INFO) == bytes([0xA5, 0x01, 0x00, 0x00]) + crc16(b"\x01\x00\x00").to_bytes(2, "little")


@pytest.mark.parametrize("n", [0, 1, 2, 255, 256, 1000, MAX_PAYLOAD])
def test_encode_decode_roundtrip(n):
    payload = bytes((i * 37 + n) & 0xFF for i in range(n))
    f = encode_frame(0x5C, payload)
    assert len(f) == p.OVERHEAD + n
    assert decode_frame(f) == Frame(0x5C, payload)
    assert Frame(0x5C, payload).encode() == f


@pytest.mark.parametrize("opcode", [-1, 256, 1.0, True, "1"])
def test_encode_rejects_opcode(opcode):
    with pytest.raises(ProtocolError, match=r"opcode must be an integer in \[0, 255\]"):
        encode_frame(opcode)


def test_encode_rejects_long_payload():
    with pytest.raises(ProtocolError, match="payload of 4097 bytes exceeds max_payload 4096"):
        encode_frame(1, bytes(MAX_PAYLOAD + 1))
    with pytest.raises(ProtocolError, match="payload of 65 bytes exceeds max_payload 64"):
        encode_frame(1, bytes(65), max_payload=64)


def test_protocol_error_is_link_error():
    assert issubclass(ProtocolError, LinkError)


def test_decode_frame_errors():
    good = encode_frame(3, b"abc")
    with pytest.raises(ProtocolError, match="shorter than the 6-byte minimum"):
        decode_frame(good[:5])
    with pytest.raises(ProtocolError, match="starts with 0x00, not SOF 0xA5"):
        decode_frame(b"\x00" + good[1:])
    with pytest.raises(ProtocolError, match="must be 9 bytes, got 10"):
        decode_frame(good + b"\x00")
    with pytest.raises(ProtocolError, match="frame length 4097 exceeds max_payload 4096"):
        decode_frame(bytes([SOF, 1, 0x01, 0x10]) + bytes(4099))
    bad = bytearray(good)
    bad[5] ^= 0x01
    with pytest.raises(ProtocolError, match=r"frame CRC 0x[0-9A-F]{4} does not match computed 0x[0-9A-F]{4}"):
        decode_frame(bytes(bad))


# --------------------------------------------------------------------------- streaming decoder

@pytest.mark.parametrize("value", [63, 4097, 64.0, None, True])
def test_decoder_rejects_max_payload(value):
    with pytest.raises(ValueError, match=r"max_payload must be an integer in \[64, 4096\]"):
        FrameDecoder(max_payload=value)


def test_decoder_skips_garbage_and_splits_anywhere():
    frames = [Frame(1), Frame(0x7E, b"\xa5\xa5\x00"), Frame(4, bytes(range(200)))]
    stream = b"\x00\x13garbage" + frames[0].encode() + b"\xff" + frames[1].encode() + frames[2].encode()
    assert FrameDecoder().feed(stream) == frames
    for chunk in (1, 2, 3, 7):
        d = FrameDecoder()
        got = []
        for i in range(0, len(stream), chunk):
            got += d.feed(stream[i:i + chunk])
        assert got == frames
        assert not d.in_frame


def test_decoder_bad_crc_then_resync():
    good = encode_frame(2, b"hello")
    bad = bytearray(good)
    bad[-1] ^= 0x40
    rx = (bad[-1] << 8) | bad[-2]
    assert FrameDecoder().feed(bytes(bad) + good) == [FrameError(ErrorCode.BAD_CRC, rx), Frame(2, b"hello")]


def test_decoder_bad_length_then_resync():
    good = encode_frame(2, b"x" * 64)
    d = FrameDecoder(max_payload=64)
    out = d.feed(bytes([SOF, 9, 65, 0]) + b"junk" + good)
    assert out == [FrameError(ErrorCode.BAD_LENGTH, 65), Frame(2, b"x" * 64)]


def test_decoder_timeout_reports_truncated_and_recovers():
    d = FrameDecoder()
    good = encode_frame(5, b"\x01\x02\x03\x04")
    assert d.timeout() == []
    for cut in range(1, len(good)):
        assert d.feed(good[:cut]) == []
        assert d.in_frame
        assert d.timeout() == [FrameError(ErrorCode.TRUNCATED)]
        assert not d.in_frame
        assert d.feed(good) == [Frame(5, b"\x01\x02\x03\x04")]


def test_decoder_fuzz_clean_streams():
    """Random frames separated by SOF-free garbage are all recovered exactly."""
    rng = random.Random(1234)
    d = FrameDecoder(max_payload=300)
    for _ in range(200):
        sent, stream = [], bytearray()
        for _ in range(rng.randrange(1, 6)):
            stream += bytes(rng.choice([b for b in range(256) if b != SOF]) for _ in range(rng.randrange(0, 8)))
            f = Frame(rng.randrange(256), bytes(rng.randrange(256) for _ in range(rng.randrange(0, 301))))
            sent.append(f)
            stream += f.encode()
        assert d.feed(bytes(stream)) == sent


def test_decoder_fuzz_corruption_never_breaks_recovery():
    """Random garbage, bit flips and cuts: never an exception, never an invented frame,
    and after one timeout of silence the next clean frame always decodes."""
    rng = random.Random(99)
    d = FrameDecoder(max_payload=128)
    sent: set[Frame] = set()
    counts = {"frames": 0, "errors": 0}
    for _ in range(500):
        f = Frame(rng.randrange(256), bytes(rng.randrange(256) for _ in range(rng.randrange(0, 129))))
        sent.add(f)
        raw = bytearray(f.encode())
        kind = rng.randrange(4)
        if kind == 0:
            raw = bytearray(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        elif kind == 1:
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        elif kind == 2:
            raw = raw[:rng.randrange(1, len(raw))]
        for e in d.feed(bytes(raw)):
            if isinstance(e, Frame):
                assert e in sent
                counts["frames"] += 1
            else:
                assert isinstance(e, FrameError) and e.code in (ErrorCode.BAD_CRC, ErrorCode.BAD_LENGTH)
                counts["errors"] += 1
        if rng.randrange(3) == 0:
            d.timeout()
            clean = Frame(0x42, bytes([rng.randrange(256)]))
            sent.add(clean)
            assert d.feed(clean.encode()) == [clean]
    assert counts["frames"] > 50 and counts["errors"] > 50


# --------------------------------------------------------------------------- codes and payloads

def test_codes_are_distinct_and_in_range():
    assert all(c < 0x80 for c in Command) and all(r >= 0x80 for r in Reply)
    assert len({int(c) for c in Command}) == len(Command)
    assert p.reply_to(Command.STEP) is Reply.TOPK
    assert p.reply_to(Command.GENERATE) is Reply.GENERATE_DONE
    assert p.reply_to(Command.PING) is Reply.PONG
    for c in Command:
        assert p.reply_to(c).name == {"PING": "PONG", "STEP": "TOPK", "GENERATE": "GENERATE_DONE",
                                      "READ_COUNTERS": "COUNTERS"}.get(c.name, c.name)
    assert [int(e) for e in ErrorCode][:4] == [1, 2, 3, 4]


@pytest.mark.parametrize("msg", [
    p.Load(p.MemoryId.WMEM, 0x12345678, b"\x01\x02\x03"),
    p.Load(3, 0, b""),
    p.LoadAck(1, 1024, 4091),
    p.Step(31999),
    p.Generate(65, 300),
    p.GenerateDone(300),
    p.TopK((5, 9, 2), (1000, -7, -8_388_608), 40000, -21),
    p.Info(1, 0x0102, 1, 4096, 16, 16, 16, 8, 100_000_000, bytes(range(16)),
           (p.MemoryInfo(0, 416, 6144), p.MemoryInfo(1, 16, 32768))),
    p.Counters((1, 2, 3, 4, 5, 6, 7, 8, 2**64 - 1)),
    p.ErrorReply(ErrorCode.BAD_TOKEN, Command.STEP, 40000),
    p.SetModel(b"\xff" * 16, 256),
])
def test_payload_roundtrip(msg):
    packed = msg.pack()
    assert type(msg).unpack(packed) == msg
    assert len(packed) <= MAX_PAYLOAD


def test_payload_layouts_exactly():
    assert p.Step(0x1234).pack() == b"\x34\x12"
    assert p.Load(2, 0x01020304, b"\xaa").pack() == b"\x02\x04\x03\x02\x01\xaa"
    t = p.TopK((1, 2), (-1, 3), 0x8000, -3)
    assert t.pack() == bytes([2, 0x00, 0x80, 0xFD, 0xFF, 1, 0, 2, 0]) + b"\xff\xff\xff\xff\x03\x00\x00\x00"
    assert t.logits() == [-1 * 0x8000 * 2.0 ** -19, 3 * 0x8000 * 2.0 ** -19]
    assert p.ErrorReply(ErrorCode.BAD_CRC, 0xFF, 0xBEEF).pack() == b"\x01\xff\xef\xbe\x00\x00"
    info = p.Info(1, 2, 0, 4096, 4, 5, 1, 4, 24_000_000, bytes(16), (p.MemoryInfo(0, 32, 32768),))
    assert len(info.pack()) == 34 + 7 and info.lanes == 20 and not info.model_set
    assert p.Counters((7, 8)).as_dict() == {"cycles": 7, "tokens": 8}


def test_payload_errors():
    with pytest.raises(ProtocolError, match=r"STEP payload must be 2 bytes, got 3"):
        p.Step.unpack(b"\x00\x00\x00")
    with pytest.raises(ProtocolError, match=r"token must be an integer in \[0, 65535\], got 65536"):
        p.Step(65536).pack()
    with pytest.raises(ProtocolError, match=r"LOAD payload must be at least 5 bytes, got 4"):
        p.Load.unpack(b"\x00" * 4)
    with pytest.raises(ProtocolError, match=r"TOPK \(k=2\) payload must be 17 bytes, got 16"):
        p.TopK.unpack(p.TopK((1, 2), (3, 4), 1, 0).pack()[:-1])
    with pytest.raises(ProtocolError, match="TOPK needs as many ids as accs, got 2 and 1"):
        p.TopK((1, 2), (3,), 1, 0)
    with pytest.raises(ProtocolError, match=r"TOPK k must be in \[1, 255\], got 0"):
        p.TopK((), (), 1, 0)
    with pytest.raises(ProtocolError, match=r"accs\[0\] must be an integer in \[-2147483648, 2147483647\]"):
        p.TopK((1,), (2**31,), 1, 0).pack()
    with pytest.raises(ProtocolError, match="model_hash must be 16 bytes, got 3"):
        p.SetModel(b"abc").pack()
    with pytest.raises(ProtocolError, match=r"vocab must be in 1\.\.65536, got 0"):
        p.SetModel(bytes(16), 0).pack()
    with pytest.raises(ProtocolError, match=r"INFO \(2 memories\) payload must be 48 bytes, got 41"):
        raw = bytearray(p.Info(1, 1, 0, 64, 1, 1, 1, 1, 1, bytes(16), (p.MemoryInfo(0, 8, 8),)).pack())
        raw[33] = 2                                      # memory count claims 2, one is present
        p.Info.unpack(bytes(raw))
    with pytest.raises(ProtocolError, match=r"COUNTERS \(3 values\) payload must be 25 bytes, got 17"):
        p.Counters.unpack(b"\x03" + bytes(16))


def test_error_reply_text_and_unknown_code():
    assert str(p.ErrorReply(ErrorCode.NO_MODEL, Command.STEP)) == "device error NO_MODEL (command STEP, detail 0)"
    e = p.ErrorReply.unpack(b"\x77\x55\x00\x00\x00\x00")
    assert e.code == 0x77 and str(e) == "device error 0x77 (command 0x55, detail 0)"
