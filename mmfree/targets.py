"""Target descriptions: lane arrangement, memory shapes and limits, per board.

One place that the compiler (tiling, packing, capacity checks) and the
hardware (array and memory generators, SoC tops) both read. A target is a
:class:`Target`; :func:`get` looks one up by name and lists the known names
when the name is wrong.

Memories (docs/architecture.md):

``wmem``  packed ternary weights, one word per TAC tile (``rows * cols`` trits);
``cmem``  16-bit constants: C16 weight vectors, P16 lower bounds, embedding
          codes (int8 codes two per word) and embedding PF scales;
``vmem``  32-bit vectors (V32): residual, temporaries, recurrent state;
``qbuf``  int8 activation codes, three vectors of ``max_input`` codes;
``pmem``  64-bit program words.

``depth=None`` means "sized to the model" (the ``sim`` target).
"""

from __future__ import annotations

import dataclasses
import math

from .errors import MmfreeError
from .packing import B3_TRITS_PER_BYTE, PACKINGS, word_bits  # noqa: F401  (re-exported)


@dataclasses.dataclass(frozen=True)
class Memory:
    """One on-chip memory: ``depth`` words of ``width`` bits (``depth=None``: sized to fit).

    ``init`` says whether the memory's initial contents are part of the
    bitstream (block RAM), so that ``ecpbram``/``icebram`` can patch them;
    iCE40 SPRAM, for one, cannot be initialised and is loaded over the link.
    """

    name: str
    width: int
    depth: int | None
    init: bool = True

    def __post_init__(self):
        if self.width <= 0:
            raise ValueError(f"memory {self.name}: width must be positive, got {self.width}")
        if self.depth is not None and self.depth <= 0:
            raise ValueError(f"memory {self.name}: depth must be positive or None, got {self.depth}")

    @property
    def bits(self) -> int | None:
        return None if self.depth is None else self.depth * self.width


@dataclasses.dataclass(frozen=True)
class Target:
    """An accelerator configuration.

    Parameters
    ----------
    name : str
    rows, cols : int
        TAC tile: ``rows`` output rows x ``cols`` input columns per cycle;
        ``lanes = rows * cols`` ternary add/subtract/skip operations per cycle.
    vec_lanes : int
        Elements per cycle of the vector passes (statistics, quantization).
    packing : {"b3", "2b"}
        Weight packing: base 3, 5 trits per byte; or 2 bits per trit.
    emb_bits : {8, 16}
        Embedding code width.
    topk : int
        Candidates reported per step.
    max_input : int
        Longest projection input (qbuf length), i.e. max(d, I).
    memories : tuple of Memory
    board : str or None
        amaranth-boards platform name for bitstream targets.
    clock_hz : int or None
        Core clock the bitstream is built for.
    matrix_clock_hz : int or None
        Clock of the tile streams (weight reads, code sequencer, TAC array)
        when they run in a clock domain of their own (``None``: they run on
        ``clock_hz``); see :class:`mmfree.hw.core.Core` ``matrix_domain``.
    """

    name: str
    rows: int
    cols: int
    vec_lanes: int
    packing: str
    emb_bits: int
    topk: int
    max_input: int | None
    memories: tuple[Memory, ...]
    board: str | None = None
    clock_hz: int | None = None
    description: str = ""
    matrix_clock_hz: int | None = None

    def __post_init__(self):
        for f in ("rows", "cols", "vec_lanes", "topk"):
            v = getattr(self, f)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"target {self.name}: {f} must be a positive integer, got {v!r}")
        if self.packing not in PACKINGS:
            raise ValueError(f"target {self.name}: packing must be one of {PACKINGS}, got {self.packing!r}")
        if self.emb_bits not in (8, 16):
            raise ValueError(f"target {self.name}: emb_bits must be 8 or 16, got {self.emb_bits!r}")
        names = [m.name for m in self.memories]
        for need in ("wmem", "cmem", "vmem", "pmem"):
            if need not in names:
                raise ValueError(f"target {self.name}: missing memory {need!r}")

    @property
    def lanes(self) -> int:
        return self.rows * self.cols

    @property
    def wmem_word_bits(self) -> int:
        """Bits of one packed tile word."""
        return word_bits(self.lanes, self.packing)

    def memory(self, name: str) -> Memory:
        for m in self.memories:
            if m.name == name:
                return m
        raise KeyError(name)

    def with_lanes(self, rows: int, cols: int) -> "Target":
        """The same target with another tile shape (``--lanes``); the weight memory keeps its bits."""
        return self._with_tile(dataclasses.replace(self, rows=rows, cols=cols))

    def with_packing(self, packing: str) -> "Target":
        """The same target with another weight packing (``--packing``); the weight memory keeps its bits."""
        return self._with_tile(dataclasses.replace(self, packing=packing))

    def _with_tile(self, t: "Target") -> "Target":
        w = self.memory("wmem")
        if w.depth is None:
            mems = tuple(dataclasses.replace(m, width=t.wmem_word_bits) if m.name == "wmem" else m
                         for m in self.memories)
        else:
            depth = w.bits // t.wmem_word_bits
            mems = tuple(dataclasses.replace(m, width=t.wmem_word_bits, depth=depth) if m.name == "wmem" else m
                         for m in self.memories)
        return dataclasses.replace(t, memories=mems)


