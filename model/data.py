"""Training and evaluation data: bytes of the running Python's standard library.

Byte-level tokens (vocabulary 256, no special tokens) over ``Lib/**/*.py`` of
the running interpreter (``sysconfig.get_paths()["stdlib"]``), so nothing is
downloaded and every machine has the data (design brief section 7).

Excluded: every folder named ``test`` or ``tests`` (``test/``,
``unittest/test``, ``lib2to3/tests`` ...), ``idlelib/idle_test`` and
``site-packages`` / ``dist-packages``.

Splits (files sorted by their ``/``-separated path under the stdlib root,
contents joined by :data:`SEPARATOR`):

``heldout``  the packages in :data:`HELDOUT` (``email/``, ``json/``): never
             trained on; ``mmfree train`` and ``mmfree eval`` score on it;
``valid``    every :data:`VALID_EVERY`-th remaining file, a monitoring slice
             of the training distribution, not trained on either;
``train``    everything else.

A prebuilt copy of the three byte arrays (``DIR/{train,valid,heldout}.bin``
and ``manifest.json``, written by :func:`build_arrays` or
``python -m mmfree.model.data build DIR``) is read instead of the stdlib when
a data directory is given or ``MMFREE_DATA`` names one: that is how a machine
with another Python version trains on exactly the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import sys
import sysconfig
from pathlib import Path

import numpy as np

from mmfree.errors import MmfreeError

#: Top-level stdlib packages never trained on.
HELDOUT = ("email", "json")
#: Folder names whose contents are never used (tests and third-party code).
EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})
#: Every VALID_EVERY-th non-held-out file (by sorted position) forms the ``valid`` split.
VALID_EVERY = 64
#: Bytes between two files in a split.
SEPARATOR = b"\n"
SPLITS = ("train", "valid", "heldout")
#: Environment variable naming a prebuilt data directory.
DATA_ENV = "MMFREE_DATA"
MANIFEST = "manifest.json"


def stdlib_root() -> Path:
    """The running interpreter's standard-library folder (``Lib/``)."""
    return Path(sysconfig.get_paths()["stdlib"])


def _all_files(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        # prune excluded folders (and never follow them)
        dirnames[:] = [d for d in dirnames if d not in EXCLUDED_DIRS]
        rel = Path(dirpath).relative_to(root)
        for f in filenames:
            if f.endswith(".py"):
                out.append((rel / f).as_posix())
    return sorted(out)


def is_heldout(rel: str) -> bool:
    """Whether the stdlib-relative path ``rel`` belongs to a held-out package."""
    return rel.split("/", 1)[0] in HELDOUT


def corpus_files(split: str, root: str | Path | None = None) -> list[str]:
    """Sorted stdlib-relative paths (``/``-separated) of the files of ``split``."""
    if split not in SPLITS:
        raise MmfreeError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
    root = Path(root) if root is not None else stdlib_root()
    files = _all_files(root)
    if split == "heldout":
        return [f for f in files if is_heldout(f)]
    rest = [f for f in files if not is_heldout(f)]
    valid = split == "valid"
    return [f for k, f in enumerate(rest) if (k % VALID_EVERY == VALID_EVERY - 1) == valid]


def heldout_files(root: str | Path | None = None) -> list[str]:
    """The held-out file list (shared by ``mmfree train`` and ``mmfree eval``)."""
    return corpus_files("heldout", root)


def print_heldout(file=None, root: str | Path | None = None, data_dir: str | Path | None = None) -> list[str]:
    """Print the held-out file list (one line) and return it.

    With a prebuilt data directory (``data_dir`` or ``$MMFREE_DATA``) that
    has a manifest, the list is the manifest's (the bytes actually used).
    """
    m = manifest(data_dir) if root is None else None
    files = m["splits"]["heldout"]["files"] if m else heldout_files(root)
    src = f"Python {m['python']} stdlib" if m else f"Python {sys.version.split()[0]} stdlib"
    print(f"held-out files ({len(files)}, {src}, never trained on): " + " ".join(files), file=file or sys.stdout)
    return files


def read_split(split: str, root: str | Path | None = None) -> bytes:
    """The bytes of ``split`` read from the stdlib: files in order, joined by :data:`SEPARATOR`."""
    root = Path(root) if root is not None else stdlib_root()
    return SEPARATOR.join((root / f).read_bytes() for f in corpus_files(split, root))


def _data_dir(data_dir) -> Path | None:
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else None


def load_split(split: str, data_dir: str | Path | None = None) -> np.ndarray:
    """The tokens (bytes) of ``split`` as a ``uint8`` array.

    From ``data_dir`` (or ``$MMFREE_DATA``) when given, else from the running
    interpreter's stdlib.
    """
    if split not in SPLITS:
        raise MmfreeError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
    d = _data_dir(data_dir)
    if d is None:
        return np.frombuffer(read_split(split), dtype=np.uint8).copy()
    path = d / f"{split}.bin"
    if not path.exists():
        raise MmfreeError(f"{path}: no such file (build the data directory with "
                          "`python -m mmfree.model.data build DIR`)")
    return np.fromfile(path, dtype=np.uint8)


def sha256(data) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(data)).cast("B")).hexdigest()


