"""The iCEBreaker's system in Verilator: link path, command decoder and serial core, through the host driver.

The same SimTop as ``tests/test_system.py`` with the core the icebreaker
board is built with (:class:`~mmfree.hw.serial_core.SerialCore`, chosen by
:func:`mmfree.hw.soc.default_core_factory`). A compiled model is loaded over
the link with ``Device.load_compiled`` (the SPRAM holds wmem and most of
cmem: no bitstream can carry them) and every step is checked against the
golden machine (``Lockstep``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mmfree.compiler.compile import compile_checkpoint
from mmfree.config import ModelConfig
from mmfree.host.driver import Device
from mmfree.host.generate import Lockstep
from mmfree.model.checkpoint import random_checkpoint, resolve
from mmfree.sim import harness as H


def _steps(url: str, compiled: Path, tokens: bytes) -> dict:
    with Device(url, timeout=30.0, step_timeout=120.0, settle=0.5) as dev:
        dev.load_compiled(compiled)
        info = dev.info()
        check = Lockstep(compiled, info.topk)
        dev.reset_state()
        check.reset()
        c0 = dev.counters()
        for tok in tokens:
            check(tok, dev.step(tok))
        c1 = dev.counters()
    return {"info": info, "cycles": (c1.values[0] - c0.values[0]) / len(tokens),
            "tokens": c1.values[1] - c0.values[1]}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("serial_system")
    cfg = ModelConfig(vocab_size=90, hidden_size=20, num_hidden_layers=2, intermediate_size=28)
    ck = random_checkpoint(d / "ck", cfg, seed=31)
    compile_checkpoint(ck, "icebreaker", d / "c")
    return d / "c"


def test_serial_system_small_model(small):
    with H.Harness(small) as h:
        r = _steps(h.url, small, bytes([1, 50, 89, 0, 7, 33]))      # vocabulary 90
    assert (r["info"].rows, r["info"].cols, r["info"].topk) == (5, 4, 4)
    assert r["tokens"] == 6 and r["cycles"] > 0


@pytest.mark.slow
def test_serial_system_shipped_ice40(tmp_path):
    out = tmp_path / "ice40"
    compile_checkpoint(resolve("ice40"), "icebreaker", out)
    with H.Harness(out) as h:
        r = _steps(h.url, out, b"def ")
    assert r["tokens"] == 4
    print(f"ice40 on the serial core: {r['cycles']:.0f} cycles per token")
