"""Generate text from a byte-level model, streaming it as it is produced.

Until the hardware path is complete this runs the integer golden model
(``--golden``, the default) or the float reference (``--float``); the system
issue adds ``--port`` / ``--sim`` through the host driver.
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


def cli(parser):
    parser.add_argument("--model", default="ecp5", help="checkpoint directory or shipped model name")
    parser.add_argument("--prompt", default="def ", help="text to start from")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--golden", action="store_true", help="integer golden model (default)")
    which.add_argument("--float", action="store_true", help="float reference model")

    def run(args):
        if args.max_tokens < 0:
            raise MmfreeError("--max-tokens must be >= 0")
        if args.temperature < 0:
            raise MmfreeError("--temperature must be >= 0")
        prompt = args.prompt.encode()
        if args.float:
            gen = generate_float(args.model, prompt, args.max_tokens, args.temperature, args.top_k, args.seed)
        else:
            gen = generate_golden(args.model, prompt, args.max_tokens, args.temperature, args.top_k, args.seed)
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        sys.stdout.write(args.prompt)
        for tok in gen:
            sys.stdout.write(dec.decode(bytes([tok])))
            sys.stdout.flush()
        sys.stdout.write(dec.decode(b"", final=True) + "\n")
        return 0

    return run
