"""Rough static timing of a flattened synth_ecp5 netlist: the longest register-to-register paths.

    python tools/sta_estimate.py bitstreams/ulx3s-85f/build/top.json [N [CLOCK [PLACED [PERIOD]]]]

Reads Yosys's JSON (``write_json`` after ``synth_ecp5``; the bitstream flow leaves it in ``build/top.json``),
gives every cell a unit delay (LUT4 0.45 ns, PFUMX/L6MUX21 0.2-0.3, CCU2C 0.5 into the chain and 0.06
along it, DP16KD clock-to-out 3.6 without output register, MULT18X18D 3.3 combinational) and every net
0.9 ns plus 0.25 ns per doubling of fanout (carry chains 0), and prints the histogram of endpoint arrival
times and the worst path of the N worst endpoint groups (registers named alike counted once), traced
through the named nets. The numbers are not nextpnr's (no placement); they rank paths, in seconds, before
a two-hour place and route. With CLOCK, only endpoints clocked by a net whose name contains it (e.g.
``mat_clk``) count ("" for all). With PLACED (``nextpnr-ecp5 --no-route --write placed.json``), a net's
delay between two placed cells is the placer's own estimate, 0.12 ns x (6 + max(dx - 5, 0) + max(dy - 5, 0)
+ 2 (min(dx, 5) + min(dy, 5))) at speed 6, and the worst paths show where the placement's long nets are.
The endpoints over PERIOD (ns, default 10) are counted by name.
"""
import json
import math
import re
import sys
from collections import defaultdict

path = sys.argv[1]
top_n = int(sys.argv[2]) if len(sys.argv) > 2 else 40
clock = (sys.argv[3] or None) if len(sys.argv) > 3 else None
placed = (sys.argv[4] or None) if len(sys.argv) > 4 else None
period = float(sys.argv[5]) if len(sys.argv) > 5 else 10.0
d = json.load(open(path))
mods = d["modules"]
top = next(n for n, m in mods.items() if m.get("attributes", {}).get("top") in (1, "00000000000000000000000000000001"))
mod = mods[top]
cells = mod["cells"]

names = {}
for n, info in mod["netnames"].items():
    hidden = info.get("hide_name", 0)
    for i, b in enumerate(info["bits"]):
        if isinstance(b, str):
            continue
        cand = (hidden, len(n), f"{n}[{i}]" if len(info["bits"]) > 1 else n)
        if b not in names or cand < names[b]:
            names[b] = cand
names = {b: v[2] for b, v in names.items()}

driver = {}        # bit -> (cell, port)
fanout = defaultdict(int)
for cn, c in cells.items():
    dirs = c.get("port_directions", {})
    for p, bits in c["connections"].items():
        for b in bits:
            if isinstance(b, str):
                continue
            if dirs.get(p) == "output":
                driver[b] = (cn, p)
            else:
                fanout[b] += 1


loc = {}
if placed:
    for pm in json.load(open(placed))["modules"].values():
        for cn, c in pm.get("cells", {}).items():
            bel = c.get("attributes", {}).get("NEXTPNR_BEL", "")
            mt = re.match(r"X(\d+)/Y(\d+)/", bel)
            if mt:
                loc[cn] = (int(mt.group(1)), int(mt.group(2)))


def route(b, sink_type=None, sink_port=None, sink=None):
    if sink_type == "CCU2C" and sink_port == "CIN":
        return 0.0
    drv = driver.get(b)
    if drv is not None and drv[0] in loc and sink in loc:
        (x0, y0), (x1, y1) = loc[drv[0]], loc[sink]
        dx, dy = abs(x0 - x1), abs(y0 - y1)
        return 0.12 * (6 + max(dx - 5, 0) + max(dy - 5, 0) + 2 * (min(dx, 5) + min(dy, 5)))
    f = fanout.get(b, 1)
    return 0.9 + 0.25 * math.log2(max(f, 1))


def reg_param(c, key):
    v = c["parameters"].get(key, "NONE")
    return v if isinstance(v, str) else str(v)


SEQ = {"TRELLIS_FF", "DP16KD", "PDPW16KD", "EHXPLLL", "TRELLIS_IO", "DCCA", "OSCG", "USRMCLK"}


def arcs(c, out_port):
    """(input ports, delay) pairs for a combinational output, or None when the output is a start point."""
    t = c["type"]
    ins = [p for p, d_ in c.get("port_directions", {}).items() if d_ == "input"]
    if t == "LUT4":
        return [(p, 0.45) for p in "ABCD"]
    if t == "PFUMX":
        return [("ALUT", 0.2), ("BLUT", 0.2), ("C0", 0.3)]
    if t == "L6MUX21":
        return [("D0", 0.2), ("D1", 0.2), ("SD", 0.3)]
    if t == "CCU2C":
        a = [(p, 0.5) for p in ("A0", "B0", "C0", "D0", "A1", "B1", "C1", "D1")]
        if out_port == "COUT":
            return a + [("CIN", 0.06)]
        return a + [("CIN", 0.3)]
    if t == "TRELLIS_DPR16X4":
        return [(p, 0.6) for p in ins if p.startswith("RAD")]
    if t == "MULT18X18D":
        if reg_param(c, "REG_OUTPUT_CLK") != "NONE" or reg_param(c, "REG_PIPELINE_CLK") != "NONE":
            return None
        if reg_param(c, "REG_INPUTA_CLK") != "NONE":
            return None
        return [(p, 3.3) for p in ins if p[0] in "AB" and p[1:].isdigit()]
    if t == "ALU54B":
        return None
    return None


