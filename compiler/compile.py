"""Compile a checkpoint into memory images, a program and a manifest.

``mmfree compile CKPT --target TARGET -o DIR`` runs the named steps

    load -> (layout + capacity check) -> ternarize -> fold -> tile -> pack -> program -> write

Each step is a function of the previous steps' artifacts; ``--keep-steps``
writes every artifact to ``DIR/steps/`` for inspection:

``01_load.json``       config, tensor count, parameters, memory map and capacity
``02_ternarize.npz``   ``KEY.t`` ternary codes and ``KEY.beta`` of every BitLinear
``03_fold.npz``        the folded :class:`~mmfree.compiled.CompiledModel` arrays
``04_tile.npz``        each LINEAR's tile stream ``[tiles, rows*cols]``
``05_pack.npz``        ``wmem`` (bytes per word), ``cmem`` (uint16) images
``06_program.txt``     the program's disassembly
``07_write.json``      files written, hashes, step timings

A model that does not fit the target fails right after loading, before any
file is written, with one line giving every memory's need and size.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from mmfree import isa
from mmfree.compiled import CompiledModel
from mmfree.errors import MmfreeError
from mmfree.targets import Target, get, parse_tile

from . import layout as lay
from .fold import fold, ternarize
from .pack import Images, pack
from .program import emit, program_image
from .tile import tile
from .write import write

STEPS = ("load", "ternarize", "fold", "tile", "pack", "program", "write")


@dataclasses.dataclass
class CompileResult:
    out: Path
    manifest: dict
    layout: lay.Layout
    compiled: CompiledModel
    images: Images
    program: list[isa.Instruction]
    seconds: dict[str, float]


def resolve_target(name: str | Target, lanes: str | tuple[int, ...] | None = None,
                   packing: str | None = None) -> Target:
    """A target by name, optionally with another tile shape (``"RxC"``, or ``"RxC/V"`` with the vector
    lanes the vectors are aligned to) or packing."""
    t = name if isinstance(name, Target) else get(name)
    try:
        if lanes is not None:
            r, c, v = parse_tile(lanes)
            t = t.with_lanes(r, c)
            if v is not None:
                t = dataclasses.replace(t, vec_lanes=v)
        if packing is not None:
            t = t.with_packing(packing)
    except ValueError as e:
        raise MmfreeError(str(e)) from None
    return t


class _Steps:
    """Keeps (or drops) step artifacts under ``DIR/steps``."""

    def __init__(self, out: Path, keep: bool):
        self.dir = out / "steps" if keep else None

    def json(self, name: str, data: dict) -> None:
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / name).write_text(json.dumps(data, indent=1) + "\n")

    def npz(self, name: str, arrays: dict) -> None:
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            np.savez(self.dir / name, **arrays)

    def text(self, name: str, text: str) -> None:
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / name).write_text(text)


def compile_checkpoint(ckpt, target: str | Target = "sim", out=None, keep_steps: bool = False,
                       emb_bits: int | None = None, lanes=None, packing: str | None = None,
                       log=None) -> CompileResult:
    """Run every step; returns the artifacts and writes ``out`` (required)."""
    from mmfree.model.checkpoint import load_checkpoint

    if out is None:
        raise MmfreeError("an output directory is required")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MmfreeError(f"{out}: exists and is not a directory")
    tgt = resolve_target(target, lanes, packing)
    say = log or (lambda msg: None)
    secs: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        secs[step] = round(now - t0, 3)
        t0 = now
        say(f"  {step:<10} {secs[step]:7.2f} s")

    say(f"compiling {ckpt} for {tgt.name}")
    # load, then lay out and check capacity before anything is written
    config, tensors = load_checkpoint(ckpt)
    layout = lay.plan(config, tgt, emb_bits)
    lap("load")
    steps = _Steps(out, keep_steps)
    steps.json("01_load.json", {"checkpoint": str(ckpt), "config": config.to_json(), "tensors": len(tensors),
                                "params": config.n_params, "trits": config.n_trits,
                                "target": tgt.name, "emb_bits": layout.emb_bits,
                                "capacity": lay.capacity(layout), "memory_map": layout.memory_map()})

    # float matrices are dropped as soon as they are ternarized (a 370M model is 1.5 GB of them)
    ternary = {k: ternarize(tensors.pop(k)) for k in config.ternary_keys()}
    lap("ternarize")
    if keep_steps:
        arrays = {}
        for k, (t, beta) in ternary.items():
            arrays[k + ".t"], arrays[k + ".beta"] = t, np.float64(beta)
        steps.npz("02_ternarize.npz", arrays)

    compiled = fold(config, tensors, emb_bits=layout.emb_bits, ternary=ternary)
    del tensors, ternary
    lap("fold")
    steps.npz("03_fold.npz", dict(compiled.arrays(), config=np.array(json.dumps(config.to_json()))))

    tiles = tile(compiled, layout)
    if keep_steps:
        tiles = list(tiles)
        steps.npz("04_tile.npz", {lp.name: tl for lp, tl in tiles})
    lap("tile")
    images = pack(compiled, tiles, layout)
    del tiles
    lap("pack")
    steps.npz("05_pack.npz", {"wmem": images.wmem, "cmem": images.cmem})

    prog, labels = emit(compiled, layout)
    images.pmem = program_image(prog, layout)
    lap("program")
    steps.text("06_program.txt", isa.disassemble(isa.encode(prog), labels))

    manifest = write(out, compiled, layout, images, prog, labels, str(ckpt))
    lap("write")
    steps.json("07_write.json", {"files": manifest["files"], "content_hash": manifest["content_hash"],
                                 "images": manifest["images"], "seconds": secs})
    return CompileResult(out=out, manifest=manifest, layout=layout, compiled=compiled, images=images,
                         program=prog, seconds=secs)


def summary(res: CompileResult) -> list[str]:
    m = res.manifest
    t = m["target"]
    lines = [f"wrote {res.out}: {t['name']}, {t['rows']}x{t['cols']} lanes, {t['packing']} packing, "
             f"{m['emb_bits']}-bit embedding"]
    for name, c in m["capacity"].items():
        avail = "sized to fit" if c["available_words"] is None else \
            f"of {c['available_words']} ({c['percent']:.1f} %)"
        lines.append(f"  {name:<5} {c['used_words']:>10} words x {c['width']} bits  {avail}")
    lines.append(f"  program {m['program']['instructions']} instructions, {m['program']['words']} words")
    lines.append(f"  content sha256 {m['content_hash']}")
    lines.append(f"  {sum(res.seconds.values()):.2f} s")
    return lines


def cli(parser):
    parser.add_argument("checkpoint", help="checkpoint directory (config.json + model.safetensors) or shipped model name")
    parser.add_argument("--target", default="sim", help="target name (sim, ulx3s-85f, icebreaker); default sim")
    parser.add_argument("-o", "--output", required=True, help="output directory")
    parser.add_argument("--keep-steps", action="store_true", help="write every step's artifact to OUTPUT/steps/")
    parser.add_argument("--emb-bits", type=int, choices=(8, 16), default=None,
                        help="embedding code width (default: the target's)")
    parser.add_argument("--lanes", default=None, help="override the tile shape, ROWSxCOLS (e.g. 8x32), or ROWSxCOLS/VEC to align vectors to VEC lanes")
    parser.add_argument("--packing", choices=("b3", "2b"), default=None, help="override the weight packing")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")

    def run(args):
        log = None if args.quiet else print
        res = compile_checkpoint(args.checkpoint, args.target, args.output, keep_steps=args.keep_steps,
                                 emb_bits=args.emb_bits, lanes=args.lanes, packing=args.packing, log=log)
        if not args.quiet:
            print("\n".join(summary(res)))
        return 0

    return run