def build_arrays(out: str | Path, root: str | Path | None = None) -> dict:
    """Write ``{train,valid,heldout}.bin`` and ``manifest.json`` (file lists, sizes, SHA-256)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(root) if root is not None else stdlib_root()
    manifest = {"python": sys.version.split()[0], "stdlib": str(root), "separator": SEPARATOR.decode(),
                "heldout_packages": list(HELDOUT), "valid_every": VALID_EVERY, "splits": {}}
    for split in SPLITS:
        data = read_split(split, root)
        (out / f"{split}.bin").write_bytes(data)
        manifest["splits"][split] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                     "files": corpus_files(split, root)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def manifest(data_dir: str | Path | None = None) -> dict | None:
    """The manifest of a prebuilt data directory (``None`` when reading the stdlib directly)."""
    d = _data_dir(data_dir)
    if d is None or not (d / MANIFEST).exists():
        return None
    return json.loads((d / MANIFEST).read_text())


def xz_reference_bpb(data_dir: str | Path | None = None, preset: int = 9 | lzma.PRESET_EXTREME) -> dict:
    """Bits per held-out byte of ``xz -9e`` given every non-held-out byte as context.

    ``8 * (|xz(context + heldout)| - |xz(context)|) / |heldout|``, context =
    ``train`` + ``valid`` (all non-held-out files, in sorted order). Same
    format and preset as the ``xz -9e`` command line (64 MiB dictionary).
    """
    ctx = np.concatenate([load_split("train", data_dir), load_split("valid", data_dir)]).tobytes()
    held = load_split("heldout", data_dir).tobytes()
    c_ctx = len(lzma.compress(ctx, format=lzma.FORMAT_XZ, preset=preset))
    c_all = len(lzma.compress(ctx + SEPARATOR + held, format=lzma.FORMAT_XZ, preset=preset))
    alone = len(lzma.compress(held, format=lzma.FORMAT_XZ, preset=preset))
    return {"context_bytes": len(ctx), "heldout_bytes": len(held), "xz_context": c_ctx, "xz_context_heldout": c_all,
            "bpb_with_context": 8.0 * (c_all - c_ctx) / len(held), "bpb_alone": 8.0 * alone / len(held)}


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m mmfree.model.data", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the split byte arrays and manifest to DIR")
    b.add_argument("dir")
    sub.add_parser("heldout", help="print the held-out file list")
    sub.add_parser("stats", help="files and bytes per split")
    x = sub.add_parser("xz", help="the xz -9e reference: held-out bits per byte with the training set as context")
    x.add_argument("--data", help="prebuilt data directory")
    args = p.parse_args(argv)
    if args.cmd == "build":
        m = build_arrays(args.dir)
        for s, v in m["splits"].items():
            print(f"{s:8s} {len(v['files']):5d} files {v['bytes']:10d} bytes  sha256 {v['sha256'][:16]}")
    elif args.cmd == "heldout":
        print_heldout()
    elif args.cmd == "stats":
        for s in SPLITS:
            print(f"{s:8s} {len(corpus_files(s)):5d} files {len(read_split(s)):10d} bytes")
    elif args.cmd == "xz":
        print(json.dumps(xz_reference_bpb(args.data), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
