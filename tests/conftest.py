"""Shared fixtures: tiny configs and checkpoints, and a small trained byte model.

The trained model is the shipped ``mmfree/models/ecp5`` when it exists;
otherwise a tiny byte-level model is trained here once per session (about
30 s on CPU) on deterministic text from the standard library.
"""

from __future__ import annotations

import os

# Tiny tensors on a small shared machine: one BLAS/OpenMP thread per process is
# faster and far steadier than several spinning threads. Set before numpy and
# torch load; subprocesses (the CLI tests) inherit it.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import sys  # noqa: E402
import sysconfig  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mmfree.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SHIPPED_ECP5 = REPO / "mmfree" / "models" / "ecp5"

#: Standard-library modules the fallback model trains on (never email/ or json/, the held-out set).
TRAIN_MODULES = ("argparse.py", "collections/__init__.py", "dataclasses.py", "enum.py", "functools.py",
                 "inspect.py", "pathlib/__init__.py", "pathlib.py", "typing.py", "subprocess.py")
#: Other modules, for quick checks on text the fallback model never saw.
SCORE_MODULES = ("textwrap.py", "shutil.py", "tokenize.py", "string.py", "glob.py", "fnmatch.py")
#: The project's held-out packages (brief section 7): no shipped or test model trains on them.
HELDOUT_PACKAGES = ("email", "json")


def tiny_config(**kw) -> ModelConfig:
    """A small config (d 16..32) for fast tests; keyword arguments override fields."""
    base = dict(vocab_size=256, hidden_size=32, num_hidden_layers=3, intermediate_size=48,
                rms_norm_eps=1e-6, use_lower_bound=True)
    base.update(kw)
    return ModelConfig(**base)


def mmfree_cmd() -> list[str]:
    """The installed ``mmfree`` console script of this interpreter's environment."""
    exe = VENV_BIN / "mmfree"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "mmfree"]


def stdlib_bytes(names) -> np.ndarray:
    """Concatenated bytes of the given standard-library files (those that exist)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts = [(root / n).read_bytes() for n in names if (root / n).is_file()]
    assert parts, f"none of {names} found under {root}"
    return np.frombuffer(b"\n".join(parts), dtype=np.uint8).astype(np.int64)


def heldout_bytes() -> np.ndarray:
    """The sources of the held-out packages (sorted paths), read directly from the stdlib."""
    root = Path(sysconfig.get_paths()["stdlib"])
    names = sorted(str(p.relative_to(root)) for pkg in HELDOUT_PACKAGES for p in (root / pkg).rglob("*.py")
                   if not {"test", "tests"} & set(p.relative_to(root).parts))
    return stdlib_bytes(names)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A small prebuilt training data directory (real stdlib bytes, cut short) so training runs take seconds."""
    from mmfree.model.data import load_split

    d = tmp_path_factory.mktemp("data")
    train = load_split("train")
    train[:40_000].tofile(d / "train.bin")
    train[-4_000:].tofile(d / "valid.bin")
    load_split("heldout")[:3_000].tofile(d / "heldout.bin")
    return d


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A random official-format checkpoint: d 32, 3 layers, lower bounds on, byte vocabulary."""
    from mmfree.model.checkpoint import random_checkpoint

    return random_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", tiny_config(), seed=1)


@pytest.fixture(scope="session")
def tiny_icebreaker(tmp_path_factory) -> Path:
    """A small random model (d 12, 1 layer, vocabulary 40) compiled for the icebreaker target (the serial core)."""
    from mmfree.compiler.compile import compile_checkpoint
    from mmfree.model.checkpoint import random_checkpoint

    d = tmp_path_factory.mktemp("tiny_icebreaker")
    cfg = tiny_config(vocab_size=40, hidden_size=12, num_hidden_layers=1, intermediate_size=16)
    compile_checkpoint(random_checkpoint(d / "ck", cfg, seed=4), "icebreaker", d / "c")
    return d / "c"


#: The fallback model: shape and a fixed training budget (about 15-25 s on one core; bits/byte ~2.9).
TRAIN = dict(hidden_size=128, num_hidden_layers=2, intermediate_size=256, steps=150, seq=64, batch=32, lr=6e-3)


def _train_tiny(out: Path, steps: int = TRAIN["steps"]) -> Path:
    """Quantization-aware training of a tiny byte model on stdlib text, a fixed number of steps."""
    import torch

    from mmfree.model.checkpoint import save_reference
    from mmfree.model.reference import HGRNBitForCausalLM

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    data = torch.from_numpy(stdlib_bytes(TRAIN_MODULES))
    config = ModelConfig(vocab_size=256, hidden_size=TRAIN["hidden_size"],
                         num_hidden_layers=TRAIN["num_hidden_layers"], intermediate_size=TRAIN["intermediate_size"])
    model = HGRNBitForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=TRAIN["lr"], weight_decay=0.01, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=TRAIN["lr"], total_steps=steps, pct_start=0.1)
    seq, batch = TRAIN["seq"], TRAIN["batch"]
    offsets = torch.arange(seq + 1)
    for _ in range(steps):
        idx = torch.randint(0, len(data) - seq - 1, (batch,), generator=gen)
        x = data[idx[:, None] + offsets]
        logits, _ = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return save_reference(model.eval(), out)


@pytest.fixture(scope="session")
def trained_ckpt(tmp_path_factory) -> Path:
    """A trained byte-level model: the shipped ``ecp5`` model if present, else trained here."""
    if SHIPPED_ECP5.is_dir() and (SHIPPED_ECP5 / "config.json").exists() and not os.environ.get("MMFREE_TEST_TRAIN"):
        return SHIPPED_ECP5
    return _train_tiny(tmp_path_factory.mktemp("trained") / "ckpt")
