"""The manifest: what a compiled directory holds, where, and how big (``manifest.json``).

Fields: ``format``, ``compiler`` (name, version), ``checkpoint``, ``model``
(the config), ``model_hash`` (:meth:`CompiledModel.content_hash`),
``emb_bits``, ``target`` (tile shape, packing, top-k, every memory's width,
depth and whether it is patchable), ``memory_map`` (every tensor and
vector: memory, offset, words, format), ``linears`` (each LINEAR's operands),
``scales`` (the PF constant ``k`` of every projection), ``tables`` (the
sigmoid table: where it lives and its hash), ``capacity`` (words and bits
used against available, per memory), ``program`` (length, file),
``images`` (per memory: file names, words, width, sha256 of the binary
words), ``content_hash`` (sha256 over all images) and ``files``.
"""

from __future__ import annotations

import hashlib

import numpy as np

import mmfree
from mmfree import isa
from mmfree import numerics as nx
from mmfree.compiled import CompiledModel

from .layout import Layout, capacity

FORMAT = "mmfree-image/1"
COMPILER = {"name": "mmfree.compiler", "version": mmfree.__version__}


def sigmoid_table_hash() -> str:
    """sha256 of the sigmoid table as little-endian int32 entries."""
    return hashlib.sha256(nx.SIG_TABLE.astype("<i4").tobytes()).hexdigest()


def target_json(layout: Layout) -> dict:
    t = layout.target
    return {"name": t.name, "rows": t.rows, "cols": t.cols, "lanes": t.lanes, "vec_lanes": t.vec_lanes,
            "packing": t.packing, "emb_bits": t.emb_bits, "topk": t.topk, "max_input": t.max_input,
            "board": t.board, "clock_hz": t.clock_hz,
            "memories": [{"name": m.name, "width": m.width, "depth": m.depth, "init": m.init}
                         for m in t.memories]}


def build(compiled: CompiledModel, layout: Layout, prog: list[isa.Instruction], images: dict[str, dict],
          content_hash: str, files: dict[str, dict], checkpoint: str) -> dict:
    """The manifest dict (deterministic: no timestamps, no timings)."""
    scales = {}
    for p in compiled.projections():
        m, e = int(p.k[0]), int(p.k[1])
        scales[p.name] = {"k_m": m, "k_e": e, "k": nx.pf_to_float((m, e))}
    linears = []
    for lp in layout.linears:
        linears.append({
            "name": lp.name, "epilogue": lp.epilogue.name, "n": lp.n, "rows": lp.rows,
            "src": lp.src, "dst": lp.dst, "aux": lp.aux,
            "cu": None if lp.cu is None else lp.cu.offset, "lb": None if lp.lb is None else lp.lb.offset,
            "wmem": lp.tiles.offset, "tiles": lp.tiles.words,
            "quantizers": [{"projection": pn, "cv": r.offset} for pn, r in zip(lp.projections, lp.cv)],
            "segments": [{"quantizer": pi, "rows": rows, "projection_rows": [r0, r0 + rows]}
                         for pi, r0, rows in lp.segments],
        })
    return {
        "format": FORMAT,
        "compiler": COMPILER,
        "checkpoint": checkpoint,
        "model": compiled.config.to_json(),
        "model_hash": compiled.content_hash(),
        "emb_bits": layout.emb_bits,
        "embedding": {"codes": layout.region("embedding.codes").offset, "scales": layout.region("embedding.scales").offset,
                      "row_stride_words": layout.emb_row_stride, "code_bits": layout.emb_bits},
        "target": target_json(layout),
        "memory_map": layout.memory_map(),
        "linears": linears,
        "scales": scales,
        "tables": {"sigmoid": {"entries": int(nx.SIG_ENTRIES), "format": "P16, x = -16 + k/32",
                               "location": "hardware ROM built from mmfree.numerics.SIG_TABLE (in no image)",
                               "sha256": sigmoid_table_hash()}},
        "capacity": capacity(layout),
        "program": {"words": int(sum(i.size for i in prog)), "instructions": len(prog),
                    "files": {"hex": "pmem.hex", "bin": "pmem.bin", "listing": "program.txt"}},
        "images": images,
        "content_hash": content_hash,
        "files": files,
    }


def image_hash(words: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(words).data).hexdigest()
