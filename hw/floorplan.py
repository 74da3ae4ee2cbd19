"""Placement constraints for the two-clock core on the ECP5-85F: the die split between the two clocks.

A core with a matrix clock reads its weight banks one tile word per cycle at that clock (100 MHz on the
ULX3S), and their block RAMs take most of the die's (141 of 208). Left to the placer, the weight block
RAMs and the ``sync`` side's multipliers (statistics, quantization, MLGRU) share the middle of the die, and
routing does not converge there (docs/bitstreams.md, "Two clocks, fourth round"). This module fixes three
kinds of cells before placement, by the ``BEL`` attribute nextpnr honours on any cell of the input netlist,
so that each clock gets one part of the die:

* the weight block RAMs (``wmem{bank}_{group}``) in the three block RAM rows of one side of the die, bank
  ``k`` in row :attr:`Layout.weight_rows` ``[k]``; the column groups left to right, each in its own band of
  block RAM columns, the same band in every row (a group's parts share that group's rows of the TAC array);
* the code buffer (``qbuf``, written at ``sync``, read at the matrix clock) in the middle of the weight
  rows' last row, in the block of columns the bands leave free;
* every multiplier (all of them ``sync``) in the DSP rows of the other side, sorted by name (so that each
  unit's are together) and spread evenly over the sites.

The other block RAMs (vectors, codes, program, tables) are left to the placer, which puts them in the free
row on the ``sync`` side. The sites are the LFE5U-85F's as nextpnr names them (``X{x}/Y{y}/EBR{i}``,
``X{x}/Y{y}/MULT18_{i}``).
"""
import json
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["COPY", "KEEP_COPIES", "LAYOUTS", "Layout", "floorplan", "apply_floorplan"]

#: attributes of a register that copies another (same input) so that each copy can sit by its own
#: loads: Yosys's opt_merge would make the copies one register again, unless the build marks them
#: ``keep`` (:data:`KEEP_COPIES`, run after reading the design). Copies should have no reset: Yosys
#: does not fold a reset into a kept flip-flop, so it would become a LUT input fed by the global reset.
COPY = {"mmfree_copy": 1}
KEEP_COPIES = "setattr -set keep 1 a:mmfree_copy %ci1 t:$dff %i"


@dataclass(frozen=True)
class Layout:
    """Sites of one part, as the floorplan uses them."""
    #: block RAM columns, left to right: ``(x, site index)``; every block RAM row has these
    ebr_columns: tuple
    #: the block RAM row (y) of each weight bank
    weight_rows: tuple
    #: indices into ``ebr_columns`` kept out of the weight bands: the code buffer's, in the last weight row
    centre: tuple
    #: multiplier sites in the order they are filled: ``(x, y, site index)``
    dsp_sites: tuple


_BLOCKS_85F = (4, 13, 22, 31, 40, 49, 58, 69, 78, 87, 96, 105, 114)    # x of each block of 4 sites
LAYOUTS = {"LFE5U-85F": Layout(
    ebr_columns=tuple((x0 + 2 * i, i) for x0 in _BLOCKS_85F for i in range(4)),
    weight_rows=(70, 82, 46),           # block RAM rows 22, 46, 70, 82; DSP rows 10, 34, 58
    centre=(24, 25, 26, 27),            # the block at x = 58, the middle of the die
    dsp_sites=tuple((x0 + dx, y, i) for y in (34, 10) for x0 in _BLOCKS_85F
                    for dx, i in ((0, 0), (1, 1), (4, 4), (5, 5))),
)}

#: a weight block RAM: ``wmem{bank}_{group}.{r}.{c}`` (``wmem_{group}`` with one bank; ``Core.wmem_parts``)
_WMEM = re.compile(r"(?:^|\.)wmem(\d*)_(\d+)\.(\d+)\.(\d+)$")
_QBUF = re.compile(r"(?:^|\.)qbuf\.\d+\.\d+$")


