"""Show what an accelerator reports over its link: INFO (and cycle counters).

``mmfree info --port URL`` prints the protocol and hardware versions, the
tile shape, the memories and the loaded model's hash; ``--counters`` adds
READ_COUNTERS, ``--json`` prints one JSON object instead.
"""

from __future__ import annotations

import json

from mmfree import protocol as P

from .driver import DEFAULT_BAUDRATE, Device


def describe(info: P.Info, url: str = "") -> list[str]:
    """Readable lines for an INFO reply."""
    clock = f"{info.clock_hz / 1e6:.3f} MHz" if info.clock_hz else "not reported"
    lines = [f"device       {url}" if url else None,
             f"protocol     {info.protocol_version} (hardware version 0x{info.hw_version:04X})",
             f"tile         {info.rows} x {info.cols} = {info.lanes} TAC lanes, {info.vec_lanes} vector lanes",
             f"top-k        {info.topk}",
             f"clock        {clock}",
             f"max payload  {info.max_payload} bytes",
             f"model        {'set, hash ' + info.model_hash.hex() if info.model_set else 'none'}"]
    for j, m in enumerate(info.memories):
        name = P.MemoryId(m.mem).name.lower() if m.mem in P.MemoryId._value2member_map_ else f"memory {m.mem}"
        kib = m.depth * -(-m.width // 8) / 1024
        lines.append(f"{'memories' if j == 0 else '':<12} {name:<5} {m.width:>4}-bit x {m.depth:>8} words "
                     f"({kib:.1f} KiB)")
    return [line for line in lines if line is not None]


def as_json(info: P.Info, counters: P.Counters | None = None) -> dict:
    d = {"protocol_version": info.protocol_version, "hw_version": info.hw_version, "flags": info.flags,
         "model_set": info.model_set, "model_hash": info.model_hash.hex(), "max_payload": info.max_payload,
         "rows": info.rows, "cols": info.cols, "lanes": info.lanes, "vec_lanes": info.vec_lanes,
         "topk": info.topk, "clock_hz": info.clock_hz,
         "memories": [{"mem": m.mem, "width": m.width, "depth": m.depth} for m in info.memories]}
    if counters is not None:
        d["counters"] = counters.as_dict()
    return d


def cli(parser):
    parser.add_argument("--port", metavar="URL", required=True,
                        help="pyserial URL: /dev/ttyUSB0 (board), socket://127.0.0.1:PORT (harness)")
    parser.add_argument("--baud", type=int, default=DEFAULT_BAUDRATE, help=f"UART baud rate (default {DEFAULT_BAUDRATE}, the boards' rate)")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for each reply (default 1)")
    parser.add_argument("--counters", action="store_true", help="also read the cycle counters")
    parser.add_argument("--json", action="store_true", help="print one JSON object")

    def run(args):
        from mmfree.errors import MmfreeError

        if args.timeout <= 0:
            raise MmfreeError("--timeout must be > 0")
        with Device(args.port, baudrate=args.baud, timeout=args.timeout) as dev:
            info = dev.info()
            counters = dev.counters() if args.counters else None
        if args.json:
            print(json.dumps(as_json(info, counters), indent=1))
            return 0
        print("\n".join(describe(info, args.port)))
        if counters is not None:
            for j, (k, v) in enumerate(counters.as_dict().items()):
                print(f"{'counters' if j == 0 else '':<12} {k:<8} {v}")
        return 0

    return run
