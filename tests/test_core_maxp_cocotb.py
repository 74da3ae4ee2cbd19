# amaranth: UnusedElaboratable=no
"""Whole-core test of the block-shift max pre-pass (MAXP), which compiled programs never reach.

The core skips the max pre-pass when a LINEAR reads the vector the previous
instruction wrote (it tracked that vector's maximum while writing it), and
the compiler always orders the program that way, so ``test_core_cocotb``
never runs MAXP. Here every LINEAR of a compiled program gets a dummy EMBED
in front of it that writes 16 elements to an unused vmem region: the program
computes the same thing, but no LINEAR's source is tracked any more, so each
one starts with the max pre-pass. The golden machine runs the same edited
program; top-k ids, accumulators and head scales must be equal, token by
token.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmfree import isa, targets
from mmfree import packing as pk
from mmfree.compiler.compile import compile_checkpoint
from mmfree.config import ModelConfig
from mmfree.hw.core import Core
from mmfree.model.checkpoint import random_checkpoint, resolve
from mmfree.sim.runner import run_cocotb

from test_core_cocotb import BUILD, REPO, TARGET, _expected


def _force_maxp(d: Path, lanes: int) -> int:
    """Insert a dummy EMBED before every LINEAR of the compiled program in ``d``; returns how many."""
    man = json.loads((d / "manifest.json").read_text())
    img = man["images"]["pmem"]
    words = pk.words_int(pk.read_bin(d / img["bin"], img["width"]), 64)
    prog = isa.decode([int(w) for w in words])
    emb = next(i for i in prog if isinstance(i, isa.Embed))
    vm = man["capacity"]["vmem"]
    scratch = -(-vm["used_words"] // lanes) * lanes
    assert scratch + lanes <= (vm["available_words"] or 0), "no room for the dummy EMBED in vmem"
    dummy = isa.Embed(dst=scratch, n=lanes, codes=emb.codes, scales=emb.scales, code_bits=emb.code_bits)
    out, n = [], 0
    for ins in prog:
        if isinstance(ins, isa.Linear):
            out.append(dummy)
            n += 1
        out.append(ins)
    new = isa.encode(out)
    pdepth = targets.get(TARGET).memory("pmem").depth
    assert len(new) <= pdepth, f"edited program ({len(new)} words) does not fit pmem ({pdepth})"
    pk.write_bin(d / img["bin"], pk.int_words(new, 64), 64)
    return n


def test_core_max_prepass(tmp_path):
    L = targets.get(TARGET).vec_lanes
    ckpts = {"ecp5": resolve("ecp5"),
             "rand_d40": random_checkpoint(tmp_path / "rand_d40", ModelConfig(
                 rms_norm_eps=1e-6, vocab_size=256, hidden_size=40, num_hidden_layers=2, intermediate_size=72,
                 use_lower_bound=True), seed=10)}
    models = []
    for name, ckpt in ckpts.items():
        d = tmp_path / f"{name}.compiled"
        compile_checkpoint(ckpt, TARGET, out=d)
        assert _force_maxp(d, L) > 0
        exp = BUILD / f"expected_{name}_maxp.json"
        BUILD.mkdir(parents=True, exist_ok=True)
        _expected(d, b"def main():\n    return 0\n", exp)
        models.append({"name": f"{name}_maxp", "dir": str(d), "expected": str(exp)})
    run_cocotb(Core(targets.get(TARGET)), test_module="test_core", build_dir=BUILD,
               module_dirs=[REPO / "tests" / "cocotb"], params={"models": models})
    for m in models:
        per = json.loads((BUILD / f"counters_{m['name']}.json").read_text())
        assert per["cycles"] > 0 and per["stats"] > 0
