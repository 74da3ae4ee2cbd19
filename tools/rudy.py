"""Wire demand of a placed ECP5 netlist (RUDY: each net's half-perimeter spread evenly over its bounding
box), to find where routing will be congested before routing it.

    python tools/rudy.py PLACED.json [N]

PLACED is ``nextpnr-ecp5 ... --no-route --write placed.json``. Prints the demand map in 8 x 8-tile
blocks (wire tiles per tile, global nets left out), its hottest blocks, and the N net groups (names with
digits folded) that add most to the hottest block.
"""
import json
import re
import sys
from collections import defaultdict

import numpy as np

path = sys.argv[1]
top_n = int(sys.argv[2]) if len(sys.argv) > 2 else 15
mod = next(iter(json.load(open(path))["modules"].values()))
loc = {}
for cn, c in mod["cells"].items():
    b = c.get("attributes", {}).get("NEXTPNR_BEL", "")
    hit = re.match(r"X(\d+)/Y(\d+)/", b)
    if hit:
        loc[cn] = (int(hit[1]), int(hit[2]), c["type"])
pins = defaultdict(list)
glob = set()
for cn, c in mod["cells"].items():
    if cn not in loc:
        continue
    for p, bits in c["connections"].items():
        for b in bits:
            if isinstance(b, int):
                pins[b].append(loc[cn][:2])
                if loc[cn][2] == "DCCA" and c.get("port_directions", {}).get(p) == "output":
                    glob.add(b)
names = {}
for n, info in mod["netnames"].items():
    for b in info["bits"]:
        if isinstance(b, int) and (b not in names or len(n) < len(names[b])):
            names[b] = n
W = max(x for x, _, _ in loc.values()) + 1
H = max(y for _, y, _ in loc.values()) + 1
dem = np.zeros((H, W))
boxes = []
for b, ps in pins.items():
    if len(ps) < 2 or b in glob:
        continue
    xs, ys = [p[0] for p in ps], [p[1] for p in ps]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    w, h = x1 - x0 + 1, y1 - y0 + 1
    d = (w + h) / (w * h)
    dem[y0:y1 + 1, x0:x1 + 1] += d
    boxes.append((b, x0, x1, y0, y1, d))
B = 8
blocks = np.add.reduceat(np.add.reduceat(dem, np.arange(0, H, B), axis=0), np.arange(0, W, B), axis=1) / (B * B)
print(f"{len(boxes)} nets; demand per tile: mean {dem.mean():.1f}, max {dem.max():.1f} at "
      f"{np.unravel_index(dem.argmax(), dem.shape)[::-1]} (x, y)")
print("blocks of 8x8 tiles (rows: y from 0), mean demand per tile:")
for r, row in enumerate(blocks):
    print(f"  y{r * B:3d} " + " ".join(f"{v:4.0f}" for v in row))
hy, hx = np.unravel_index(blocks.argmax(), blocks.shape)
bx0, by0 = hx * B, hy * B
share = defaultdict(float)
for b, x0, x1, y0, y1, d in boxes:
    ox = max(0, min(x1, bx0 + B - 1) - max(x0, bx0) + 1)
    oy = max(0, min(y1, by0 + B - 1) - max(y0, by0) + 1)
    if ox and oy:
        share[re.sub(r"\d+", "#", re.sub(r"\[\d+\]$", "", names.get(b, f"bit{b}")))] += d * ox * oy
tot = sum(share.values())
print(f"hottest block x{bx0}-{bx0 + B - 1} y{by0}-{by0 + B - 1}: demand by net group (share of {tot:.0f}):")
for g, v in sorted(share.items(), key=lambda x: -x[1])[:top_n]:
    print(f"  {100 * v / tot:5.1f} %  {g}")