#: iCEBreaker memory split (docs/ice40-core.md): SPRAM words, of which wmem takes the first
#: ``ICE40_WMEM_WORDS`` and cmem the rest; cmem words below ``ICE40_CMEM_EBR_WORDS`` are block RAM.
ICE40_SPRAM_WORDS = 32768
ICE40_WMEM_WORDS = 22944
ICE40_CMEM_EBR_WORDS = 1536


def _sim() -> Target:
    t = Target(name="sim", rows=16, cols=16, vec_lanes=16, packing="b3", emb_bits=16, topk=8, max_input=None,
               memories=(Memory("wmem", 8 * 52, None), Memory("cmem", 16, None), Memory("vmem", 32, None),
                         Memory("pmem", 64, None)),
               description="Verilator model; memories sized to the model")
    return t


def _ulx3s() -> Target:
    # ECP5-85F: 208 DP16KD block RAMs (2048 x 9 bits each; 8 bits used for
    # packed bytes). 256 lanes -> 52-byte tile words -> 52 BRAMs per 2048
    # words; 3 x 2048 words = 156 BRAMs = 1,572,864 trits. The rest: cmem
    # 32768 x 16 (32 BRAMs: int8 embedding + C16 vectors), vmem 4096 x 32
    # (8), qbuf 3 x 1024 x 8 (2), pmem 512 x 64 (4), sigmoid table (1):
    # 203 of 208.
    return Target(name="ulx3s-85f", rows=16, cols=16, vec_lanes=16, packing="b3", emb_bits=8, topk=8,
                  max_input=1024,
                  memories=(Memory("wmem", 8 * 52, 3 * 2048), Memory("cmem", 16, 32768),
                            Memory("vmem", 32, 4096), Memory("pmem", 64, 512)),
                  board="ulx3s-85f", clock_hz=100_000_000,
                  description="Radiona ULX3S with ECP5 LFE5U-85F")


def _icebreaker() -> Target:
    # iCE40 UP5K, the serial core (docs/ice40-core.md). The four 16K x 16
    # SPRAMs form one 32K x 32 memory: words [0, 22944) are wmem (5 x 4
    # tiles, 20 trits in base 3 = one 32-bit word), words [22944, 32768)
    # hold cmem words [1536, 21184), two 16-bit words per SPRAM word; cmem
    # words [0, 1536) are block RAM. SPRAM has no initial contents, so
    # both are loaded over the link (init=False). vmem words [976, 1024) are
    # the firmware's scratch.
    return Target(name="icebreaker", rows=5, cols=4, vec_lanes=1, packing="b3", emb_bits=8, topk=4,
                  max_input=256,
                  memories=(Memory("wmem", 32, ICE40_WMEM_WORDS, init=False),
                            Memory("cmem", 16, ICE40_CMEM_EBR_WORDS + 2 * (ICE40_SPRAM_WORDS - ICE40_WMEM_WORDS),
                                   init=False),
                            Memory("vmem", 32, 976), Memory("pmem", 64, 128)),
                  # 18 MHz: SB_PLL40_PAD from the 12 MHz oscillator, 3 Mbaud exact (docs/bitstreams.md)
                  board="icebreaker", clock_hz=18_000_000,
                  description="1BitSquared iCEBreaker with iCE40 UP5K")


TARGETS = {t.name: t for t in (_sim(), _ulx3s(), _icebreaker())}


def get(name: str) -> Target:
    """The target called ``name``; an unknown name lists the known ones."""
    try:
        return TARGETS[name]
    except KeyError:
        raise MmfreeError(f"unknown target {name!r}; known targets: {', '.join(TARGETS)}") from None


def parse_tile(spec) -> tuple[int, int, int | None]:
    """A tile given as ``--lanes``: ``(rows, cols, vec_lanes or None)``.

    ``256`` -> (16, 16, None) (a square lane count); ``"16x16"`` -> (16, 16, None);
    ``"16x16/4"`` -> (16, 16, 4); a tuple ``(rows, cols[, vec_lanes])`` passes
    through. Only the form is checked here; what a core can build is the core's
    (and :func:`mmfree.hw.bitstream.parse_lanes`') business.
    """
    v = None
    if isinstance(spec, (tuple, list)):
        r, c = spec[:2]
        v = spec[2] if len(spec) > 2 else None
    else:
        s = str(spec).lower().strip()
        try:
            if "/" in s:
                s, vs = s.split("/", 1)
                v = int(vs)
            if "x" in s:
                r, c = (int(x) for x in s.split("x"))
            else:
                p = int(s)
                r = c = math.isqrt(p)
                if r * r != p:
                    raise MmfreeError(f"--lanes {p}: a bare lane count must be a square such as 64, 256 or 1024 "
                                      f"(or give ROWSxCOLS)")
        except ValueError:
            raise MmfreeError(f"--lanes must be a lane count (e.g. 256), ROWSxCOLS (e.g. 16x16) or "
                              f"ROWSxCOLS/VEC (e.g. 16x16/4), got {spec!r}") from None
    for what, x in (("rows", r), ("cols", c), ("vector lanes", v)):
        if x is not None and (not isinstance(x, int) or x < 1):
            raise MmfreeError(f"--lanes {spec}: {what} must be a positive integer, got {x!r}")
    return r, c, v
