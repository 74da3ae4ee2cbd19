"""Quantization-aware training of a byte-level hgrn_bit model (mmfree train).

Trains the float reference model (:mod:`mmfree.model.reference`, the same
module every other rung of the ladder is checked against; straight-through
estimators as in the official code) on the byte-level standard-library corpus
of :mod:`mmfree.model.data`, and writes the official checkpoint format
(``config.json`` + ``model.safetensors``), so one loader serves official and
own models. ``--float`` trains the unquantized twin of the same shape.

* fixed seed: the initial weights come from ``--seed`` and batch ``k`` is a
  pure function of ``(seed, k)``, so a resumed run sees the same batches as
  an uninterrupted one;
* resumable: ``OUT/train_state.pt`` (weights, optimizer, step) is written
  every ``--save-every`` steps and on ``--stop-after``; ``--resume`` picks it
  up and continues from the saved step;
* several GPUs or hosts: launch under ``torchrun``; ranks are read from
  ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``, the model is wrapped in
  PyTorch DDP and every rank takes its slice of each global batch.

Presets (``--preset ecp5`` / ``ice40``) hold the shipped models' shapes and
training settings; ``docs/models.md`` gives the command that rebuilt them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from mmfree.config import ModelConfig
from mmfree.errors import MmfreeError

STATE = "train_state.pt"
SUMMARY = "training.json"
LOG = "train_log.jsonl"


@dataclasses.dataclass(frozen=True)
class Preset:
    """A model shape and the training settings it ships with."""

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    steps: int
    batch_size: int = 64
    seq_len: int = 1024
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    #: float warm start: the first ``float_steps`` steps train without fake quantization
    float_steps: int = 0
    description: str = ""


#: The shipped models (docs/models.md explains the sizes).
PRESETS = {
    "ecp5": Preset(hidden_size=176, num_hidden_layers=4, intermediate_size=480, steps=12000, min_lr_ratio=0.0,
                   float_steps=3000,
                   description="ULX3S-85F: fits the ulx3s-85f target's weight and constant memories"),
    "ice40": Preset(hidden_size=128, num_hidden_layers=3, intermediate_size=192, steps=20000, lr=5e-3,
                    min_lr_ratio=0.0,
                    description="iCEBreaker: weights + int8 embedding fit the UP5K's 128 KB SPRAM"),
    "tiny": Preset(hidden_size=32, num_hidden_layers=2, intermediate_size=64, steps=200, batch_size=16,
                   seq_len=128, description="smoke tests"),
}


def model_config(preset: Preset, **override) -> ModelConfig:
    kw = dict(vocab_size=256, hidden_size=preset.hidden_size, num_hidden_layers=preset.num_hidden_layers,
              intermediate_size=preset.intermediate_size, rms_norm_eps=1e-6, use_lower_bound=True)
    kw.update({k: v for k, v in override.items() if v is not None})
    return ModelConfig(**kw)


# --------------------------------------------------------------------------- evaluation


def _core(model):
    """The reference model inside DDP / torch.compile / loss wrappers."""
    import torch.nn as nn

    while True:
        for attr in ("_orig_mod", "module", "lm"):
            inner = getattr(model, attr, None)
            if isinstance(inner, nn.Module):
                model = inner
                break
        else:
            return model


def heldout_bpb(model, device=None, data: np.ndarray | None = None, streams: int = 16, chunk: int = 2048,
                max_tokens: int | None = None) -> float:
    """Bits per byte of ``model`` on the held-out split (or ``data``), whole text, state carried.

    The bytes are cut into ``streams`` contiguous pieces scored in parallel;
    each piece runs through :meth:`forward` (parallel scan) ``chunk`` bytes
    at a time, carrying the recurrent state from chunk to chunk, so every
    byte but the first of each piece is predicted with its whole preceding
    piece as context. float32, no autocast.
    """
    import torch
    import torch.nn.functional as F

    model = _core(model)
    if data is None:
        from .data import load_split

        data = load_split("heldout")
    data = np.asarray(data, dtype=np.uint8)
    if max_tokens is not None:
        data = data[:max_tokens + 1]
    per = (len(data) - 1) // streams
    if per < 1:
        raise MmfreeError(f"{len(data)} bytes are too few for {streams} streams")
    device = device or next(model.parameters()).device
    seqs = torch.from_numpy(data[:streams * per + 1].astype(np.int64))
    # stream s covers bytes [s*per, (s+1)*per]: inputs s*per..(s+1)*per-1, targets shifted by one
    idx = torch.arange(streams)[:, None] * per + torch.arange(per + 1)[None, :]
    seqs = seqs[idx].to(device)
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    try:
        with torch.no_grad(), torch.autocast(device_type=torch.device(device).type, enabled=False):
            for a in range(0, per, chunk):
                b = min(a + chunk, per)
                logits, state = model(seqs[:, a:b], state)
                loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                       seqs[:, a + 1:b + 1].reshape(-1), reduction="sum")
                total += float(loss)
                count += (b - a) * streams
    finally:
        model.train(was_training)
    return total / count / math.log(2)


def windows_bpb(model, device=None, data: np.ndarray | None = None, tokens: int = 32768,
                streams: int = 32) -> float:
    """Bits per byte under ``mmfree eval``'s protocol: ``streams`` evenly spaced windows from zero state."""
    import torch
    import torch.nn.functional as F

    model = _core(model)
    if data is None:
        from .data import load_split

        data = load_split("heldout")
    length = tokens // streams + 1
    starts = np.linspace(0, len(data) - length, streams).astype(np.int64)
    seqs = np.stack([np.asarray(data[s:s + length]) for s in starts]).astype(np.int64)
    device = device or next(model.parameters()).device
    x = torch.from_numpy(seqs).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(device_type=torch.device(device).type, enabled=False):
            logits, _ = model(x[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
    finally:
        model.train(was_training)
    return float(loss) / math.log(2)


# --------------------------------------------------------------------------- export


def canonical_ternary(config: ModelConfig, state: dict) -> dict:
    """Latent weights that every consumer ternarizes alike: ``W' = T * mean|W| / p``.

    ``T = clamp(round(W / mean|W|), -1, 1)`` is computed exactly as training
    computed it (same dtype and device as ``state``); ``p`` is the fraction
    of non-zero trits. Then ``mean|W'| = mean|W|`` (the same scale ``s_w``)
    and ``W' * s_w = T / p``, which rounds to ``T`` with a margin of at least
    0.5. Annealing the learning rate to zero leaves many latent weights
    exactly on a rounding boundary (the straight-through gradient pushes
    them back and forth across it), where float32 and float64 disagree on
    the trit; this export removes that ambiguity without changing the
    ternary model. Non-ternary tensors are returned unchanged.
    """
    import torch

    from .reference import weight_quant_codes

    out = dict(state)
    for k in config.ternary_keys():
        w = state[k].detach()
        t, _ = weight_quant_codes(w)
        p = (t != 0).to(w.dtype).mean().clamp(min=1.0 / t.numel())
        out[k] = (t * (w.abs().mean() / p)).to(w.dtype)
        if bool(torch.any(weight_quant_codes(out[k])[0] != t)):  # pragma: no cover - guarded invariant
            raise MmfreeError(f"{k}: canonical export changed the ternary codes")
    return out


# --------------------------------------------------------------------------- training


def _dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, world, local


def batch_offsets(seed: int, step: int, batch: int, n: int, seq_len: int) -> np.ndarray:
    """Start offsets of global batch ``step``: a pure function of ``(seed, step)``."""
    rng = np.random.default_rng([seed, step])
    return rng.integers(0, n - seq_len - 1, size=batch)


def lr_at(step: int, steps: int, lr: float, warmup: int, min_ratio: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``min_ratio * lr`` at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def _atomic_save(obj, path: Path):
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _resolve_args(args) -> tuple[ModelConfig, dict]:
    preset = PRESETS[args.preset]
    config = model_config(preset, hidden_size=args.hidden_size, num_hidden_layers=args.layers,
                          intermediate_size=args.intermediate_size)
    hp = dict(steps=args.steps or preset.steps, batch_size=args.batch_size or preset.batch_size,
              seq_len=args.seq_len or preset.seq_len, lr=args.lr or preset.lr,
              min_lr_ratio=preset.min_lr_ratio if args.min_lr_ratio is None else args.min_lr_ratio,
              float_steps=0 if args.float else (preset.float_steps if args.float_steps is None
                                                else args.float_steps),
              act_noise=0.0 if args.float else float(args.act_noise))
    if not 0 <= hp["float_steps"] < max(1, hp["steps"]):
        raise MmfreeError(f"--float-steps {hp['float_steps']} must be in 0..{hp['steps'] - 1} (fewer than --steps)")
    if not 0.0 <= hp["act_noise"] <= 1.0:
        raise MmfreeError(f"--act-noise {hp['act_noise']} must be in 0..1 (amplitude of the dither, in codes)")
    hp["warmup"] = args.warmup if args.warmup is not None else max(1, min(500, hp["steps"] // 20))
    return config, hp


def train(args) -> dict:
    """Run ``mmfree train`` with parsed ``args``; return the summary (also ``OUT/training.json``)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from .checkpoint import save_checkpoint
    from .data import load_split, manifest, print_heldout
    from .reference import HGRNBitForCausalLM

    rank, world, local = _dist_env()
    distributed = world > 1
    if args.device == "auto":
        dev_type = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        dev_type = args.device
    if dev_type == "cuda" and not torch.cuda.is_available():
        raise MmfreeError("--device cuda asked for, but torch sees no CUDA device")
    device = torch.device(f"cuda:{local}" if dev_type == "cuda" else "cpu")
    if dev_type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev_type == "cuda" else "gloo")
    main_rank = rank == 0
    say = (lambda *a, **k: print(*a, **k, flush=True)) if main_rank else (lambda *a, **k: None)

    config, hp = _resolve_args(args)
    steps, batch, seq, lr, warmup = hp["steps"], hp["batch_size"], hp["seq_len"], hp["lr"], hp["warmup"]
    min_lr_ratio, float_steps = hp["min_lr_ratio"], hp["float_steps"]
    if batch % world:
        raise MmfreeError(f"--batch-size {batch} is not a multiple of the {world} ranks")
    out = Path(args.out)
    state_path = out / STATE
    if state_path.exists() and not args.resume:
        raise MmfreeError(f"{state_path} exists: pass --resume to continue that run, or choose another --out")

    # ---- data
    train_np = load_split("train", args.data)
    valid_np = load_split("valid", args.data)
    heldout_np = load_split("heldout", args.data)
    if main_rank:
        print_heldout(data_dir=args.data)
    m = manifest(args.data)
    data_info = {"source": args.data or os.environ.get("MMFREE_DATA") or "stdlib of the running interpreter",
                 "train_bytes": int(len(train_np)), "valid_bytes": int(len(valid_np)),
                 "heldout_bytes": int(len(heldout_np))}
    if m:
        data_info["python"] = m["python"]
        data_info["sha256"] = {s: v["sha256"] for s, v in m["splits"].items()}
    if len(train_np) < seq + 2:
        raise MmfreeError(f"training split has {len(train_np)} bytes, fewer than --seq-len {seq} + 2")
    train_t = torch.from_numpy(train_np).to(device)
    ar = torch.arange(seq + 1, device=device)
    vrng = np.random.default_rng([args.seed, 1 << 30])
    v_off = torch.from_numpy(vrng.integers(0, max(1, len(valid_np) - seq - 1), size=args.valid_windows)).to(device)
    valid_t = torch.from_numpy(valid_np).to(device)

    # ---- model
    torch.manual_seed(args.seed)
    lm = HGRNBitForCausalLM(config, quantized=not args.float).to(device)

    class LossModule(nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, x):
            logits, _ = self.lm(x[:, :-1])
            return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))

    decay, no_decay = [], []
    for name, p in lm.named_parameters():
        (decay if p.ndim == 2 and name != "model.embeddings.weight" and name != "model.lower_bounds"
         else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), eps=1e-8)

    start, elapsed_before, tokens_before = 0, 0.0, 0
    run_info = {"preset": args.preset, "quantized": not args.float, "seed": args.seed, **hp,
                "weight_decay": args.weight_decay, "amp": args.amp,
                "grad_clip": args.grad_clip, "world_size": world}
    if args.resume and state_path.exists():
        st = torch.load(state_path, map_location=device, weights_only=False)
        if st["config"] != config.to_json() or st["run"]["quantized"] != (not args.float):
            raise MmfreeError(f"{state_path}: saved run has another model (config or --float differs)")
        for k in ("steps", "batch_size", "seq_len", "seed", "float_steps", "act_noise"):
            if st["run"].get(k, 0) != run_info[k]:
                raise MmfreeError(f"{state_path}: saved run has {k}={st['run'].get(k, 0)}, this one {run_info[k]}")
        lm.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        start, elapsed_before, tokens_before = st["step"], st["elapsed"], st["tokens"]
        say(f"resuming {state_path} at step {start}")

    loss_mod = LossModule(lm)
    base_mod = loss_mod
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        base_mod = DDP(loss_mod, device_ids=[local] if dev_type == "cuda" else None)
    step_mod = torch.compile(base_mod) if args.compile else base_mod
    from .reference import BitLinear

    for mod in lm.modules():  # dithered activation codes in training mode only (--act-noise; 0: off)
        if isinstance(mod, BitLinear):
            mod.act_noise = hp["act_noise"]

    def set_quantized(on: bool):
        """Fake quantization on or off in every BitLinear (float warm start, ``--float-steps``)."""
        nonlocal step_mod
        lm.quantized = on
        for mod in lm.modules():
            if isinstance(mod, BitLinear):
                mod.quantized = on
        if args.compile:  # a fresh compiled graph for the other branch
            step_mod = torch.compile(base_mod)
    amp = args.amp == "bf16" and dev_type == "cuda"

    say(f"model: d {config.hidden_size}, {config.num_hidden_layers} layers, I {config.intermediate_size}, "
        f"V {config.vocab_size}, {config.n_trits:,} trits, {config.n_params:,} parameters, "
        f"{'ternary (QAT)' if not args.float else 'float twin'}")
    say(f"training: {steps} steps x {batch} x {seq} bytes = {steps * batch * seq:,} tokens, lr {lr}, "
        f"{world} rank(s), device {dev_type}")

    def valid_loss():
        lm.eval()
        with torch.no_grad(), torch.autocast(device_type=dev_type, dtype=torch.bfloat16, enabled=amp):
            tot = 0.0
            for k in range(0, len(v_off), batch):
                x = valid_t[v_off[k:k + batch, None] + ar[None, :]].long()
                tot += float(loss_mod(x)) * len(x)
        lm.train()
        return tot / len(v_off) / math.log(2)

    out.mkdir(parents=True, exist_ok=True)
    log_path = out / LOG

    def log(rec):
        if main_rank:
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")

    def save_state(step, elapsed, tokens):
        if main_rank:
            _atomic_save({"step": step, "elapsed": elapsed, "tokens": tokens, "model": lm.state_dict(),
                          "opt": opt.state_dict(), "config": config.to_json(), "run": run_info}, state_path)

    stop = steps if args.stop_after is None else min(steps, start + args.stop_after)
    bar = None
    if main_rank and args.progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=start, unit="step", dynamic_ncols=True, mininterval=2.0,
                   file=sys.stderr)
    lm.train()
    t0 = time.perf_counter()
    tokens = tokens_before
    per_rank = batch // world
    loss_ema = None
    stopped_early = None
    quantized_now = not args.float
    if quantized_now and start < float_steps:
        set_quantized(False)
        quantized_now = False
    for step in range(start, stop):
        if not args.float and not quantized_now and step >= float_steps:
            say(f"step {step}: float warm start over, quantization-aware from here")
            set_quantized(True)
            quantized_now = True
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup, min_lr_ratio)
        off = batch_offsets(args.seed, step, batch, len(train_np), seq)[rank * per_rank:(rank + 1) * per_rank]
        x = train_t[torch.from_numpy(off).to(device)[:, None] + ar[None, :]].long()
        with torch.autocast(device_type=dev_type, dtype=torch.bfloat16, enabled=amp):
            loss = step_mod(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(lm.parameters(), args.grad_clip)
        opt.step()
        tokens += batch * seq
        done = step + 1
        if done % args.log_every == 0 or done == stop:
            lv = float(loss.detach()) / math.log(2)
            loss_ema = lv if loss_ema is None else 0.9 * loss_ema + 0.1 * lv
            el = elapsed_before + time.perf_counter() - t0
            rec = {"step": done, "train_bpb": lv, "lr": opt.param_groups[0]["lr"], "tokens": tokens,
                   "elapsed": round(el, 2), "tok_per_s": round((tokens - tokens_before) / (time.perf_counter() - t0))}
            if args.eval_every and (done % args.eval_every == 0 or done == steps):
                rec["valid_bpb"] = valid_loss()
            log(rec)
            if bar is not None:
                bar.set_postfix(bpb=f"{loss_ema:.3f}", **({"valid": f"{rec['valid_bpb']:.3f}"} if "valid_bpb" in rec
                                                          else {}), tok_s=f"{rec['tok_per_s']:,}")
            elif main_rank:
                print(json.dumps(rec), flush=True)
        if bar is not None:
            bar.update(1)
        if args.time_limit and done % args.log_every == 0 and done < stop:
            over = elapsed_before + time.perf_counter() - t0 > args.time_limit
            if distributed:  # every rank must stop at the same step
                import torch.distributed as dist

                flag = torch.tensor([int(over)], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                over = bool(flag.item())
            if over:
                say(f"--time-limit {args.time_limit} s reached at step {done} of {steps}")
                stopped_early = done
                break
        if args.save_every and done % args.save_every == 0 and done < stop:
            save_state(done, elapsed_before + time.perf_counter() - t0, tokens)
    if bar is not None:
        bar.close()
    elapsed = elapsed_before + time.perf_counter() - t0
    if distributed:
        import torch.distributed as dist

        dist.barrier()

    finished = stop >= steps
    summary = None
    if main_rank:
        if stopped_early is not None:
            save_state(stopped_early, elapsed, tokens)
        if not finished and stopped_early is None:
            save_state(stop, elapsed, tokens)
            say(f"stopped at step {stop} of {steps}; continue with --resume")
        else:
            if not args.float:
                with torch.no_grad():
                    lm.load_state_dict(canonical_ternary(config, lm.state_dict()))
            save_checkpoint(out, config, lm.state_dict())
            summary = {"model": {"hidden_size": config.hidden_size, "num_hidden_layers": config.num_hidden_layers,
                                 "intermediate_size": config.intermediate_size, "vocab_size": config.vocab_size,
                                 "n_trits": config.n_trits, "n_params": config.n_params},
                       "run": run_info, "data": data_info, "tokens": tokens, "train_seconds": round(elapsed, 1),
                       "device": torch.cuda.get_device_name(device) if dev_type == "cuda" else "cpu",
                       "torch": torch.__version__, "valid_bpb": valid_loss()}
            if not args.no_heldout:
                summary["heldout_bpb"] = heldout_bpb(lm, device, heldout_np)
                summary["heldout_windows_bpb"] = windows_bpb(lm, device, heldout_np)
            if stopped_early is not None:
                summary["stopped_early_at_step"] = stopped_early
            (out / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
            if state_path.exists() and not args.keep_state and stopped_early is None:
                state_path.unlink()
            say(f"wrote {out} ({config.n_trits:,} trits): valid {summary['valid_bpb']:.4f} bpb"
                + (f", held-out {summary['heldout_bpb']:.4f} bpb (windows {summary['heldout_windows_bpb']:.4f})"
                   if "heldout_bpb" in summary else "")
                + f", {tokens:,} tokens in {elapsed:.0f} s")
    if distributed:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return summary if summary is not None else {"stopped_at": stop}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    a = parser.add_argument
    a("--preset", choices=sorted(PRESETS), default="ecp5", help="model shape and training settings (default ecp5)")
    a("--out", required=True, help="output checkpoint directory (config.json + model.safetensors)")
    a("--float", action="store_true", help="train the float (unquantized) twin of the same shape")
    a("--hidden-size", type=int, help="override the preset's d")
    a("--layers", type=int, help="override the preset's number of layers")
    a("--intermediate-size", type=int, help="override the preset's MLP width I")
    a("--steps", type=int, help="optimizer steps (default: the preset's)")
    a("--batch-size", type=int, help="global batch in sequences (default: the preset's)")
    a("--seq-len", type=int, help="bytes per training sequence (default: the preset's)")
    a("--lr", type=float, help="peak learning rate (default: the preset's)")
    a("--warmup", type=int, help="linear warmup steps (default: 5%% of steps, at most 500)")
    a("--min-lr-ratio", type=float, help="final lr as a fraction of the peak, cosine decay (default: the preset's)")
    a("--float-steps", type=int, help="float warm start: train the first N steps without fake quantization, "
                                       "then quantization-aware to the end; the model saved is ternary "
                                       "(default: the preset's; ignored with --float)")
    a("--act-noise", type=float, default=0.0,
      help="quantization-aware steps only: round each BitLinear's int8 activation codes from x*s_a + u, "
           "u ~ Uniform(-A, A) fresh per element and step (dithered rounding; straight-through gradient "
           "unchanged); never at evaluation or export (default 0: off)")
    a("--weight-decay", type=float, default=0.05, help="AdamW weight decay of the matrices")
    a("--grad-clip", type=float, default=1.0, help="gradient-norm clip (0: off)")
    a("--seed", type=int, default=0, help="seed of the initial weights and of the batch order")
    a("--device", choices=("auto", "cpu", "cuda"), default="auto")
    a("--amp", choices=("bf16", "none"), default="bf16", help="autocast on CUDA (default bf16)")
    a("--compile", action="store_true", help="torch.compile the training step")
    a("--data", help="prebuilt data directory (python -m mmfree.model.data build DIR); "
                     "default: $MMFREE_DATA or the running interpreter's stdlib")
    a("--resume", action="store_true", help="continue from OUT/train_state.pt if it exists")
    a("--stop-after", type=int, help="stop after this many steps in this invocation (state saved)")
    a("--time-limit", type=float, help="stop after this many seconds of training (checked every --log-every "
                                         "steps) and write the checkpoint anyway (marked stopped_early_at_step; state kept for --resume)")
    a("--save-every", type=int, default=500, help="write OUT/train_state.pt every N steps (0: never)")
    a("--keep-state", action="store_true", help="keep OUT/train_state.pt after the run finishes")
    a("--log-every", type=int, default=50, help="log every N steps")
    a("--eval-every", type=int, default=500, help="validation loss every N steps (0: never)")
    a("--valid-windows", type=int, default=64, help="validation windows of --seq-len bytes")
    a("--no-heldout", action="store_true", help="skip the held-out bits per byte at the end")
    a("--no-progress", dest="progress", action="store_false", help="no progress bar (log lines instead)")
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    return add_arguments(argparse.ArgumentParser(prog="mmfree train")).parse_args(argv)


def cli(parser):
    add_arguments(parser)

    def run(args):
        train(args)
        return 0

    return run
