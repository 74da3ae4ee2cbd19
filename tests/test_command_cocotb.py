# amaranth: UnusedElaboratable=no
"""Command decoder (mmfree/hw/command.py) behind the real frame decoder and encoder (LinkTop).

The cocotb testbench (tests/cocotb/test_command.py) speaks bytes with
mmfree.protocol's encoders and decoders and plays the core's side of the
hw/coreif.py contract in Python. Constructor checks run here directly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mmfree import protocol
from mmfree.hw.command import CommandDecoder, command_lengths, memory_table
from mmfree.hw.soc import LinkTop
from mmfree.sim.runner import plain_ports, run_cocotb
from mmfree.targets import Memory, Target, get

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "cocotb"

#: A sim-like target with small memories: 52-byte weight words (not a power of two).
TARGET = Target(name="cmdtest", rows=16, cols=16, vec_lanes=16, packing="b3", emb_bits=16, topk=8, max_input=None,
                memories=(Memory("wmem", 416, 40), Memory("cmem", 16, 300), Memory("vmem", 32, 64),
                          Memory("pmem", 64, 32)), clock_hz=12_345_678)
MAX_PAYLOAD = 256
TIMEOUT = 64
#: iCEBreaker-like: power-of-two words up to 64 bits, topk 4, and a smaller max_payload (narrower length registers).
ICE_TARGET = Target(name="cmdtest-ice", rows=5, cols=4, vec_lanes=1, packing="b3", emb_bits=8, topk=4,
                    max_input=None, memories=(Memory("wmem", 32, 40), Memory("cmem", 16, 300),
                                              Memory("vmem", 32, 64), Memory("pmem", 64, 32)),
                    clock_hz=24_000_000)
ICE_MAX_PAYLOAD = 128


def _params(fuzz_frames: int, target=TARGET, max_payload=MAX_PAYLOAD) -> dict:
    return {"max_payload": max_payload, "timeout": TIMEOUT, "topk": target.topk, "rows": target.rows,
            "cols": target.cols, "vec_lanes": target.vec_lanes, "clock_hz": target.clock_hz,
            "memories": [[m.mem, m.width, m.depth] for m in memory_table(target)], "fuzz_frames": fuzz_frames}


def _run(fuzz_frames: int, testcase=None, seed=None, target=TARGET, max_payload=MAX_PAYLOAD, build="command"):
    run_cocotb(LinkTop(target, max_payload=max_payload, timeout=TIMEOUT), test_module="test_command",
               build_dir=BUILD / build, module_dirs=[REPO / "tests" / "cocotb"],
               params=_params(fuzz_frames, target, max_payload), testcase=testcase, seed=seed)


def test_command_cocotb():
    _run(fuzz_frames=120, seed=1)


def test_command_icebreaker_shape_cocotb():
    _run(fuzz_frames=120, seed=2, target=ICE_TARGET, max_payload=ICE_MAX_PAYLOAD, build="command_ice")


@pytest.mark.slow
def test_command_fuzz_long_cocotb():
    _run(fuzz_frames=3000, testcase="test_fuzz", seed=7)


def test_command_ports():
    names = plain_ports(LinkTop(TARGET, max_payload=MAX_PAYLOAD, timeout=TIMEOUT))
    for n in ("rx_valid", "rx_payload", "tx_ready", "core_load_payload_data", "core_cmd_payload_token",
              "core_result_payload_acc", "core_result_payload_e", "core_busy", "core_error", "core_counters",
              "line_error", "idle", "model_set", "active"):
        assert n in names, n
    d = CommandDecoder(TARGET)
    assert d.data_bits == 416 and len(d.core.load.payload.data) == 416
    assert len(d.core.counters) == len(protocol.COUNTER_NAMES) and len(d.core.counters.as_value()) == 48 * 8


def test_info_template():
    d = CommandDecoder(TARGET, max_payload=MAX_PAYLOAD, clock_hz=5)
    info = protocol.Info.unpack(d.info_template())
    assert (info.rows, info.cols, info.topk, info.clock_hz, info.max_payload) == (16, 16, 8, 5, MAX_PAYLOAD)
    assert [(m.mem, m.width, m.depth) for m in info.memories] == [(0, 416, 40), (1, 16, 300), (2, 32, 64), (3, 64, 32)]
    assert CommandDecoder(get("ulx3s-85f")).info_template()[13:17] == (100_000_000).to_bytes(4, "little")


def test_command_lengths_cover_every_command():
    assert set(command_lengths()) == set(protocol.Command)


@pytest.mark.parametrize("kw, exc, msg", [
    ({"target": get("sim")}, ValueError, r"memory wmem has no depth"),
    ({"target": TARGET, "max_payload": 63}, ValueError, r"max_payload must be an integer in \[64, 4096\], got 63"),
    ({"target": TARGET, "data_bits": 64}, ValueError, r"data_bits 64 is narrower than a memory word \(416 bits\)"),
    ({"target": dataclasses.replace(TARGET, topk=256)}, ValueError, r"topk must be in 1..255, got 256"),
])
def test_command_decoder_rejects(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        CommandDecoder(**kw)


def test_memories_override():
    """``memories`` (a core's name -> (width, depth)) replaces the target's shapes."""
    d = CommandDecoder(get("sim"), memories={"wmem": (416, 10), "cmem": (16, 20), "vmem": (32, 30),
                                             "pmem": (64, 40), "qbuf": (8, 99)})
    assert [(m.mem, m.depth) for m in d.mems] == [(0, 10), (1, 20), (2, 30), (3, 40)]
