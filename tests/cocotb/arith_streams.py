"""cocotb helpers for the arithmetic blocks: clock/reset, one stream in and one out, per-cycle.

The designs come through :func:`mmfree.sim.runner.run_cocotb`, so their ports
are plain names: ``<prefix>i_valid``, ``<prefix>i_payload_<field>`` (or
``<prefix>i_payload`` for a non-struct payload), ``<prefix>o_ready`` and so on.

Driving and sampling happen in one loop per clock: inputs change just after
the falling edge, then at ``ReadOnly`` the settled handshake decides what the
next rising edge transfers. An offered element stays offered (same payload)
until it is accepted, as the stream contract asks.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly


async def start(dut, period_ns: int = 10) -> None:
    """Start the clock on ``dut.clk`` and hold ``dut.rst`` for two cycles."""
    cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


def put(handle, value: int) -> None:
    """Write an integer (negative ones as two's complement) to a port."""
    handle.value = int(value) & ((1 << len(handle)) - 1)


def get(handle, signed: bool) -> int:
    return handle.value.to_signed() if signed else handle.value.to_unsigned()


def pack(values, bits: int) -> int:
    """Concatenate integers, element 0 in the least significant bits (an ArrayLayout payload)."""
    word, mask = 0, (1 << bits) - 1
    for k, v in enumerate(values):
        word |= (int(v) & mask) << (k * bits)
    return word


def unpack(word: int, bits: int, n: int, signed: bool) -> list[int]:
    out = []
    for k in range(n):
        v = (word >> (k * bits)) & ((1 << bits) - 1)
        if signed and v >> (bits - 1):
            v -= 1 << bits
        out.append(v)
    return out


class Port:
    """One stream side: ``valid``, ``ready`` and the payload fields ``[(name or None, signed)]``."""

    def __init__(self, dut, base: str, fields):
        self.valid = getattr(dut, f"{base}_valid")
        self.ready = getattr(dut, f"{base}_ready")
        self.fields = [(name, signed, getattr(dut, f"{base}_payload" + (f"_{name}" if name else "")))
                       for name, signed in fields]
        self.scalar = len(fields) == 1 and fields[0][0] is None

    def write(self, item) -> None:
        if self.scalar:
            put(self.fields[0][2], item)
        else:
            for name, _, h in self.fields:
                put(h, item[name])

    def read(self):
        if self.scalar:
            return get(self.fields[0][2], self.fields[0][1])
        return {name: get(h, signed) for name, signed, h in self.fields}


async def stream(dut, prefix: str, items, in_fields, out_fields, *, n_out: int | None = None,
                 p_valid: float = 1.0, p_ready: float = 1.0, seed: int = 0, limit: int | None = None,
                 ports: tuple[str, str] = ("i", "o")):
    """Send ``items`` into ``<prefix>i`` and collect ``n_out`` (default ``len(items)``) outputs of ``<prefix>o``.

    ``ports`` renames the two streams (``("req", "resp")`` for the scalar units).

    ``p_valid`` / ``p_ready`` throttle the source and the sink at random
    (fixed ``seed``). Returns ``(outputs, cycles, accept_cycles, out_cycles)``:
    the cycle indices at which each input was accepted and each output taken.
    """
    rng = random.Random(seed)
    i = Port(dut, f"{prefix}{ports[0]}", in_fields)
    o = Port(dut, f"{prefix}{ports[1]}", out_fields)
    n_out = len(items) if n_out is None else n_out
    if limit is None:
        limit = 100 + 4 * (len(items) + n_out) * max(1.0, 1 / min(p_valid, p_ready))
    outs, acc_at, out_at = [], [], []
    k, cycle, offered = 0, 0, False
    try:
        while len(outs) < n_out:
            await FallingEdge(dut.clk)
            if not offered and k < len(items) and rng.random() < p_valid:
                i.write(items[k])
                offered = True
            i.valid.value = int(offered)
            take = rng.random() < p_ready
            o.ready.value = int(take)
            await ReadOnly()
            if offered and i.ready.value:
                acc_at.append(cycle)
                k += 1
                offered = False
            if take and o.valid.value:
                outs.append(o.read())
                out_at.append(cycle)
            cycle += 1
            assert cycle < limit, f"{prefix}: {len(outs)} of {n_out} outputs after {cycle} cycles"
    finally:
        await FallingEdge(dut.clk)
        i.valid.value = 0
        o.ready.value = 0
    assert k == len(items), f"{prefix}: only {k} of {len(items)} inputs accepted"
    return outs, cycle, acc_at, out_at


V32_EDGES = (-(1 << 31), (1 << 31) - 1, 0, 1, -1, 1 << 16, -(1 << 16),
             16 << 16, (16 << 16) - 1, -(16 << 16), -(16 << 16) - 1, (16 << 16) + 1, -(17 << 16), 17 << 16,
             (1 << 20) - 2048, (1 << 20) - 2047, 2047, 2048, 1024, 1023, -1024, -1025)


def v32_values(rng, n: int):
    """``n`` V32 test values (numpy int64): a third uniform over int32, a third in [-20, 20), a third edges."""
    import numpy as np

    wide = rng.integers(-(1 << 31), 1 << 31, n)
    near = rng.integers(-20 << 16, 20 << 16, n)
    edge = rng.choice(np.array(V32_EDGES, dtype=np.int64), n)
    sel = rng.integers(0, 3, n)
    return np.where(sel == 0, wide, np.where(sel == 1, near, edge))
