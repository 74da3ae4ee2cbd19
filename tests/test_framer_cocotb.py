# amaranth: UnusedElaboratable=no
"""Link frame decoder/encoder and CRC block (mmfree/hw/framer.py, mmfree/hw/crc.py).

The framer runs under cocotb on Verilator (tests/cocotb/test_framer.py)
against the Python reference in mmfree/protocol.py; the CRC block and the
constructor checks run here directly.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from mmfree import protocol
from mmfree.hw.crc import CRC16
from mmfree.hw.framer import FrameDecoder, FrameEncoder
from mmfree.sim.runner import plain_ports, run_cocotb

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "cocotb"


def _run(fuzz_items: int, testcase=None):
    design = {"dec": FrameDecoder(max_payload=64, timeout=24), "enc": FrameEncoder()}
    run_cocotb(design, test_module="test_framer", build_dir=BUILD / "framer",
               module_dirs=[REPO / "tests" / "cocotb"],
               params={"max_payload": 64, "timeout": 24, "fuzz_items": fuzz_items}, testcase=testcase)


def test_framer_cocotb():
    _run(fuzz_items=150)


@pytest.mark.slow
def test_framer_fuzz_long_cocotb():
    _run(fuzz_items=5000, testcase="test_decoder_fuzz")


@pytest.mark.parametrize("kw, msg", [
    ({"timeout": 0}, r"timeout must be a positive integer number of clock cycles, got 0"),
    ({"timeout": 10.0}, r"timeout must be a positive integer number of clock cycles, got 10\.0"),
    ({"timeout": True}, r"timeout must be a positive integer number of clock cycles, got True"),
    ({"timeout": 10, "max_payload": 63}, r"max_payload must be an integer in \[64, 4096\], got 63"),
    ({"timeout": 10, "max_payload": 4097}, r"max_payload must be an integer in \[64, 4096\], got 4097"),
    ({"timeout": 10, "max_payload": "64"}, r"max_payload must be an integer in \[64, 4096\], got '64'"),
])
def test_frame_decoder_rejects(kw, msg):
    with pytest.raises(ValueError, match=msg):
        FrameDecoder(**kw)


def test_frame_decoder_requires_timeout():
    with pytest.raises(TypeError, match="timeout"):
        FrameDecoder(max_payload=64)


def test_framer_ports():
    d = FrameDecoder(timeout=100)
    assert d.max_payload == protocol.MAX_PAYLOAD and d.timeout == 100
    assert len(d.i.payload) == 8 and len(d.error.payload) == 8
    assert len(d.header.payload.opcode) == 8 and len(d.header.payload.length) == 16
    assert len(d.payload.payload.data) == 8 and len(d.payload.payload.last) == 1
    e = FrameEncoder()
    assert len(e.o.payload) == 8
    m = Module()                 # a decoder's outputs plug straight into an encoder (an echo path)
    wiring.connect(m, d.header, e.header)
    wiring.connect(m, d.payload, e.payload)
    # the plain port names tests/cocotb/test_framer.py drives
    names = plain_ports({"dec": FrameDecoder(timeout=5), "enc": FrameEncoder()})
    for n in ("dec_i_payload", "dec_header_payload_opcode", "dec_header_payload_length", "dec_payload_payload_last",
              "dec_error_valid", "enc_header_ready", "enc_payload_payload_data", "enc_o_ready"):
        assert n in names


@pytest.mark.parametrize("kw, msg", [
    ({"poly": 0x10000}, r"poly must be an integer in \[0, 0xFFFF\], got 65536"),
    ({"poly": 0x1020}, r"poly must have its x\^0 term \(an odd value\), got 0x1020"),
    ({"init": -1}, r"init must be an integer in \[0, 0xFFFF\], got -1"),
    ({"init": 1.5}, r"init must be an integer in \[0, 0xFFFF\], got 1\.5"),
])
def test_crc_rejects(kw, msg):
    with pytest.raises(ValueError, match=msg):
        CRC16(**kw)


def test_crc_block_matches_protocol():
    """CRC16 in Amaranth's simulator: check value, clear+en restarts, idle cycles hold."""
    dut = CRC16()
    rng = random.Random(3)
    seqs = [b"123456789", b"", bytes(rng.randrange(256) for _ in range(50)), b"\x00", b"\xff\xff"]
    got = []

    async def bench(ctx):
        assert ctx.get(dut.crc) == 0xFFFF
        for seq in seqs:
            ctx.set(dut.clear, 1)
            ctx.set(dut.en, 0)
            await ctx.tick()
            for i, b in enumerate(seq):
                ctx.set(dut.clear, 0)
                ctx.set(dut.data, b)
                ctx.set(dut.en, 1)
                await ctx.tick()
                if rng.random() < 0.3:          # idle cycles in between change nothing
                    ctx.set(dut.en, 0)
                    ctx.set(dut.data, rng.randrange(256))
                    await ctx.tick()
            ctx.set(dut.en, 0)
            got.append(ctx.get(dut.crc))
        # clear and en together: a new sequence starting with this byte
        ctx.set(dut.clear, 1)
        ctx.set(dut.en, 1)
        ctx.set(dut.data, ord("1"))
        await ctx.tick()
        ctx.set(dut.clear, 0)
        for b in b"23456789":
            ctx.set(dut.data, b)
            await ctx.tick()
        ctx.set(dut.en, 0)
        got.append(ctx.get(dut.crc))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == [protocol.crc16(s) for s in seqs] + [0x29B1]
