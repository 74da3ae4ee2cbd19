"""Where the cells of a flattened synth_ecp5 netlist go: cell counts per design block.

    python tools/util_breakdown.py bitstreams/ulx3s-85f/build/top.json [DEPTH]

The bitstream flow flattens the design, so cells carry no hierarchy of their own. Each cell is
attributed to the block named by the best (shortest, visible) name of a net it drives, cut to
DEPTH dotted levels (default 2: ``core.glu``); a net of the parent itself (``core.e_hold``) counts
as ``core (own)``, and a cell that drives only unnamed nets goes to ``(unnamed)``. Prints LUT4, CCU2C, TRELLIS_FF, PFUMX/L6MUX21, DP16KD, MULT18X18D and ALU54B counts
per block, largest LUT4 + 2 x CCU2C first (a CCU2C packs two LUT4s). The attribution follows the
names Yosys kept, so it is approximate at block boundaries; it is meant for finding the large
blocks before a two-hour place and route, not for exact numbers.
"""
import json
import sys
from collections import Counter, defaultdict

TYPES = ("LUT4", "CCU2C", "TRELLIS_FF", "PFUMX", "L6MUX21", "DP16KD", "MULT18X18D", "ALU54B")


def breakdown(path: str, depth: int = 2) -> dict[str, Counter]:
    d = json.load(open(path))
    mods = d["modules"]
    top = next(n for n, m in mods.items()
               if m.get("attributes", {}).get("top") in (1, "00000000000000000000000000000001"))
    mod = mods[top]
    best = {}
    for n, info in mod["netnames"].items():
        cand = (info.get("hide_name", 0), n.count("$"), len(n), n)
        for b in info["bits"]:
            if not isinstance(b, str) and (b not in best or cand < best[b]):
                best[b] = cand
    blocks: dict[str, Counter] = defaultdict(Counter)
    for c in mod["cells"].values():
        t = c["type"]
        if t not in TYPES:
            continue
        dirs = c.get("port_directions", {})
        names = [best[b] for p, bits in c["connections"].items() if dirs.get(p) == "output"
                 for b in bits if not isinstance(b, str) and b in best]
        name = min(names)[3] if names and min(names)[0] == 0 else None
        if name is None:
            block = "(unnamed)"
        else:
            parts = name.split("$")[0].split("[")[0].split(".")
            # a name with more levels than DEPTH is inside a submodule; otherwise it is the parent's own logic
            block = ".".join(parts[:depth]) if len(parts) > depth else ".".join(parts[:-1] or ["top"]) + " (own)"
        blocks[block][t] += 1
    return blocks


def main() -> None:
    path = sys.argv[1]
    depth = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    blocks = breakdown(path, depth)
    total = Counter()
    for c in blocks.values():
        total.update(c)
    key = lambda kv: -(kv[1]["LUT4"] + 2 * kv[1]["CCU2C"])
    print("| block | " + " | ".join(TYPES) + " |")
    print("|---|" + "---|" * len(TYPES))
    for name, c in sorted(blocks.items(), key=key):
        if c["LUT4"] + 2 * c["CCU2C"] + c["TRELLIS_FF"] < 200 and not (c["DP16KD"] or c["MULT18X18D"]):
            continue
        print(f"| {name} | " + " | ".join(f"{c[t]:,}" for t in TYPES) + " |")
    print("| total | " + " | ".join(f"{total[t]:,}" for t in TYPES) + " |")


if __name__ == "__main__":
    main()
