"""Compile-speed benchmark: an official 370M-shaped checkpoint (random weights) for target ``sim``.

:func:`bench_compile_370m` is what ``mmfree bench`` calls. It builds the
checkpoint once under ``workdir`` (d 1024, 24 layers, I 2816, vocabulary
32000, lower bounds on; ~1.5 GB, kept for later runs), then compiles it in
a fresh Python process so that the peak resident memory it reports is the
compiler's alone. The budget is 60 s and 4 GB on a 2-core machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from mmfree.config import ModelConfig

CONFIG_370M = ModelConfig(vocab_size=32000, hidden_size=1024, num_hidden_layers=24, intermediate_size=2816,
                          use_lower_bound=True)
BUDGET_SECONDS = 60.0
BUDGET_RSS_BYTES = 4 << 30

_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from mmfree.compiler.compile import compile_checkpoint
res = compile_checkpoint(sys.argv[1], sys.argv[2], sys.argv[3])
wall = time.perf_counter() - t0
print(json.dumps({"seconds": wall, "steps": res.seconds,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "content_hash": res.manifest["content_hash"], "capacity": res.manifest["capacity"]}))
"""


def ensure_checkpoint(workdir: str | Path, config: ModelConfig = CONFIG_370M, seed: int = 0) -> tuple[Path, float]:
    """The benchmark checkpoint under ``workdir`` (built if missing); returns (path, seconds spent building)."""
    from mmfree.model.checkpoint import random_checkpoint

    ckpt = Path(workdir) / f"ckpt_d{config.hidden_size}_l{config.num_hidden_layers}_v{config.vocab_size}"
    cfg_file = ckpt / "config.json"
    if (ckpt / "model.safetensors").exists() and cfg_file.exists() \
            and json.loads(cfg_file.read_text()) == config.to_json():
        return ckpt, 0.0
    t0 = time.perf_counter()
    random_checkpoint(ckpt, config, seed=seed)
    return ckpt, time.perf_counter() - t0


def bench_compile_370m(workdir: str | Path, target: str = "sim") -> dict:
    """Compile the 370M-shaped checkpoint; returns seconds, peak RSS and whether both are in budget."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt, gen = ensure_checkpoint(workdir)
    out = workdir / f"out_{target}"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(ckpt), target, str(out)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark compile failed: {proc.stderr.strip().splitlines()[-1:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r.update({"benchmark": "compile_370m", "target": target, "checkpoint": str(ckpt), "output": str(out),
              "process_seconds": wall, "checkpoint_build_seconds": gen,
              "peak_rss_mb": r["peak_rss_bytes"] / 2 ** 20,
              "budget_seconds": BUDGET_SECONDS, "budget_rss_mb": BUDGET_RSS_BYTES / 2 ** 20,
              "within_budget": r["seconds"] <= BUDGET_SECONDS and r["peak_rss_bytes"] <= BUDGET_RSS_BYTES,
              "params": CONFIG_370M.n_params, "trits": CONFIG_370M.n_trits})
    return r


if __name__ == "__main__":
    print(json.dumps(bench_compile_370m(sys.argv[1] if len(sys.argv) > 1 else "/tmp/mmfree_bench"), indent=1))
