"""Generate text from a byte-level model, streaming it as it is produced.

Runs the integer golden model (``--golden``, the default), the float
reference (``--float``), or the accelerator through the host driver:
``--port URL`` (a board, ``/dev/ttyUSB0``, or a running harness,
``socket://127.0.0.1:PORT``) or ``--sim`` (starts the Verilator harness);
see :mod:`mmfree.host.generate`. ``--check`` runs the golden machine in
lockstep with the device and stops at the first difference.
"""

from __future__ import annotations

import codecs
import sys

import numpy as np

from mmfree.errors import MmfreeError


def generate_golden(ckpt, prompt: bytes, max_tokens: int, temperature: float = 0.0, top_k: int = 8,
                    seed: int = 0, emb_bits: int = 16, out=None):
    """Feed ``prompt`` then generate ``max_tokens`` bytes with the golden model.

    Loads and checks the model at once; returns an iterator of token ids.
    """
    from mmfree.compiler.fold import fold
    from mmfree.host.sampling import choose

    from .checkpoint import load_checkpoint
    from .golden import GoldenModel

    config, tensors = load_checkpoint(ckpt)
    _check_bytes(config)
    g = GoldenModel(fold(config, tensors, emb_bits=emb_bits), batch=1, k=max(top_k, 1))
    rng = np.random.default_rng(seed)

    def tokens():
        for tok in prompt or b"\n":
            res = g.step([tok])
        for _ in range(max_tokens):
            logits = res.logits()[0][res.topk_ids[0]]
            tok = choose(res.topk_ids[0], logits, temperature, top_k, rng)
            yield tok
            res = g.step([tok])

    return tokens()


def generate_float(ckpt, prompt: bytes, max_tokens: int, temperature: float = 0.0, top_k: int = 8,
                   seed: int = 0):
    """The same with the float reference model."""
    import torch

    from mmfree.host.sampling import choose

    from .checkpoint import load_reference

    model = load_reference(ckpt)
    _check_bytes(model.config)
    rng = np.random.default_rng(seed)

    @torch.no_grad()
    def tokens():
        state = model.init_state(1)
        for tok in prompt or b"\n":
            logits, state = model.step(torch.tensor([tok]), state)
        for _ in range(max_tokens):
            lg = logits[0].double().numpy()
            ids = np.argsort(-lg, kind="stable")[:max(top_k, 1)]
            tok = choose(ids, lg[ids], temperature, top_k, rng)
            yield tok
            logits, state = model.step(torch.tensor([tok]), state)

    return tokens()


def _check_bytes(config):
    if config.vocab_size != 256:
        raise MmfreeError(f"model vocabulary is {config.vocab_size}; text prompts need a byte-level model "
                          "(vocab_size 256); this tool ships no SentencePiece tokenizer")


def stream_text(prompt: str, tokens) -> None:
    """Write ``prompt``, then each byte token as it arrives (incremental UTF-8, errors replaced)."""
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    sys.stdout.write(prompt)
    sys.stdout.flush()
    try:
        for tok in tokens:
            sys.stdout.write(dec.decode(bytes([tok])))
            sys.stdout.flush()
    finally:
        sys.stdout.write(dec.decode(b"", final=True) + "\n")
        sys.stdout.flush()


def cli(parser):
    parser.add_argument("--model", default="ecp5", help="checkpoint directory or shipped model name (ecp5, ice40)")
    parser.add_argument("--prompt", default="def ", help="text to start from")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=8, help="sample among the k best (the device reports its own k)")
    parser.add_argument("--seed", type=int, default=0)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--golden", action="store_true", help="integer golden model (default)")
    which.add_argument("--float", action="store_true", help="float reference model")
    which.add_argument("--port", metavar="URL", help="accelerator at a pyserial URL: /dev/ttyUSB0, socket://HOST:PORT")
    which.add_argument("--sim", action="store_true", help="start the Verilator harness and run on it")
    hw = parser.add_argument_group("hardware (--port, --sim)")
    hw.add_argument("--target", default=None,
                    help="compile --model for this target (default: the one matching the device's INFO; sim for --sim)")
    hw.add_argument("--compiled", metavar="DIR", default=None, help="use this compiled directory instead of compiling")
    hw.add_argument("--check", action="store_true",
                    help="run the golden machine in lockstep and fail at the first differing step")
    hw.add_argument("--stepwise", action="store_true", help="greedy with one STEP per token instead of GENERATE")
    hw.add_argument("--reload", action="store_true", help="load the model even if the device reports it loaded")
    hw.add_argument("--stats", action="store_true", help="print the device's cycle counters afterwards")
    hw.add_argument("--baud", type=int, default=115200, help="UART baud rate (default 115200)")
    hw.add_argument("--timeout", type=float, default=None, help="seconds per reply and per step (default 1 / 2; sim 10 / 60)")

    def run(args):
        if args.max_tokens < 0:
            raise MmfreeError("--max-tokens must be >= 0")
        if args.temperature < 0:
            raise MmfreeError("--temperature must be >= 0")
        if args.top_k < 1:
            raise MmfreeError("--top-k must be >= 1")
        hardware = args.port is not None or args.sim
        if not hardware:
            for flag in ("target", "compiled", "check", "stepwise", "reload", "stats", "timeout"):
                if getattr(args, flag) not in (None, False):
                    raise MmfreeError(f"--{flag} needs --port or --sim")
        if args.timeout is not None and args.timeout <= 0:
            raise MmfreeError("--timeout must be > 0")
        if hardware:
            from mmfree.host.generate import run as run_device

            return run_device(args, lambda tokens: stream_text(args.prompt, tokens))
        prompt = args.prompt.encode()
        if args.float:
            gen = generate_float(args.model, prompt, args.max_tokens, args.temperature, args.top_k, args.seed)
        else:
            gen = generate_golden(args.model, prompt, args.max_tokens, args.temperature, args.top_k, args.seed)
        stream_text(args.prompt, gen)
        return 0

    return run