def _top_cells(netlist: dict) -> dict:
    return next(m for m in netlist["modules"].values()
                if m.get("attributes", {}).get("top") in (1, "00000000000000000000000000000001"))["cells"]


def floorplan(netlist: dict, device: str) -> dict[str, str]:
    """``{cell name: BEL}`` for the weight block RAMs, the code buffer's block RAMs and the multipliers of a
    netlist (Yosys JSON after ``synth_ecp5``) on ``device`` (a part name, e.g. ``LFE5U-85F-6BG381C``).

    Raises
    ------
    ValueError
        The part has no layout here, or the cells do not fit their sites.
    """
    part = next((p for p in LAYOUTS if device.startswith(p)), None)
    if part is None:
        raise ValueError(f"no floorplan layout for {device}; layouts exist for {', '.join(LAYOUTS)}")
    lay = LAYOUTS[part]
    cells = _top_cells(netlist)
    bels = {}
    parts: dict[tuple, list] = {}
    for name, cell in cells.items():
        hit = _WMEM.search(name)
        if cell["type"] == "DP16KD" and hit:
            k, g, r, c = (int(v or 0) for v in hit.groups())
            parts.setdefault((k, g), []).append(((c, r), name))
    if parts:
        columns = [xi for j, xi in enumerate(lay.ebr_columns) if j not in lay.centre]
        groups = max(g for _, g in parts) + 1
        width = -(-len(columns) // groups)
        for (k, g), members in sorted(parts.items()):
            if k >= len(lay.weight_rows):
                raise ValueError(f"weight bank {k}: the {part} layout has block RAM rows for "
                                 f"{len(lay.weight_rows)} banks")
            band = columns[g * width:(g + 1) * width]
            if len(members) > len(band):
                raise ValueError(f"weight part wmem{k}_{g} has {len(members)} block RAMs; its band has "
                                 f"{len(band)} sites")
            for (x, i), (_, name) in zip(band, sorted(members)):
                bels[name] = f"X{x}/Y{lay.weight_rows[k]}/EBR{i}"
    qbuf = sorted(n for n, c in cells.items() if c["type"] == "DP16KD" and _QBUF.search(n))
    if len(qbuf) > len(lay.centre):
        raise ValueError(f"the code buffer has {len(qbuf)} block RAMs; the {part} layout has {len(lay.centre)} "
                         f"sites for it")
    for j, name in zip(lay.centre, qbuf):
        x, i = lay.ebr_columns[j]
        bels[name] = f"X{x}/Y{lay.weight_rows[-1]}/EBR{i}"
    mults = sorted(n for n, c in cells.items() if c["type"] == "MULT18X18D")
    if len(mults) > len(lay.dsp_sites):
        raise ValueError(f"{len(mults)} multipliers; the {part} layout has {len(lay.dsp_sites)} sites for them")
    for j, name in enumerate(mults):
        x, y, i = lay.dsp_sites[j * len(lay.dsp_sites) // len(mults)]
        bels[name] = f"X{x}/Y{y}/MULT18_{i}"
    return bels


def apply_floorplan(path, device: str) -> dict[str, int]:
    """Write :func:`floorplan`'s ``BEL`` attributes into the netlist at ``path``; the cells fixed, by kind
    (``weight_brams``, ``code_brams``, ``multipliers``)."""
    path = Path(path)
    netlist = json.loads(path.read_text())
    bels = floorplan(netlist, device)
    cells = _top_cells(netlist)
    for name, bel in bels.items():
        cells[name].setdefault("attributes", {})["BEL"] = bel
    if bels:
        path.write_text(json.dumps(netlist))
    counts = {"weight_brams": 0, "code_brams": 0, "multipliers": 0}
    for name in bels:
        counts["multipliers" if cells[name]["type"] == "MULT18X18D" else
               "weight_brams" if _WMEM.search(name) else "code_brams"] += 1
    return counts
