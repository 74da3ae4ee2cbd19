"""The hardware path of ``mmfree generate``: compile (cached), load, feed the prompt, sample, check.

``mmfree generate --port URL`` (a board or a running harness) or ``--sim``
(starts the Verilator harness, :mod:`mmfree.sim.harness`):

1. pick the compiled model: ``--compiled DIR`` as given, or compile
   ``--model`` for ``--target`` (default: the known target whose tile shape
   and memory words match the device's INFO; ``sim`` for ``--sim``) into
   the cache ``$MMFREE_CACHE_DIR`` (default ``~/.cache/mmfree``)
   ``/compiled/<key>``, the key hashing the checkpoint files, the target and
   the compiler's sources;
2. load it unless INFO already names it (``--reload`` forces), checking
   that it fits before the first LOAD;
3. RESET_STATE, feed the prompt bytes with STEP (the last one's top-k gives
   the first generated token), then either greedy GENERATE (temperature 0,
   unless ``--stepwise``) or one STEP per token, sampling from the top-k
   logits with :func:`mmfree.host.sampling.choose`;
4. with ``--check``, run :class:`~mmfree.model.machine.GoldenMachine` from
   the same images in lockstep and stop at the first step whose top-k ids,
   accumulators or scale differ, naming the token index and the values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from mmfree import protocol as P
from mmfree.errors import MmfreeError
from mmfree.targets import TARGETS, Target

from .driver import Device, read_compiled
from .sampling import choose

__all__ = ["CACHE_ENV", "cache_root", "pick_target", "compile_cached", "Lockstep", "CheckError",
           "device_tokens", "run"]

CACHE_ENV = "MMFREE_CACHE_DIR"


class CheckError(MmfreeError):
    """``--check``: the device and the golden machine disagree."""


# --------------------------------------------------------------------------- compiled model

def cache_root() -> Path:
    """``$MMFREE_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmfree`` (``~/.cache/mmfree``)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmfree"


def _wmem_width(info: P.Info) -> int | None:
    return next((m.width for m in info.memories if m.mem == P.MemoryId.WMEM), None)


def pick_target(info: P.Info, name: str | None = None) -> Target:
    """The target to compile for the device ``info`` describes.

    ``name`` given: that target, if its tile shape is the device's. Otherwise
    the known target with the device's rows, cols and wmem word width whose
    fixed memory depths equal the device's (a board's bitstream), else one
    sized to the model (``sim``), else ``sim`` reshaped to the device's tile.
    """
    from mmfree.compiler.compile import resolve_target

    if name is not None:
        t = resolve_target(name)
        if (t.rows, t.cols) != (info.rows, info.cols):
            raise MmfreeError(f"target {t.name} has {t.rows}x{t.cols} TAC lanes, the device {info.rows}x{info.cols}; "
                              "pick a target with the device's lanes (or omit --target)")
        if t.vec_lanes % info.vec_lanes:            # align the vectors to the device's vector lanes
            t = dataclasses.replace(t, vec_lanes=info.vec_lanes)
        return t
    width = _wmem_width(info)
    depths = {m.mem: m.depth for m in info.memories}
    ids = {"wmem": P.MemoryId.WMEM, "cmem": P.MemoryId.CMEM, "vmem": P.MemoryId.VMEM, "pmem": P.MemoryId.PMEM}
    exact, sized = [], []
    for t in TARGETS.values():
        if (t.rows, t.cols) != (info.rows, info.cols) or t.wmem_word_bits != width or t.vec_lanes % info.vec_lanes:
            continue
        fixed = [m for m in t.memories if m.depth is not None]
        if fixed and all(depths.get(ids[m.name]) == m.depth for m in fixed):
            exact.append(t)
        elif not fixed:
            sized.append(t)
    if exact or sized:
        return (exact or sized)[0]
    for packing in ("b3", "2b"):
        t = resolve_target("sim", (info.rows, info.cols, info.vec_lanes), packing)
        if t.wmem_word_bits == width:
            return t
    raise MmfreeError(f"no target matches the device: {info.rows}x{info.cols} TAC lanes with {width}-bit wmem "
                      "words; compile with mmfree compile --lanes/--packing and pass --compiled DIR")


