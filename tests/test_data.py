"""The byte-level standard-library corpus: deterministic splits, held-out packages never trained on."""

from __future__ import annotations

import numpy as np
import pytest

from mmfree.model import data


@pytest.fixture(scope="module")
def files():
    return {s: data.corpus_files(s) for s in data.SPLITS}


def test_split_is_deterministic(files):
    again = {s: data.corpus_files(s) for s in data.SPLITS}
    assert again == files
    for s, fs in files.items():
        assert fs == sorted(fs), s
        assert fs, f"split {s} is empty"


def test_heldout_never_in_train(files):
    held = set(files["heldout"])
    assert held and all(f.split("/")[0] in data.HELDOUT for f in held)
    assert {f.split("/")[0] for f in held} == set(data.HELDOUT)
    for s in ("train", "valid"):
        assert not held & set(files[s])
        assert not any(f.split("/")[0] in data.HELDOUT for f in files[s])
    assert not set(files["train"]) & set(files["valid"])
    assert data.heldout_files() == files["heldout"]


def test_test_folders_excluded(files):
    everything = [f for fs in files.values() for f in fs]
    assert all(f.endswith(".py") for f in everything)
    for f in everything:
        parts = f.split("/")[:-1]
        assert not set(parts) & {"test", "tests", "idle_test", "site-packages"}, f
    assert "json/__init__.py" in files["heldout"]
    assert any(f.startswith("email/mime/") for f in files["heldout"])
    assert "argparse.py" in files["train"] + files["valid"]


def test_load_split_is_the_joined_files(files):
    root = data.stdlib_root()
    held = data.load_split("heldout")
    assert held.dtype == np.uint8
    want = data.SEPARATOR.join((root / f).read_bytes() for f in files["heldout"])
    assert held.tobytes() == want


def test_prebuilt_directory_round_trip(tmp_path, monkeypatch, capsys):
    m = data.build_arrays(tmp_path)
    assert m["splits"]["heldout"]["files"] == data.heldout_files()
    for s in data.SPLITS:
        assert np.array_equal(data.load_split(s, tmp_path), data.load_split(s))
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    assert np.array_equal(data.load_split("valid"), data.load_split("valid", tmp_path))
    listed = data.print_heldout()
    assert listed == data.heldout_files()
    assert "email/message.py" in capsys.readouterr().out


def test_unknown_split():
    from mmfree.errors import MmfreeError

    with pytest.raises(MmfreeError, match="unknown split"):
        data.load_split("dev")
