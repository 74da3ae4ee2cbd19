"""mmfree train: a tiny CPU run writes an official checkpoint; resume continues from the saved step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import mmfree
from mmfree.config import ModelConfig
from mmfree.errors import MmfreeError
from mmfree.model import train as tr
from mmfree.model.checkpoint import load_checkpoint, load_reference

TINY = ["--preset", "tiny", "--hidden-size", "16", "--layers", "2", "--intermediate-size", "32",
        "--batch-size", "4", "--seq-len", "32", "--device", "cpu", "--no-progress", "--log-every", "1",
        "--eval-every", "3", "--valid-windows", "4", "--save-every", "0"]


def run(out, data, *extra):
    return tr.train(tr.parse_args([*TINY, "--data", str(data), "--out", str(out), *extra]))


def test_tiny_run_writes_official_checkpoint(tmp_path, tiny_data, capsys):
    summary = run(tmp_path / "ck", tiny_data, "--steps", "4")
    config, tensors = load_checkpoint(tmp_path / "ck")
    assert config == ModelConfig(vocab_size=256, hidden_size=16, num_hidden_layers=2, intermediate_size=32)
    assert set(tensors) == set(config.tensor_shapes())
    assert not (tmp_path / "ck" / tr.STATE).exists()
    saved = json.loads((tmp_path / "ck" / tr.SUMMARY).read_text())
    assert saved["tokens"] == 4 * 4 * 32 and saved["run"]["quantized"] is True
    assert 0 < summary["heldout_bpb"] < 9 and 0 < summary["heldout_windows_bpb"] < 9
    model = load_reference(tmp_path / "ck")
    assert tr.heldout_bpb(model, "cpu", np.fromfile(tiny_data / "heldout.bin", dtype=np.uint8),
                          streams=3, chunk=100) == pytest.approx(summary["heldout_bpb"], rel=1e-4)
    assert "held-out files" in capsys.readouterr().out


def test_resume_continues_from_saved_step(tmp_path, tiny_data, capsys):
    run(tmp_path / "full", tiny_data, "--steps", "6", "--no-heldout")
    res = run(tmp_path / "part", tiny_data, "--steps", "6", "--no-heldout", "--stop-after", "4")
    assert res == {"stopped_at": 4}
    assert (tmp_path / "part" / tr.STATE).exists() and not (tmp_path / "part" / "config.json").exists()
    assert torch.load(tmp_path / "part" / tr.STATE, weights_only=False)["step"] == 4
    with pytest.raises(MmfreeError, match="--resume"):
        run(tmp_path / "part", tiny_data, "--steps", "6", "--no-heldout")
    capsys.readouterr()
    run(tmp_path / "part", tiny_data, "--steps", "6", "--no-heldout", "--resume")
    assert "at step 4" in capsys.readouterr().out
    steps = [json.loads(l)["step"] for l in (tmp_path / "part" / tr.LOG).read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    _, a = load_checkpoint(tmp_path / "full")
    _, b = load_checkpoint(tmp_path / "part")
    for k in a:  # same seed, same batches: the resumed run ends where the uninterrupted one does
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_float_twin_and_heldout_bpb(tmp_path, tiny_data):
    run(tmp_path / "f", tiny_data, "--steps", "2", "--float", "--no-heldout")
    m = load_reference(tmp_path / "f", quantized=False)
    assert not m.quantized
    # untrained-ish model: close to 8 bits per byte; and the two scorers agree on a uniform model
    torch.nn.init.zeros_(m.lm_head.weight)
    held = np.fromfile(tiny_data / "heldout.bin", dtype=np.uint8)
    assert tr.heldout_bpb(m, "cpu", held, streams=2, chunk=64) == pytest.approx(8.0, abs=1e-4)
    assert tr.windows_bpb(m, "cpu", held, tokens=256, streams=4) == pytest.approx(8.0, abs=1e-4)


def test_float_warm_start_then_quantization_aware(tmp_path, tiny_data, capsys):
    """``--float-steps``: float steps first, then the same run goes quantization-aware; a ternary model is saved."""
    summary = run(tmp_path / "w", tiny_data, "--steps", "4", "--float-steps", "2", "--no-heldout")
    assert summary["run"]["float_steps"] == 2 and summary["run"]["quantized"] is True
    assert "float warm start over" in capsys.readouterr().out
    config, tensors = load_checkpoint(tmp_path / "w")
    for k in config.ternary_keys():  # saved as a ternary model: canonical export, three values per matrix
        assert len(np.unique(tensors[k])) <= 3, k
    with pytest.raises(MmfreeError, match="float-steps"):
        run(tmp_path / "bad", tiny_data, "--steps", "4", "--float-steps", "4", "--no-heldout")
    assert run(tmp_path / "f", tiny_data, "--steps", "2", "--float", "--float-steps", "1",
               "--no-heldout")["run"]["float_steps"] == 0


def test_lr_schedule_and_batches():
    assert tr.lr_at(0, 100, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert tr.lr_at(9, 100, 1.0, 10, 0.1) == pytest.approx(1.0)
    assert tr.lr_at(100, 100, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert 0.1 < tr.lr_at(55, 100, 1.0, 10, 0.1) < 1.0
    a = tr.batch_offsets(0, 7, 8, 10_000, 32)
    assert np.array_equal(a, tr.batch_offsets(0, 7, 8, 10_000, 32))
    assert not np.array_equal(a, tr.batch_offsets(0, 8, 8, 10_000, 32))
    assert a.min() >= 0 and a.max() < 10_000 - 33


def test_presets_fit_their_boards():
    ecp5 = tr.model_config(tr.PRESETS["ecp5"])
    ice40 = tr.model_config(tr.PRESETS["ice40"])
    assert 1_400_000 <= ecp5.n_trits <= 3 * 2048 * 256  # ulx3s-85f weight memory
    assert ice40.n_trits <= 600_000
    assert ecp5.vocab_size == ice40.vocab_size == 256 and ecp5.use_lower_bound and ice40.use_lower_bound
    assert ecp5.n_trits == 1_554_432 and ecp5.num_hidden_layers == 4
    for name, cfg in (("ecp5", ecp5), ("ice40", ice40)):  # the presets rebuild the shipped shapes
        shipped = json.loads((Path(mmfree.__file__).parent / "models" / name / "config.json").read_text())
        assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size) == (
            shipped["hidden_size"], shipped["num_hidden_layers"], shipped["intermediate_size"]), name


def test_canonical_ternary_keeps_codes_and_scale():
    from mmfree.model.reference import weight_quant_codes

    config = ModelConfig(vocab_size=256, hidden_size=16, num_hidden_layers=1, intermediate_size=32)
    torch.manual_seed(0)
    state = {k: torch.randn(*s) * 0.02 for k, s in config.tensor_shapes().items()}
    k = "model.layers.0.attn.i_proj.weight"
    w = state[k]
    t0, s0 = weight_quant_codes(w)
    # put a weight exactly on a rounding boundary, where float32 and float64 may disagree
    w[0, 0] = 0.5 / s0
    t, s = weight_quant_codes(w)
    out = tr.canonical_ternary(config, state)
    assert torch.equal(out["model.embeddings.weight"], state["model.embeddings.weight"])
    for dt in (torch.float32, torch.float64):
        tc, sc = weight_quant_codes(out[k].to(dt))
        assert torch.equal(tc.float(), t.float())
        assert float(sc) == pytest.approx(float(s), rel=1e-5)
    r = out[k].double() * weight_quant_codes(out[k].double())[1]
    assert float((r.abs() - 0.5).abs().min()) >= 0.49  # every weight far from a boundary
