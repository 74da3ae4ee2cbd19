"""mmfree train --act-noise: dithered activation codes while training, the official math everywhere else."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmfree.config import ModelConfig
from mmfree.errors import MmfreeError
from mmfree.model import train as tr
from mmfree.model.checkpoint import load_checkpoint
from mmfree.model.reference import (BitLinear, HGRNBitForCausalLM, activation_quant_codes,
                                    dithered_activation_quant_codes)

TINY = ["--preset", "tiny", "--hidden-size", "16", "--layers", "2", "--intermediate-size", "32",
        "--batch-size", "4", "--seq-len", "32", "--device", "cpu", "--no-progress", "--log-every", "1",
        "--eval-every", "0", "--valid-windows", "4", "--save-every", "0", "--no-heldout", "--steps", "4"]
CONFIG = ModelConfig(vocab_size=256, hidden_size=16, num_hidden_layers=2, intermediate_size=32)


def run(out, data, *extra):
    return tr.train(tr.parse_args([*TINY, "--data", str(data), "--out", str(out), *extra]))


def test_dithered_codes_same_scale_at_most_one_step_off():
    torch.manual_seed(0)
    x = torch.randn(8, 64)
    plain, s = activation_quant_codes(x)
    noisy, s2 = dithered_activation_quant_codes(x, 0.5)
    assert torch.equal(s, s2)
    d = (noisy - plain).abs()
    assert float(d.max()) == 1.0 and 0 < int((d > 0).sum()) < x.numel()
    assert float(noisy.min()) >= -128 and float(noisy.max()) <= 127
    assert not torch.equal(noisy, dithered_activation_quant_codes(x, 0.5)[0])  # fresh per call


def test_bitlinear_noise_in_training_mode_only_and_gradient_unchanged():
    torch.manual_seed(1)
    lin = BitLinear(32, 24)
    x = torch.randn(5, 7, 32)
    ref = lin(x)
    lin.act_noise = 0.5
    assert not torch.allclose(lin(x), ref)          # training mode: other codes
    lin.eval()
    assert torch.equal(lin(x), ref)                 # eval mode: the official math, bit for bit
    lin.train()
    lin.quantized = False
    lin.act_noise = 0.5
    plain = BitLinear(32, 24, quantized=False)
    plain.load_state_dict(lin.state_dict())
    assert torch.equal(lin(x), plain(x))            # no fake quantization, no noise (float warm start)
    # straight-through: the gradient w.r.t. the input does not depend on the codes
    lin.quantized = True
    g = torch.randn(5, 7, 24)
    grads = []
    for a in (0.0, 0.5):
        lin.act_noise = a
        xi = x.clone().requires_grad_(True)
        (lin(xi) * g).sum().backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_model_eval_forward_ignores_act_noise():
    torch.manual_seed(2)
    m = HGRNBitForCausalLM(CONFIG)
    ids = torch.randint(0, 256, (2, 20))
    m.eval()
    ref, _ = m(ids)
    for mod in m.modules():
        if isinstance(mod, BitLinear):
            mod.act_noise = 0.5
    assert torch.equal(m(ids)[0], ref)
    m.train()
    assert not torch.allclose(m(ids)[0], ref)


def test_act_noise_zero_is_todays_training(tmp_path, tiny_data):
    base = run(tmp_path / "base", tiny_data)
    zero = run(tmp_path / "zero", tiny_data, "--act-noise", "0")
    noisy = run(tmp_path / "noisy", tiny_data, "--act-noise", "0.5")
    assert base["run"]["act_noise"] == zero["run"]["act_noise"] == 0.0 and noisy["run"]["act_noise"] == 0.5
    saved = json.loads((tmp_path / "noisy" / tr.SUMMARY).read_text())
    assert saved["run"]["act_noise"] == 0.5
    _, a = load_checkpoint(tmp_path / "base")
    _, b = load_checkpoint(tmp_path / "zero")
    _, c = load_checkpoint(tmp_path / "noisy")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)       # A = 0: bit-identical to no option
    assert any(not np.array_equal(a[k], c[k]) for k in a)          # A > 0: training saw other codes
    assert base["valid_bpb"] == zero["valid_bpb"]
    # the float twin has no fake quantization, so no noise either; out-of-range amplitudes are refused
    assert run(tmp_path / "f", tiny_data, "--float", "--act-noise", "0.5")["run"]["act_noise"] == 0.0
    with pytest.raises(MmfreeError, match="act-noise"):
        run(tmp_path / "bad", tiny_data, "--act-noise", "-0.1")
