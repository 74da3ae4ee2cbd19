"""Compiler step *write*: memory images, bitstream patch files, program listing and manifest.

For each memory with contents (``wmem``, ``cmem``, ``pmem``), in ``DIR``:

``MEM.hex``  ``$readmemh`` image for simulation: one word per line, the
             memory's width in hex digits (most significant first), only
             the words the model uses;
``MEM.bin``  the same words as raw little-endian bytes (``ceil(width/8)``
             per word), what the host sends over the serial link.

For targets with fixed memories whose contents are block-RAM initialised
(``Memory.init``), ``DIR/bram/MEM.hex`` holds the full memory (all ``depth``
words, zero-filled) and ``DIR/bram/MEM.from.hex`` the placeholder contents
the bitstream was built with (:func:`mmfree.packing.bram_placeholder`), the
*to* and *from* files of ``ecpbram``/``icebram``. ``program.txt`` is the
disassembly; ``manifest.json`` is written last.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from mmfree import isa
from mmfree.compiled import CompiledModel
from mmfree.packing import bram_placeholder, write_bin, write_hex

from . import manifest as mf
from .layout import Layout
from .pack import Images

IMAGE_MEMORIES = ("wmem", "cmem", "pmem")


def image_words(images: Images) -> dict[str, np.ndarray]:
    """Every image as ``uint8 [words, bytes per word]`` (little-endian words)."""
    return {"wmem": images.wmem,
            "cmem": images.cmem.astype("<u2").view(np.uint8).reshape(-1, 2),
            "pmem": images.pmem.astype("<u8").view(np.uint8).reshape(-1, 8)}


def content_hash(words: dict[str, np.ndarray], widths: dict[str, int]) -> tuple[str, dict[str, str]]:
    """sha256 over every image (name, width, word count, bytes) and one hash per image."""
    h, per = hashlib.sha256(), {}
    for name in IMAGE_MEMORIES:
        w = np.ascontiguousarray(words[name])
        h.update(f"{name}:{widths[name]}:{len(w)}\n".encode())
        h.update(w.data)
        per[name] = mf.image_hash(w)
    return h.hexdigest(), per


def write(out: Path, compiled: CompiledModel, layout: Layout, images: Images, prog: list[isa.Instruction],
          labels: list[str], checkpoint: str) -> dict:
    """Write everything to ``out``; returns the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # drop patch files a previous compile into the same directory may have left (only our own names)
    for name in IMAGE_MEMORIES:
        for stale in (out / "bram" / f"{name}.hex", out / "bram" / f"{name}.from.hex"):
            stale.unlink(missing_ok=True)
    t = layout.target
    words = image_words(images)
    widths = {m: t.memory(m).width for m in IMAGE_MEMORIES}
    chash, per = content_hash(words, widths)
    files: dict[str, dict] = {}
    imgs: dict[str, dict] = {}

    def note(rel: str, what: str) -> None:
        files[rel] = {"bytes": (out / rel).stat().st_size, "what": what}

    for name in IMAGE_MEMORIES:
        w, width = words[name], widths[name]
        write_hex(out / f"{name}.hex", w, width)
        note(f"{name}.hex", f"{name} image, $readmemh, one {width}-bit word per line")
        write_bin(out / f"{name}.bin", w, width)
        note(f"{name}.bin", f"{name} image, raw little-endian {-(-width // 8)}-byte words")
        imgs[name] = {"words": int(len(w)), "width": width, "hex": f"{name}.hex", "bin": f"{name}.bin",
                      "sha256": per[name]}
        mem = t.memory(name)
        if mem.depth is not None and mem.init:
            (out / "bram").mkdir(exist_ok=True)
            full = np.zeros((mem.depth, w.shape[1]), dtype=np.uint8)
            full[:len(w)] = w
            write_hex(out / "bram" / f"{name}.hex", full, width)
            note(f"bram/{name}.hex", f"{name} full block-RAM contents ({mem.depth} words): ecpbram/icebram 'to' file")
            write_hex(out / "bram" / f"{name}.from.hex", bram_placeholder(name, width, mem.depth), width)
            note(f"bram/{name}.from.hex", f"{name} placeholder the bitstream is built with: 'from' file")
            imgs[name]["bram"] = f"bram/{name}.hex"
            imgs[name]["bram_from"] = f"bram/{name}.from.hex"
    (out / "program.txt").write_text(isa.disassemble(isa.encode(prog), labels))
    note("program.txt", "program disassembly")
    manifest = mf.build(compiled, layout, prog, imgs, chash, files, checkpoint)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
