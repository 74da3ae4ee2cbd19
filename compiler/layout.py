"""Memory map: where every tensor and vector of a model goes, and whether it fits.

The layout depends only on the model's shape, the target and the embedding
code width, so it is computed right after loading, and a model too big for
the target fails here, before any heavy step runs or any file is written.

Conventions (docs/isa.md, "Memory map"):

* **cmem** (16-bit words): embedding codes (row-major, each row starting on
  a word: int16 one per word, or int8 two per word, low byte first),
  embedding PF scales (mantissa, exponent pairs), then per LINEAR in
  program order its C16 RMS weight ``cu``, one C16 quantizer weight ``cv``
  per projection, and the P16 lower bounds of the layer (MLGRU only); the
  LM head's last.
* **vmem** (32-bit words, V32): ``x`` (residual), ``r`` (residual after the
  token mixer), ``bo`` (``g * silu(h)``, the o projection's input), ``p``
  (``silu(gate) * up``, the down projection's input, length I), then the
  recurrent state ``h`` of every layer. vmem starts zeroed (state reset).
* **wmem**: one contiguous tile stream per LINEAR, in program order, no gaps:
  the whole weight memory is read front to back once per token.
* **pmem**: the program from word 0.

Every vector region starts on a multiple of the target's ``vec_lanes`` words.
"""

from __future__ import annotations

import dataclasses

from mmfree import isa
from mmfree import numerics as nx
from mmfree.config import ModelConfig
from mmfree.errors import CapacityError
from mmfree.isa import Epilogue
from mmfree.packing import n_tiles
from mmfree.targets import Target

#: LINEAR groups of a layer, in program order: (group, epilogue)
LAYER_GROUPS = (("attn", Epilogue.MLGRU), ("out", Epilogue.ADD), ("mlp", Epilogue.GLU), ("down", Epilogue.ADD))


@dataclasses.dataclass
class Region:
    """``words`` words at ``offset`` in memory ``memory``; ``kind`` names the format."""

    name: str
    memory: str
    offset: int
    words: int
    kind: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class LinearPlan:
    """One LINEAR instruction: which projections, where its operands live.

    ``segments`` lists ``(projection index, first row, rows)``: the fused
    gate/up matrix is one projection cut into two segments.
    """

    name: str                       #: e.g. ``layers.0.attn``, ``head``
    layer: int | None
    group: str                      #: attn, out, mlp, down, head
    epilogue: Epilogue
    projections: list[str]          #: checkpoint prefixes, one quantizer each
    segments: list[tuple[int, int, int]]
    n: int
    rows: int
    src: int
    dst: int
    aux: int
    cu: Region | None
    cv: list[Region]
    lb: Region | None
    tiles: Region


