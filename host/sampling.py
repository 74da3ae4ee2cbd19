"""Choosing the next token from the top-k the accelerator (or golden model) reports.

The device returns the k best token ids with their integer accumulators and
one positive scale, never the whole logit vector; sampling happens here, on
the host, so greedy decoding and sampled decoding use the same reply.
"""

from __future__ import annotations

import numpy as np


def choose(ids, logits, temperature: float = 0.0, top_k: int | None = None,
           rng: np.random.Generator | None = None) -> int:
    """Next token from top-k candidates.

    Parameters
    ----------
    ids, logits : sequence
        Candidate token ids, best first, and their float logits.
    temperature : float
        0 picks ``ids[0]`` (greedy, the device's own choice); > 0 samples
        from ``softmax(logits / temperature)`` over the first ``top_k``.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    ids = np.asarray(ids)
    if ids.size == 0:
        raise ValueError("no candidates")
    if temperature == 0:
        return int(ids[0])
    if rng is None:
        raise ValueError("sampling (temperature > 0) needs an rng")
    k = len(ids) if top_k is None else max(1, min(top_k, len(ids)))
    z = np.asarray(logits[:k], dtype=np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    return int(ids[rng.choice(k, p=p)])
