"""Compare the float reference and the integer golden model on held-out bytes.

``mmfree eval CKPT`` runs both models over the same held-out token streams
(brief section 7: the ``email/`` and ``json/`` packages of the running
Python's standard library, never trained on) and reports, for every
predicted position: top-1 agreement between the two, mean and max absolute
logit difference, and each model's bits per byte.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np

from mmfree.errors import MmfreeError


@dataclasses.dataclass
class EvalReport:
    checkpoint: str
    tokens: int
    streams: int
    top1_agreement: float
    mean_abs_logit_err: float
    max_abs_logit_err: float
    float_bpb: float
    golden_bpb: float
    bpb_ratio: float
    emb_bits: int
    seconds_float: float
    seconds_golden: float
    #: Largest float top-1/top-2 logit margin among the positions where golden and float
    #: pick different tokens (0 if none): disagreements should only be near-ties.
    max_margin_at_disagreement: float = 0.0

    def lines(self) -> list[str]:
        return [
            f"checkpoint        {self.checkpoint}",
            f"held-out tokens   {self.tokens} ({self.streams} streams)",
            f"top-1 agreement   {100 * self.top1_agreement:.3f} %  "
            f"(disagreements at float top-2 margins <= {self.max_margin_at_disagreement:.4f})",
            f"logit |err|       mean {self.mean_abs_logit_err:.5f}  max {self.max_abs_logit_err:.5f}",
            f"bits per byte     float {self.float_bpb:.4f}  golden {self.golden_bpb:.4f}  "
            f"(golden/float {self.bpb_ratio:.4f})",
            f"time              float {self.seconds_float:.1f} s  golden {self.seconds_golden:.1f} s",
        ]


def cross_entropy_bits(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-position cross entropy in bits, from float64 logits [..., V]."""
    logits = logits.astype(np.float64)
    m = logits.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(axis=-1)) + m[..., 0]
    picked = np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return (lse - picked) / math.log(2)


def streams_from(data: np.ndarray, tokens: int, streams: int) -> np.ndarray:
    """``streams`` contiguous, evenly spaced windows of ``tokens // streams + 1`` bytes."""
    length = tokens // streams + 1
    if len(data) < length * streams:
        raise MmfreeError(f"held-out set has {len(data)} bytes, fewer than the {length * streams} asked for")
    starts = np.linspace(0, len(data) - length, streams).astype(np.int64)
    return np.stack([data[s:s + length] for s in starts]).astype(np.int64)


def evaluate(ckpt, tokens: int = 32768, streams: int = 32, emb_bits: int = 16,
             data: np.ndarray | None = None) -> EvalReport:
    """Run float and golden over the same held-out streams (see module doc)."""
    from .checkpoint import load_checkpoint, load_reference

    config, tensors = load_checkpoint(ckpt)   # first: a bad checkpoint fails before torch loads

    import torch

    from mmfree.compiler.fold import fold

    from .golden import GoldenModel

    if data is None:
        if config.vocab_size != 256:
            raise MmfreeError(f"model vocabulary is {config.vocab_size}; held-out evaluation needs a "
                              "byte-level model (vocab_size 256)")
        from .data import load_split

        data = load_split("heldout")
    seqs = streams_from(np.asarray(data), tokens, streams)
    inputs, targets = seqs[:, :-1], seqs[:, 1:]

    t0 = time.perf_counter()
    ref = load_reference(ckpt, dtype=torch.float64)
    with torch.no_grad():
        fl, _ = ref(torch.from_numpy(inputs), sequential=True)
    fl = fl.numpy()
    t1 = time.perf_counter()
    golden = GoldenModel(fold(config, tensors, emb_bits=emb_bits), batch=streams)
    gl = golden.run(inputs)
    t2 = time.perf_counter()

    err = np.abs(gl - fl)
    disagree = gl.argmax(-1) != fl.argmax(-1)
    top2 = np.sort(fl, axis=-1)[..., -2:]
    margin = top2[..., 1] - top2[..., 0]
    fb, gb = cross_entropy_bits(fl, targets).mean(), cross_entropy_bits(gl, targets).mean()
    return EvalReport(
        checkpoint=str(ckpt), tokens=int(targets.size), streams=streams,
        top1_agreement=float(1 - disagree.mean()),
        mean_abs_logit_err=float(err.mean()), max_abs_logit_err=float(err.max()),
        float_bpb=float(fb), golden_bpb=float(gb), bpb_ratio=float(gb / fb), emb_bits=emb_bits,
        seconds_float=t1 - t0, seconds_golden=t2 - t1,
        max_margin_at_disagreement=float(margin[disagree].max()) if disagree.any() else 0.0)


def cli(parser):
    parser.add_argument("checkpoint", help="checkpoint directory or shipped model name (ecp5, ice40)")
    parser.add_argument("--tokens", type=int, default=32768, help="held-out positions to score (default 32768)")
    parser.add_argument("--streams", type=int, default=32, help="parallel streams, each from zero state")
    parser.add_argument("--emb-bits", type=int, default=16, choices=(8, 16), help="golden embedding code width")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")

    def run(args):
        if args.tokens < args.streams or args.streams < 1:
            raise MmfreeError("--tokens must be >= --streams >= 1")
        from .data import heldout_files

        files = heldout_files()
        print(f"held-out files ({len(files)}): " + " ".join(files[:6]) + (" ..." if len(files) > 6 else ""))
        rep = evaluate(args.checkpoint, args.tokens, args.streams, args.emb_bits)
        print("\n".join(rep.lines()))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(dataclasses.asdict(rep), f, indent=2)
        return 0

    return run
