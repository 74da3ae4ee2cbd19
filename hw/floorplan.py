"""Placement constraints for the two-clock core on the ECP5-85F: the weight block RAMs at chosen sites.

The weight banks of a core with a matrix clock are read one tile word per cycle at the matrix clock,
and their block RAMs take most of the die's (141 of 208 on the ULX3S-85F). Left to itself, nextpnr's
placer legalizes them to sites all over the die and leaves the registers that take their words far
from them (docs/bitstreams.md, "Two clocks, second round"). This module fixes the weight block RAMs
before placement, by the ``BEL`` attribute nextpnr honours on any cell of the input netlist:

* a column group ``wmem{k}_{g}`` of every bank ``k`` gets one region, so the bank select (an OR of
  the banks' registered words) joins words that come from one place;
* within a region the block RAMs of one 9-bit slice of all the banks are neighbours;
* the regions take the two middle block RAM rows first, then the sites of the outer rows nearest
  the middle of the die; the groups spread over the die's width in bands.

Every other block RAM (code buffer, vectors, tables) is left to the placer. The sites are those of
the LFE5U-85F as nextpnr names them (``X{x}/Y{y}/EBR{i}``).
"""
import json
import re
from pathlib import Path

__all__ = ["COPY", "KEEP_COPIES", "EBR_SITES", "weight_floorplan", "apply_floorplan"]

#: attributes of a register that copies another (same input) so that each copy can sit by its own
#: loads: Yosys's opt_merge would make the copies one register again, unless the build marks them
#: ``keep`` (:data:`KEEP_COPIES`, run after reading the design). Copies should have no reset: Yosys
#: does not fold a reset into a kept flip-flop, so it would become a LUT input fed by the global reset.
COPY = {"mmfree_copy": 1}
KEEP_COPIES = "setattr -set keep 1 a:mmfree_copy %ci1 t:$dff %i"

#: block RAM sites of each part: the rows (y, nearest the middle first) and the columns (x, site index)
_EBR_COLUMNS_85F = [(x0 + 2 * i, i) for x0 in (4, 13, 22, 31, 40, 49, 58, 69, 78, 87, 96, 105, 114)
                    for i in range(4)]
EBR_SITES = {"LFE5U-85F": ((46, 70, 22, 82), _EBR_COLUMNS_85F)}

_WMEM = re.compile(r"(?:^|\.)wmem(\d+)_(\d+)\.(\d+)\.(\d+)$")


def weight_floorplan(netlist: dict, device: str) -> dict[str, str]:
    """``{cell name: BEL}`` for the weight block RAMs (``wmem{bank}_{group}.{row}.{col}``) of a netlist
    (Yosys JSON after ``synth_ecp5``) on ``device`` (a part name, e.g. ``LFE5U-85F-6BG381C``); empty when
    it has none.

    Raises
    ------
    ValueError
        The part has no site table here, or the groups do not fit their regions.
    """
    part = next((p for p in EBR_SITES if device.startswith(p)), None)
    if part is None:
        raise ValueError(f"no block RAM site table for {device}; floorplans exist for {', '.join(EBR_SITES)}")
    rows, columns = EBR_SITES[part]
    cells = next(m for m in netlist["modules"].values()
                 if m.get("attributes", {}).get("top") in (1, "00000000000000000000000000000001"))["cells"]
    groups: dict[int, list] = {}
    for name, cell in cells.items():
        hit = _WMEM.search(name)
        if cell["type"] == "DP16KD" and hit:
            k, g, r, c = map(int, hit.groups())
            groups.setdefault(g, []).append(((c, r, k), name))
    if not groups:
        return {}
    ng = max(groups) + 1
    bands = -(-ng // 2)                  # two groups per band of columns: one in each half of the rows
    centre = (columns[0][0] + columns[-1][0]) / 2
    bels = {}
    for g, members in sorted(groups.items()):
        band, half = g % bands, g // bands
        cols = columns[len(columns) * band // bands:len(columns) * (band + 1) // bands]
        if len(members) > 2 * len(cols):
            raise ValueError(f"weight column group {g} has {len(members)} block RAMs; its region has "
                             f"{2 * len(cols)} sites")
        # the middle row of the band in column order, then as many sites of the outer row as are
        # needed, those nearest the middle of the die, in column order too
        outer = sorted(cols, key=lambda xi: abs(xi[0] - centre))[:max(0, len(members) - len(cols))]
        region = [(x, rows[half], i) for x, i in cols] + [(x, rows[half + 2], i) for x, i in sorted(outer)]
        for (x, y, i), (_, name) in zip(region, sorted(members)):
            bels[name] = f"X{x}/Y{y}/EBR{i}"
    return bels


def apply_floorplan(path, device: str) -> int:
    """Write :func:`weight_floorplan`'s ``BEL`` attributes into the netlist at ``path``; the count."""
    path = Path(path)
    netlist = json.loads(path.read_text())
    bels = weight_floorplan(netlist, device)
    if bels:
        cells = next(m for m in netlist["modules"].values()
                     if m.get("attributes", {}).get("top") in (1, "00000000000000000000000000000001"))["cells"]
        for name, bel in bels.items():
            cells[name].setdefault("attributes", {})["BEL"] = bel
        path.write_text(json.dumps(netlist))
    return len(bels)
