"""The system end to end: the Verilator harness of the SoC (link, command decoder, real core) and the host driver.

Issue 6's acceptance on the real thing: 100 KB of random bytes into the
harness's port, then ``mmfree generate --port socket://... --check``; a
connection dropped in the middle of a GENERATE and a new one; an
out-of-range token and memory writes beyond the hardware's memories answered
with error replies; a model too big for the harness refused before loading.
The harness is built once (cached under ``~/.cache/mmfree/sim``, shared with
``make run``) for the ``ecp5`` model compiled for the ``sim`` target.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmfree import protocol as P
from mmfree.compiler.compile import compile_checkpoint
from mmfree.config import ModelConfig
from mmfree.host.driver import Device, DeviceError
from mmfree.host.generate import Lockstep
from mmfree.model.checkpoint import random_checkpoint
from mmfree.sim import harness as H

from conftest import mmfree_cmd


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("system") / "ecp5-sim"
    compile_checkpoint("ecp5", "sim", out)
    return out


@pytest.fixture(scope="module")
def harness(compiled):
    with H.Harness(compiled) as h:
        with Device(h.url, timeout=20.0, step_timeout=60.0, settle=0.5) as dev:
            dev.load_compiled(compiled)
        yield h


def _device(h) -> Device:
    return Device(h.url, timeout=20.0, step_timeout=60.0, settle=0.5)


def _check_steps(dev: Device, compiled: Path, tokens: bytes) -> float:
    """Reset, step ``tokens`` and compare each step with the golden machine; returns tokens per second."""
    check = Lockstep(compiled, dev.info().topk)
    dev.reset_state()
    check.reset()
    t0 = time.perf_counter()
    for tok in tokens:
        check(tok, dev.step(tok))
    return len(tokens) / (time.perf_counter() - t0)


def test_random_bytes_then_generate(harness, compiled):
    """100 KB of garbage on the port, then a normal generation with --check succeeds."""
    host, port = harness.url.removeprefix("socket://").rsplit(":", 1)
    junk = random.Random(6).randbytes(100 * 1024)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(junk)
        time.sleep(0.5)
    r = subprocess.run([*mmfree_cmd(), "generate", "--port", harness.url, "--compiled", str(compiled),
                        "--prompt", "import ", "--max-tokens", "12", "--check", "--timeout", "60"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "--check: 18 steps match the golden machine bit for bit" in r.stderr
    assert r.stdout.startswith("import ")


def test_drop_connection_mid_generation(harness, compiled):
    """A client that vanishes during GENERATE leaves a harness the next client can use."""
    dev = _device(harness)
    dev.reset_state()
    stream = dev.generate(ord("d"), 40)
    next(stream)
    next(stream)
    dev.close()                       # drop the connection with the GENERATE still running
    with _device(harness) as dev2:
        assert dev2.loaded_matches(compiled)
        tps = _check_steps(dev2, compiled, b"def f(x):")
    print(f"\nharness: {tps:.1f} tokens/s stepping the ecp5 model")


def test_error_replies(harness, compiled):
    """An out-of-range token and a write beyond a memory get error replies; the device keeps working."""
    with _device(harness) as dev:
        with pytest.raises(DeviceError, match="BAD_TOKEN"):
            dev.step(256)
        info = dev.info()
        wmem = next(mem for mem in info.memories if mem.mem == P.MemoryId.WMEM)
        word = -(-wmem.width // 8)
        with pytest.raises(DeviceError, match="BAD_ARGUMENT"):
            dev.load(P.MemoryId.WMEM, wmem.depth * word, bytes(word))
        with pytest.raises(DeviceError, match="BAD_ARGUMENT"):
            dev.load(P.MemoryId.WMEM, 1, bytes(word))            # not on a word boundary
        # the rejected LOADs wrote nothing, but any LOAD clears the model flag until SET_MODEL
        dev.load_compiled(compiled)
        _check_steps(dev, compiled, b"x = 1")


def test_model_too_big_refused(harness, tmp_path):
    """A model that does not fit the harness's memories is refused before anything is sent."""
    big = random_checkpoint(tmp_path / "big", ModelConfig(vocab_size=256, hidden_size=192, num_hidden_layers=5,
                                                          intermediate_size=512, rms_norm_eps=1e-6), seed=3)
    out = tmp_path / "big-sim"
    compile_checkpoint(big, "sim", out)
    with _device(harness) as dev:
        with pytest.raises(Exception, match=r"wmem: the model needs \d+ words of \d+ bits, the device holds \d+"):
            dev.load_compiled(out)
        assert dev.info().model_set          # nothing was loaded, the model is still set


def test_linear_beyond_the_counters_is_a_core_error(harness, compiled):
    """A LINEAR whose input is longer than max_input sets the core's error flag (the matrix's counters are
    sized for what fits): the step gets an INTERNAL error reply, and the real program runs again after."""
    from mmfree import isa
    from mmfree.host.driver import read_compiled

    images = read_compiled(compiled)
    _, data = images.images["pmem"]
    words = [int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data), 8)]
    pc = 0
    for ins in isa.decode(words):
        if isinstance(ins, isa.Linear):
            break
        pc += ins.size
    bad = words[pc] | (0xFFFFFF << 24)            # n = 2^24 - 1, far beyond any max_input
    with _device(harness) as dev:
        dev.load(P.MemoryId.PMEM, pc * 8, bad.to_bytes(8, "little"))
        dev.set_model(images.hash, images.vocab)
        dev.reset_state()
        with pytest.raises(DeviceError, match="INTERNAL"):
            dev.step(ord("a"))
        dev.load_compiled(compiled)
        _check_steps(dev, compiled, b"ok")
