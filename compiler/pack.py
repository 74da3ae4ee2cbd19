"""Compiler step *pack*: tile streams and constants -> memory images.

* **wmem**: each tile packed into one word (:func:`mmfree.packing.pack_tiles`),
  ``uint8 [words, ceil(width/8)]``, at its LINEAR's region;
* **cmem**: ``uint16 [words]``: embedding codes and PF scales, C16 weights,
  P16 lower bounds, at the addresses of :mod:`.layout`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from mmfree.compiled import CompiledModel
from mmfree.errors import MmfreeError
from mmfree.packing import pack_tiles, word_bytes

from .layout import Layout, LinearPlan


@dataclasses.dataclass
class Images:
    """Initial memory contents, in words (``pmem`` is filled by the *program* step)."""

    wmem: np.ndarray                 #: uint8 [words, bytes per word]
    cmem: np.ndarray                 #: uint16 [words]
    pmem: np.ndarray | None = None   #: uint64 [words]


def pack_wmem(tiles: Iterable[tuple[LinearPlan, np.ndarray]], layout: Layout) -> np.ndarray:
    t = layout.target
    width = t.memory("wmem").width
    out = np.zeros((layout.used["wmem"], word_bytes(width)), dtype=np.uint8)
    for lp, tl in tiles:
        r = lp.tiles
        out[r.offset:r.offset + r.words] = pack_tiles(tl, t.packing, width)
    return out


def _put(cmem: np.ndarray, region, values: np.ndarray, lo: int, hi: int, what: str) -> None:
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    if v.size != region.words:
        raise AssertionError(f"{region.name}: {v.size} values for {region.words} words")
    if v.size and (v.min() < lo or v.max() > hi):
        raise MmfreeError(f"{region.name}: {what} values in [{v.min()}, {v.max()}] do not fit [{lo}, {hi}]")
    cmem[region.offset:region.offset + region.words] = v.astype(np.uint16 if lo >= 0 else np.int16).view(np.uint16)


def build_cmem(compiled: CompiledModel, layout: Layout) -> np.ndarray:
    cmem = np.zeros(layout.used["cmem"], dtype=np.uint16)
    cfg = compiled.config
    v, d = cfg.vocab_size, cfg.hidden_size
    # embedding codes: rows start on a word; int8 two per word, low byte first
    codes = compiled.emb_codes
    bits = 8 * codes.dtype.itemsize
    if bits != layout.emb_bits:
        raise AssertionError(f"embedding codes are {bits}-bit, layout expects {layout.emb_bits}")
    r = layout.region("embedding.codes")
    stride = layout.emb_row_stride
    if bits == 8:
        padded = np.zeros((v, 2 * stride), dtype=np.int8)
        padded[:, :d] = codes
        words = padded.view("<u2")
    else:
        words = codes.astype("<i2").view("<u2")
    cmem[r.offset:r.offset + r.words] = words.reshape(-1)
    # embedding scales: (mantissa uint16, exponent int16) per row
    r = layout.region("embedding.scales")
    m, e = np.asarray(compiled.emb_m, np.int64), np.asarray(compiled.emb_e, np.int64)
    if m.size and (m.min() < 0 or m.max() > 0xFFFF or e.min() < -(1 << 15) or e.max() >= 1 << 15):
        raise MmfreeError("embedding PF scales do not fit 16-bit mantissa / int16 exponent")
    sc = np.stack([m, e], axis=1)
    cmem[r.offset:r.offset + r.words] = (sc & 0xFFFF).astype(np.uint16).reshape(-1)
    # per LINEAR vectors
    groups = {}
    for li, layer in enumerate(compiled.layers):
        for g in ("attn", "out", "mlp", "down"):
            groups[f"layers.{li}.{g}"] = (getattr(layer, g), layer.lower_bound)
    groups["head"] = (compiled.head, None)
    for lp in layout.linears:
        group, lb = groups[lp.name]
        if (lp.cu is None) != (group.cu is None):
            raise AssertionError(f"{lp.name}: RMS weight presence differs from the layout")
        if lp.cu is not None:
            _put(cmem, lp.cu, group.cu, -(1 << 15), (1 << 15) - 1, "C16")
        byname = {p.name: p for p in group.projections}
        for pn, reg in zip(lp.projections, lp.cv):
            _put(cmem, reg, byname[pn].cv, -(1 << 15), (1 << 15) - 1, "C16")
        if lp.lb is not None:
            if lb is None:
                raise AssertionError(f"{lp.name}: layout has lower bounds, the model none")
            _put(cmem, lp.lb, lb, 0, 0xFFFF, "P16")
    return cmem


def pack(compiled: CompiledModel, tiles: Iterable[tuple[LinearPlan, np.ndarray]], layout: Layout) -> Images:
    """The *pack* step."""
    return Images(wmem=pack_wmem(tiles, layout), cmem=build_cmem(compiled, layout))
