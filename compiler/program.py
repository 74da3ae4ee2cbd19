"""Compiler step *program*: the instruction stream of one token step (mmfree/isa.py).

``EMBED`` (token row -> ``x``); per layer four LINEARs: attn (``x``; i, f, g
with three quantizers; MLGRU epilogue updating ``h[l]``, writing
``bo = g * silu(h)``), out (``bo``; ADD ``r = x + o``), mlp (``r``; one
quantizer, gate and up segments; GLU ``p = silu(gate) * up``), down (``p``,
unit RMS weight; ADD ``x = r + down``); the head LINEAR (``x``; TOPK); ``END``.
"""

from __future__ import annotations

import numpy as np

from mmfree import isa
from mmfree.compiled import CompiledModel

from .layout import Layout


def emit(compiled: CompiledModel, layout: Layout) -> tuple[list[isa.Instruction], list[str]]:
    """The *program* step: instructions and one label per instruction."""
    cfg = compiled.config
    ks = {p.name: p.k for p in compiled.projections()}
    prog: list[isa.Instruction] = [isa.Embed(dst=layout.region("x").offset, n=cfg.hidden_size,
                                             codes=layout.region("embedding.codes").offset,
                                             scales=layout.region("embedding.scales").offset,
                                             code_bits=layout.emb_bits)]
    labels = ["embedding -> x"]
    for lp in layout.linears:
        quants = tuple(isa.Quant(cv=reg.offset, k_m=int(ks[pn][0]), k_e=int(ks[pn][1]))
                       for pn, reg in zip(lp.projections, lp.cv))
        segs = tuple(isa.Segment(q=pi, rows=rows) for pi, _, rows in lp.segments)
        prog.append(isa.Linear(src=lp.src, n=lp.n, cu=None if lp.cu is None else lp.cu.offset,
                               wmem=lp.tiles.offset, quants=quants, segments=segs, epilogue=lp.epilogue,
                               dst=lp.dst, aux=lp.aux, lb=None if lp.lb is None else lp.lb.offset))
        labels.append(lp.name)
    prog.append(isa.End())
    labels.append("")
    return prog, labels


def program_image(prog: list[isa.Instruction], layout: Layout) -> np.ndarray:
    """Program words as ``uint64 [words]``; checks the length the layout reserved."""
    words = isa.encode(prog)
    want = layout.region("program").words
    if len(words) != want:
        raise AssertionError(f"program has {len(words)} words, layout reserved {want}")
    return np.array(words, dtype=np.uint64)
