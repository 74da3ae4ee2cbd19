"""The ``mmfree`` command line: one subcommand per user step.

Each subcommand lives in the module that owns its concept and registers
itself here through :data:`COMMANDS` (module path, function name). Imports are
lazy so ``mmfree --help`` stays fast and the contract modules stay at the
bottom of the import graph.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import MmfreeError

#: subcommand -> (module, setup function). The setup function adds arguments
#: to its subparser and returns the callable that runs the command.
COMMANDS = {
    "bench": ("mmfree.host.bench", "cli"),
    "bitstream": ("mmfree.hw.bitstream", "cli"),
    "compile": ("mmfree.compiler.compile", "cli"),
    "eval": ("mmfree.model.evaluate", "cli"),
    "generate": ("mmfree.model.generate", "cli"),
    "info": ("mmfree.host.info", "cli"),
    "train": ("mmfree.model.train", "cli"),
    "sim": ("mmfree.sim.harness", "cli"),
}


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="mmfree", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runners = {}
    for name, (module, func) in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                continue  # not built yet
            raise
        p = sub.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0])
        runners[name] = getattr(mod, func)(p)
    return parser, runners


def main(argv: list[str] | None = None) -> int:
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = runners[args.command](args)
    except MmfreeError as e:
        print(f"mmfree {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mmfree {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