@dataclasses.dataclass
class Layout:
    config: ModelConfig
    target: Target
    emb_bits: int
    regions: list[Region]
    linears: list[LinearPlan]
    used: dict[str, int]            #: words used per memory

    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def emb_row_stride(self) -> int:
        return -(-self.config.hidden_size * self.emb_bits // 16)

    def memory_map(self) -> list[dict]:
        return [r.to_json() for r in self.regions]


class _Alloc:
    def __init__(self, memory: str, align: int, regions: list[Region]):
        self.memory, self.align, self.regions, self.top = memory, align, regions, 0

    def __call__(self, name: str, words: int, kind: str) -> Region:
        start = -(-self.top // self.align) * self.align
        r = Region(name=name, memory=self.memory, offset=start, words=words, kind=kind)
        self.top = start + words
        self.regions.append(r)
        return r


def program_words(n_layers: int) -> int:
    """Program length in words: EMBED, 4 LINEARs per layer, the head, END."""
    per_layer = (4 + 3 + 3) + (4 + 1 + 1) + (4 + 1 + 2) + (4 + 1 + 1)
    return 2 + per_layer * n_layers + (4 + 1 + 1) + 1


def plan(config: ModelConfig, target: Target, emb_bits: int | None = None) -> Layout:
    """Lay the model out in the target's memories; raise :class:`CapacityError` if it does not fit."""
    emb_bits = target.emb_bits if emb_bits is None else emb_bits
    if emb_bits not in (8, 16):
        raise CapacityError(f"embedding code width must be 8 or 16 bits, got {emb_bits}")
    d, inter, v, nl = config.hidden_size, config.intermediate_size, config.vocab_size, config.num_hidden_layers
    R, C, align = target.rows, target.cols, target.vec_lanes
    check_inputs(config, target)

    regions: list[Region] = []
    cmem, vmem = _Alloc("cmem", align, regions), _Alloc("vmem", align, regions)
    wmem, pmem = _Alloc("wmem", 1, regions), _Alloc("pmem", 1, regions)

    stride = -(-d * emb_bits // 16)
    cmem("embedding.codes", v * stride, f"E{emb_bits}")
    cmem("embedding.scales", 2 * v, "PF")
    x, r = vmem("x", d, "V32"), vmem("r", d, "V32")
    bo, p = vmem("bo", d, "V32"), vmem("p", inter, "V32")
    hs = [vmem(f"layers.{l}.h", d, "V32") for l in range(nl)]

    linears = []

    def linear(name, layer, group, epi, projs, segments, n, rows, src, dst, aux, unit_cu, lb):
        cu = None if unit_cu else cmem(f"{name}.cu", n, "C16")
        cv = [cmem(f"{pn}.cv", n, "C16") for pn in projs]
        lbr = cmem(f"{name}.lower_bound", rows, "P16") if lb else None
        t = wmem(f"{name}.tiles", n_tiles(rows, n, len(segments), R, C), f"T{target.packing}")
        linears.append(LinearPlan(name=name, layer=layer, group=group, epilogue=epi, projections=projs,
                                  segments=segments, n=n, rows=rows, src=src, dst=dst, aux=aux,
                                  cu=cu, cv=cv, lb=lbr, tiles=t))

    for l in range(nl):
        pre = f"model.layers.{l}."
        lb = config.use_lower_bound and l > 0
        linear(f"layers.{l}.attn", l, "attn", Epilogue.MLGRU, [pre + f"attn.{c}_proj" for c in "ifg"],
               [(0, 0, d), (1, 0, d), (2, 0, d)], d, d, x.offset, bo.offset, hs[l].offset, False, lb)
        linear(f"layers.{l}.out", l, "out", Epilogue.ADD, [pre + "attn.o_proj"], [(0, 0, d)], d, d,
               bo.offset, r.offset, x.offset, False, False)
        linear(f"layers.{l}.mlp", l, "mlp", Epilogue.GLU, [pre + "mlp.gate_proj"], [(0, 0, inter), (0, inter, inter)],
               d, inter, r.offset, p.offset, 0, False, False)
        linear(f"layers.{l}.down", l, "down", Epilogue.ADD, [pre + "mlp.down_proj"], [(0, 0, d)], inter, d,
               p.offset, x.offset, r.offset, True, False)
    linear("head", None, "head", Epilogue.TOPK, ["lm_head"], [(0, 0, v)], d, v, x.offset, 0, 0, False, False)
    pmem("program", program_words(nl), "ISA")

    used = {a.memory: a.top for a in (cmem, vmem, wmem, pmem)}
    layout = Layout(config=config, target=target, emb_bits=emb_bits, regions=regions, linears=linears, used=used)
    check_capacity(layout)
    return layout


def check_inputs(config: ModelConfig, target: Target) -> None:
    """Projection input lengths against the target's qbuf and the accumulator range."""
    d, inter = config.hidden_size, config.intermediate_size
    longest = max(d, inter)
    which = "intermediate_size (down_proj input)" if inter >= d else "hidden_size"
    if target.max_input is not None and longest > target.max_input:
        raise CapacityError(f"projection input length {longest} ({which}) exceeds target {target.name}'s "
                            f"max_input {target.max_input} (qbuf holds {target.max_input} codes)")
    if longest > nx.MAX_K:
        raise CapacityError(f"projection input length {longest} ({which}) exceeds {nx.MAX_K}, the most a "
                            f"{nx.ACC_BITS}-bit accumulator covers")
    if config.vocab_size >= 1 << isa.LEN_BITS:
        raise CapacityError(f"vocabulary {config.vocab_size} exceeds the ISA's {isa.LEN_BITS}-bit row count")


def capacity(layout: Layout) -> dict[str, dict]:
    """Per memory: words and bits used and available (``None`` = sized to the model)."""
    out = {}
    for m in layout.target.memories:
        used = layout.used.get(m.name)
        if used is None:
            continue
        out[m.name] = {"width": m.width, "used_words": used, "available_words": m.depth,
                       "used_bits": used * m.width, "available_bits": m.bits,
                       "percent": None if m.depth is None else round(100.0 * used / m.depth, 2)}
    return out


def check_capacity(layout: Layout) -> None:
    """Raise one :class:`CapacityError` line listing every memory's needs against what the target has."""
    cap = capacity(layout)
    limits = {"vmem": 1 << isa.VADDR_BITS, "cmem": 1 << isa.ADDR_BITS, "wmem": 1 << isa.ADDR_BITS}
    over, parts = [], []
    for name, c in cap.items():
        avail = c["available_words"]
        if avail is None:
            avail = limits.get(name)
            if avail is None:
                continue
            what = f"words of address space ({isa.VADDR_BITS if name == 'vmem' else isa.ADDR_BITS}-bit addresses)"
        else:
            what = f"words of {c['width']} bits"
        if c["used_words"] <= avail:
            parts.append(f"{name} {c['used_words']} of {avail}")
        else:
            over.append(f"{name} needs {c['used_words']} {what}, {avail} available")
    if over:
        t = layout.target
        raise CapacityError(f"model does not fit target {t.name}: {'; '.join(over)}"
                            + (f" (fits: {'; '.join(parts)})" if parts else ""))
