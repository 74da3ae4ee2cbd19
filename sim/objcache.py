"""A compile cache for Verilator's run-time library (a tiny, specialized ccache).

Every Verilator build compiles the same run-time files (``verilated.cpp``,
``verilated_vpi.cpp``, ...): about 23 s of CPU per build on a laptop core,
while a small block's own C++ takes 2 s. Verilator's makefile runs each
compile as ``$(OBJCACHE) $(CXX) ...``; :mod:`mmfree.sim.runner` sets
``OBJCACHE`` to this script, which

* compiles files *outside* ``MMFREE_OBJCACHE_SOURCES`` (the design's own C++)
  as usual, and
* for files inside it (the run-time library of the installed Verilator),
  looks the object up by a hash of the compiler, the full command line (with
  the output name normalized) and the source text, copies it (and its ``.d``
  dependency file) into place on a hit, or compiles and stores it on a miss.

The cache lives in ``MMFREE_OBJCACHE_DIR`` (default
``$XDG_CACHE_HOME/mmfree/objcache``, i.e. ``~/.cache/mmfree/objcache``);
delete that folder to empty it. Stores are atomic (write then rename), so
parallel builds share it safely. Standard library only: it runs once per
compiled file and must start fast.

Usage (what make runs): ``python objcache.py c++ FLAGS... -c -o OUT.o SRC.cpp``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCES_ENV = "MMFREE_OBJCACHE_SOURCES"
DIR_ENV = "MMFREE_OBJCACHE_DIR"


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmfree" / "objcache"


def _cacheable(argv: list[str]) -> tuple[Path, Path] | None:
    """(output, source) when this is a single-source ``-c`` compile of a cacheable file."""
    roots = [Path(p).resolve() for p in os.environ.get(SOURCES_ENV, "").split(os.pathsep) if p]
    if not roots or "-c" not in argv or "-o" not in argv:
        return None
    i = argv.index("-o")
    if i + 1 >= len(argv):
        return None
    out = Path(argv[i + 1])
    sources = [a for a in argv[1:] if a.endswith((".cpp", ".cc", ".c")) and not a.startswith("-")]
    if len(sources) != 1:
        return None
    src = Path(sources[0]).resolve()
    if not any(src.is_relative_to(r) for r in roots):
        return None
    return out, src


def _key(argv: list[str], out: Path, src: Path) -> str:
    h = hashlib.sha256()
    compiler = shutil.which(argv[0]) or argv[0]
    try:
        st = os.stat(compiler)
        h.update(f"{os.path.realpath(compiler)}:{st.st_size}:{st.st_mtime_ns}".encode())
    except OSError:
        h.update(compiler.encode())
    for a in argv:
        h.update(b"\0" + (out.name if a == str(out) else a).encode())
    h.update(b"\0" + src.read_bytes())
    return h.hexdigest()


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: objcache.py COMPILER ARGS...", file=sys.stderr)
        return 2
    target = _cacheable(argv)
    if target is None:
        return subprocess.call(argv)
    out, src = target
    cache = Path(os.environ.get(DIR_ENV) or default_dir())
    entry = cache / _key(argv, out, src)
    dep = out.with_suffix(".d")
    if (entry / "obj").is_file():
        shutil.copyfile(entry / "obj", out)
        if (entry / "dep").is_file():
            shutil.copyfile(entry / "dep", dep)
        return 0
    rc = subprocess.call(argv)
    if rc == 0 and out.is_file():
        try:
            cache.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".tmp-"))
            shutil.copyfile(out, tmp / "obj")
            if dep.is_file():
                shutil.copyfile(dep, tmp / "dep")
            try:
                os.rename(tmp, entry)
            except OSError:            # another build stored it first
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass                       # a cache that cannot be written is just not used
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
