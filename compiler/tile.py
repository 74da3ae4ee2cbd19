"""Compiler step *tile*: ternary matrices -> tile streams for the target's lane arrangement.

Each LINEAR of the program reads one stream of ``R x C`` tiles
(:func:`mmfree.packing.tile_stream` defines the order: row blocks outer,
segments, column blocks inner; zero padding to multiples of ``R`` and ``C``).
The attn LINEAR's segments are i, f, g; the mlp LINEAR cuts the fused
gate/up matrix into its gate rows (0..I-1) and up rows (I..2I-1).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from mmfree.compiled import CompiledModel
from mmfree.packing import tile_stream

from .layout import Layout, LinearPlan


def segment_matrices(compiled: CompiledModel, lp: LinearPlan) -> list[np.ndarray]:
    """The ternary matrices of a LINEAR's segments, in stream order."""
    projs = {p.name: p for p in compiled.projections()}
    out = []
    for pi, r0, rows in lp.segments:
        t = projs[lp.projections[pi]].t
        out.append(t[r0:r0 + rows])
    return out


def tile_linear(compiled: CompiledModel, lp: LinearPlan, layout: Layout) -> np.ndarray:
    """Tiles ``[ntiles, R*C]`` (int8) of one LINEAR."""
    tiles = tile_stream(segment_matrices(compiled, lp), layout.target.rows, layout.target.cols)
    if len(tiles) != lp.tiles.words:
        raise AssertionError(f"{lp.name}: {len(tiles)} tiles, layout reserved {lp.tiles.words}")
    return tiles


def tile(compiled: CompiledModel, layout: Layout) -> Iterator[tuple[LinearPlan, np.ndarray]]:
    """The *tile* step, lazily: ``(LINEAR plan, tiles)`` in program (= wmem) order."""
    for lp in layout.linears:
        yield lp, tile_linear(compiled, lp, layout)