def start_delay(c, port):
    t = c["type"]
    if t == "TRELLIS_FF":
        return 0.45
    if t in ("DP16KD", "PDPW16KD"):
        return 0.6 if reg_param(c, "REGMODE_A") == "OUTREG" else 3.6
    if t == "MULT18X18D":
        return 0.6 if reg_param(c, "REG_OUTPUT_CLK") != "NONE" else 3.6
    return 0.0


arr = {}
pred = {}
sys.setrecursionlimit(100000)


def arrival(b):
    """Arrival at bit b (at its driver's output), iterative DFS."""
    if b in arr:
        return arr[b]
    stack = [b]
    while stack:
        x = stack[-1]
        if x in arr:
            stack.pop()
            continue
        drv = driver.get(x)
        if drv is None:
            arr[x] = 0.0
            pred[x] = None
            stack.pop()
            continue
        cn, p = drv
        c = cells[cn]
        ar = arcs(c, p)
        if ar is None:
            arr[x] = start_delay(c, p)
            pred[x] = None
            stack.pop()
            continue
        pending = []
        for ip, _ in ar:
            for ib in c["connections"].get(ip, []):
                if not isinstance(ib, str) and ib not in arr:
                    pending.append(ib)
        if pending:
            if len(stack) > 2_000_000:
                raise RuntimeError("too deep")
            stack.extend(pending)
            continue
        best, bp = 0.0, None
        for ip, dl in ar:
            for ib in c["connections"].get(ip, []):
                if isinstance(ib, str):
                    continue
                t = arr[ib] + route(ib, c["type"], ip, cn) + dl
                if t > best:
                    best, bp = t, ib
        arr[x] = best
        pred[x] = bp
        stack.pop()
    return arr[b]


ends = []
for cn, c in cells.items():
    t = c["type"]
    if t in ("TRELLIS_FF", "DP16KD", "PDPW16KD") or (t == "MULT18X18D" and reg_param(c, "REG_INPUTA_CLK") != "NONE"):
        for p, bits in c["connections"].items():
            if c.get("port_directions", {}).get(p) != "input" or p.startswith("CLK"):
                continue
            if clock is not None:
                # the port's clock: CLKA/CLKB by the port's side on a block RAM, else any CLK* port
                side = re.sub(r"\d+$", "", p)[-1] if t in ("DP16KD", "PDPW16KD") else ""
                clks = [b for q, bits in c["connections"].items() if q.startswith("CLK") and q.endswith(side)
                        for b in bits if not isinstance(b, str)]
                if not any(clock in names.get(b, "") for b in clks):
                    continue
            for b in bits:
                if isinstance(b, str):
                    continue
                ends.append((arrival(b) + route(b, sink=cn) + 0.1, b, cn, p))

ends.sort(reverse=True)


def group(n):
    n = re.sub(r"\[\d+\]$", "", n)
    n = re.sub(r"\d+", "#", n)
    return n


def trace(b):
    out = []
    while b is not None:
        drv = driver.get(b)
        where = f"@{loc[drv[0]]} " if drv and drv[0] in loc else ""
        out.append((round(arr[b], 2), cells[drv[0]]["type"] if drv else "?", where + names.get(b, f"bit{b}")))
        b = pred.get(b)
    return out[::-1]


seen = set()
shown = 0
print(f"{len(ends)} endpoints; worst {ends[0][0]:.1f} ns")
hist = defaultdict(int)
for e in ends:
    hist[int(e[0] // 5) * 5] += 1
print("histogram (ns: endpoints):", dict(sorted(hist.items(), reverse=True)))
over = defaultdict(int)
for t, b, cn, p in ends:
    if t > period:
        c = cells[cn]
        over[group(names.get(c["connections"].get("Q", [None])[0], cn) if c["type"] == "TRELLIS_FF" else cn)] += 1
print(f"endpoints over {period} ns by name ({sum(over.values())}):",
      ", ".join(f"{g} {n}" for g, n in sorted(over.items(), key=lambda x: -x[1])[:30]))
for t, b, cn, p in ends:
    c = cells[cn]
    sink = names.get(c["connections"].get("Q", [None])[0], cn) if c["type"] == "TRELLIS_FF" else f"{cn}.{p}"
    g = group(sink)
    if g in seen:
        continue
    seen.add(g)
    tr = trace(b)
    named = [x for x in tr if not x[2].split(" ")[-1].startswith("$")]
    levels = len(tr)
    at = f" @{loc[cn]}" if cn in loc else ""
    print(f"\n{t:6.1f} ns  -> {sink} ({c['type']}.{p}){at}, {levels} cells")
    for x in (named if len(named) <= 14 else named[:5] + [("...", "", "")] + named[-8:]):
        print(f"        {x[0]:>6} {x[1]:10} {x[2][:110]}")
    shown += 1
    if shown >= top_n:
        break
