"""The ``mmfree`` command line: help, generate (golden and float), eval, one-line errors."""

from __future__ import annotations

import codecs
import json
import subprocess

import pytest

from mmfree.model.generate import generate_float, generate_golden

from conftest import mmfree_cmd, tiny_config

PROMPT = "def f"


def _decode(tokens) -> str:
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return "".join(dec.decode(bytes([t])) for t in tokens) + dec.decode(b"", final=True)


@pytest.fixture(scope="module")
def runs(tiny_ckpt, tmp_path_factory):
    """Every command of this module, started together (the machine has two cores)."""
    from mmfree.model.checkpoint import random_checkpoint

    tmp = tmp_path_factory.mktemp("cli")
    words = random_checkpoint(tmp / "words", tiny_config(vocab_size=300, hidden_size=16, num_hidden_layers=1,
                                                         intermediate_size=32))
    gen = mmfree_cmd() + ["generate", "--model", str(tiny_ckpt), "--prompt", PROMPT, "--max-tokens", "10"]
    cmds = {
        "help": mmfree_cmd() + ["--help"],
        "golden": gen + ["--golden"],
        "default": gen,
        "float": gen + ["--float"],
        "sampled": gen + ["--temperature", "0.8", "--seed", "3"],
        "neg_tokens": gen + ["--max-tokens", "-1"],
        "neg_temp": gen + ["--temperature", "-1"],
        "no_model": mmfree_cmd() + ["generate", "--model", str(tmp / "missing"), "--max-tokens", "3"],
        "not_bytes": mmfree_cmd() + ["generate", "--model", str(words), "--max-tokens", "3"],
        "both": gen + ["--golden", "--float"],
        "eval": mmfree_cmd() + ["eval", str(tiny_ckpt), "--tokens", "64", "--streams", "2",
                                "--json", str(tmp / "rep.json")],
        "eval_streams": mmfree_cmd() + ["eval", str(tiny_ckpt), "--tokens", "2", "--streams", "4"],
    }
    procs = {k: subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for k, c in cmds.items()}
    out = {}
    for k, p in procs.items():
        so, se = p.communicate(timeout=300)
        out[k] = (p.returncode, so, se.decode(errors="replace"))
    out["json"] = tmp / "rep.json"
    return out


def _one_line_error(res, *words):
    rc, _, stderr = res
    assert rc != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_help(runs):
    rc, out, _ = runs["help"]
    assert rc == 0
    text = out.decode()
    assert "usage: mmfree" in text
    for cmd in ("eval", "generate"):
        assert cmd in text


def test_generate_golden(runs, tiny_ckpt):
    rc, out, err = runs["golden"]
    assert rc == 0, err
    want = PROMPT + _decode(generate_golden(tiny_ckpt, PROMPT.encode(), 10)) + "\n"
    assert out.decode() == want
    assert len(want) > len(PROMPT) + 1
    # --golden is the default
    assert runs["default"][1] == out


def test_generate_float(runs, tiny_ckpt):
    rc, out, err = runs["float"]
    assert rc == 0, err
    toks = list(generate_float(tiny_ckpt, PROMPT.encode(), 10))
    assert len(toks) == 10 and all(0 <= t < 256 for t in toks)
    assert out.decode() == PROMPT + _decode(toks) + "\n"


def test_generate_sampled(runs):
    rc, out, err = runs["sampled"]
    assert rc == 0, err
    assert out.decode().startswith(PROMPT)


def test_generate_errors(runs):
    _one_line_error(runs["neg_tokens"], "--max-tokens")
    _one_line_error(runs["neg_temp"], "--temperature")
    _one_line_error(runs["no_model"], "missing")
    _one_line_error(runs["not_bytes"], "vocab")
    rc, _, err = runs["both"]          # argparse: mutually exclusive flags
    assert rc == 2 and "not allowed" in err


def test_eval_runs(runs):
    rc, out, err = runs["eval"]
    assert rc == 0, err
    text = out.decode()
    assert "top-1 agreement" in text and "bits per byte" in text
    rep = json.loads(runs["json"].read_text())
    assert rep["tokens"] == 64 and rep["streams"] == 2
    assert 0 <= rep["top1_agreement"] <= 1 and rep["float_bpb"] > 0
    _one_line_error(runs["eval_streams"], "--streams")