def _compiler_sources() -> list[Path]:
    import mmfree
    import mmfree.compiler

    core = Path(mmfree.__file__).parent
    return sorted(Path(mmfree.compiler.__file__).parent.glob("*.py")) + \
        [core / f for f in ("isa.py", "packing.py", "numerics.py", "targets.py", "compiled.py", "config.py")]


def cache_key(ckpt: Path, target: Target, emb_bits: int | None = None) -> str:
    """sha256 over the checkpoint's files, the target, the embedding width and the compiler's sources."""
    h = hashlib.sha256()
    h.update(f"{target!r}\nemb_bits={emb_bits}\n".encode())
    for p in sorted(q for q in Path(ckpt).iterdir() if q.is_file()):
        h.update(f"ckpt:{p.name}:{p.stat().st_size}\n".encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    for p in _compiler_sources():
        if p.is_file():
            h.update(f"src:{p.name}\n".encode() + p.read_bytes())
    return h.hexdigest()[:32]


def compile_cached(model: str | Path, target: Target, emb_bits: int | None = None,
                   log: Callable[[str], None] | None = None) -> Path:
    """The compiled directory of ``model`` for ``target``: from the cache, compiled into it on a miss."""
    from mmfree.compiler.compile import compile_checkpoint
    from mmfree.model.checkpoint import resolve

    ckpt = resolve(model)
    root = cache_root() / "compiled"
    out = root / cache_key(ckpt, target, emb_bits)
    if (out / "manifest.json").is_file():
        return out
    if log:
        log(f"compiling {model} for {target.name} ({target.rows}x{target.cols} lanes) into {out}")
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    except OSError as e:
        raise MmfreeError(f"cannot write the compile cache {root} ({e.strerror or e}); set {CACHE_ENV} "
                          "or pass --compiled DIR") from None
    try:
        compile_checkpoint(ckpt, target, tmp, emb_bits=emb_bits)
        try:
            os.replace(tmp, out)
        except OSError:
            if not (out / "manifest.json").is_file():    # not a concurrent compile that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- lockstep check

class Lockstep:
    """The golden machine run from the same images, one step per device step.

    Call with each fed token and the device's :class:`~mmfree.protocol.TopK`;
    raises :class:`CheckError` at the first difference in ids, accumulators
    or scale, naming the token index (0-based, counted from the last
    :meth:`reset`, prompt included).
    """

    def __init__(self, compiled: str | Path, topk: int):
        from mmfree.model.machine import GoldenMachine

        self.machine = GoldenMachine.from_dir(compiled)
        self.machine.k = topk          # the device's k, whatever the compile assumed
        self.index = 0

    def reset(self) -> None:
        self.machine.reset()
        self.index = 0

    def __call__(self, token: int, top: P.TopK) -> None:
        r = self.machine.step([token])
        want = {"ids": tuple(int(v) for v in r.topk_ids[0]), "accs": tuple(int(v) for v in r.topk_acc[0]),
                "scale_m": int(r.scale_m[0]), "scale_e": int(r.scale_e[0])}
        got = {"ids": top.ids, "accs": top.accs, "scale_m": top.scale_m, "scale_e": top.scale_e}
        diffs = []
        for field, g in got.items():
            w = want[field]
            if g == w:
                continue
            if isinstance(g, tuple):
                j = next((j for j, (a, b) in enumerate(zip(g, w)) if a != b), min(len(g), len(w)))
                if j < min(len(g), len(w)):
                    diffs.append(f"{field}[{j}] device {g[j]}, golden {w[j]}")
                else:
                    diffs.append(f"{field} device has {len(g)}, golden {len(w)}")
            else:
                diffs.append(f"{field} device {g}, golden {w}")
        if diffs:
            raise CheckError(f"--check: device and golden machine differ at token index {self.index} "
                             f"(fed token {token}): {'; '.join(diffs)}")
        self.index += 1


# --------------------------------------------------------------------------- tokens

def device_tokens(dev: Device, prompt: bytes, max_tokens: int, *, temperature: float = 0.0, top_k: int = 8,
                  seed: int = 0, check: Lockstep | None = None, stepwise: bool = False) -> Iterator[int]:
    """Reset the device, feed ``prompt`` (``b"\\n"`` if empty), yield ``max_tokens`` generated token ids.

    Greedy (``temperature == 0``) uses GENERATE unless ``stepwise``; sampling
    steps one token at a time. Same semantics and seed use as
    :func:`mmfree.model.generate.generate_golden`.
    """
    feed = list(prompt or b"\n")
    rng = np.random.default_rng(seed)

    def step(tok: int) -> P.TopK:
        top = dev.step(tok)
        if check is not None:
            check(tok, top)
        return top

    dev.reset_state()
    if check is not None:
        check.reset()
    for tok in feed[:-1]:
        step(tok)
    last = feed[-1]
    if temperature == 0 and not stepwise and max_tokens > 0:
        left = max_tokens
        while left:
            n = min(left, P.MAX_TOKEN)
            fed = last
            for top in dev.generate(last, n):
                if check is not None:
                    check(fed, top)
                fed = top.ids[0]
                yield fed
            last, left = fed, left - n
        return
    top = step(last)
    for i in range(max_tokens):
        tok = choose(top.ids, top.logits(), temperature, top_k, rng)
        yield tok
        if i + 1 < max_tokens:
            top = step(tok)


# --------------------------------------------------------------------------- the command

def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _progress(name: str, done: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\rloading {name} {100 * done // max(total, 1):3d} %", end="" if done < total else "\n",
              file=sys.stderr, flush=True)


def _session(dev: Device, args, compiled: Path | None, emit: Callable[[Iterator[int]], None]) -> int:
    info = dev.info()
    if compiled is None:
        compiled = compile_cached(args.model, pick_target(info, args.target), log=_log)
    images = read_compiled(compiled)
    if images.vocab != 256:
        raise MmfreeError(f"model vocabulary is {images.vocab}; text prompts need a byte-level model (vocab_size 256)")
    if args.reload or not dev.loaded_matches(images):
        t0 = time.perf_counter()
        dev.load_compiled(images, progress=_progress)
        _log(f"loaded {images.path} ({images.total_bytes} bytes, model {images.hash.hex()[:16]}) "
             f"in {time.perf_counter() - t0:.2f} s")
        info = dev.info()
    if args.top_k > info.topk and args.temperature > 0:
        _log(f"note: --top-k {args.top_k} exceeds the device's top-{info.topk}; sampling among {info.topk}")
    check = Lockstep(compiled, info.topk) if args.check else None
    t0 = time.perf_counter()
    emit(device_tokens(dev, args.prompt.encode(), args.max_tokens, temperature=args.temperature,
                       top_k=args.top_k, seed=args.seed, check=check, stepwise=args.stepwise))
    secs = time.perf_counter() - t0
    if check is not None:
        _log(f"--check: {check.index} steps match the golden machine bit for bit")
    if args.stats:
        c = dev.counters().as_dict()
        line = ", ".join(f"{k} {v}" for k, v in c.items())
        tokens = max(c.get("tokens", 0), 1)
        busy = sum(v for k, v in c.items() if k not in ("cycles", "tokens"))
        if busy:
            _log(f"{secs:.2f} s host time; counters: {line}; {busy / tokens:.0f} busy cycles per token "
                 f"(the 'cycles' counter also runs while the device waits for the host)")
        else:                              # a core without per-class counters (the iCEBreaker's serial core)
            _log(f"{secs:.2f} s host time; counters: {line}; {c.get('cycles', 0) / tokens:.0f} cycles per token "
                 f"since reset, waits for the host included (this core counts no busy classes)")
    return 0


def _device(url: str, args, sim: bool) -> Device:
    kw = dict(baudrate=args.baud)
    if args.timeout is not None:
        kw.update(timeout=args.timeout, step_timeout=args.timeout)
    elif sim:
        kw.update(timeout=10.0, step_timeout=60.0, settle=0.5)    # a simulated SoC is slow in wall time
    return Device(url, **kw)


def run(args, emit: Callable[[Iterator[int]], None]) -> int:
    """``mmfree generate --port URL`` / ``--sim``; ``emit`` prints the token stream."""
    if args.sim:
        from mmfree.compiler.compile import resolve_target

        from mmfree.sim.harness import Harness, build

        compiled = Path(args.compiled) if args.compiled else \
            compile_cached(args.model, resolve_target(args.target or "sim"), log=_log)
        _log("building the Verilator harness (cached; the first build takes a few minutes)")
        exe = build(compiled, log=_log)
        with Harness(binary=exe) as h, _device(h.url, args, sim=True) as dev:
            return _session(dev, args, compiled, emit)
    with _device(args.port, args, sim=False) as dev:
        return _session(dev, args, Path(args.compiled) if args.compiled else None, emit)
