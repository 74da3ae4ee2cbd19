"""The accelerator core's port contract, shared by the core and whatever drives it.

:class:`mmfree.hw.core.Core` implements it; the command decoder
(:mod:`mmfree.hw.command`) drives it. Kept apart from the core so that a
driver can be built and tested without elaborating the whole datapath.

Ports (direction as seen by the core)
-------------------------------------
load : ``In(stream.Signature(load_layout(data_bits)))``
    One memory word per beat: ``mem`` (:class:`mmfree.protocol.MemoryId`:
    0 wmem, 1 cmem, 2 vmem, 3 pmem), ``addr`` (word address) and ``data``
    (the word, low bits used). Accepted only while the core is idle
    (``ready`` low while ``busy``). Addresses at or beyond a memory's depth
    are the driver's to reject (the core ignores them).
cmd : ``In(stream.Signature(CMD_LAYOUT))``
    ``reset = 1``: zero the vector memory (all recurrent state);
    ``reset = 0``: run one step of the program with ``token``. Accepted only
    while idle. The driver checks ``token < vocab`` first.
result : ``Out(stream.Signature(result_layout()))``
    After each step, exactly ``topk`` beats, best first, ``last`` on the
    final one: ``id``, ``acc`` (the LM head's raw accumulator), ``present``
    (0 when the vocabulary has fewer rows than ``topk``), and the step's head
    scale ``m``/``e`` (the same on every beat). Nothing after a reset.
busy : ``Out(1)``
    High from the accepted ``cmd`` until the last result beat has been taken
    (or the reset has finished).
error : ``Out(1)``
    Sticky since the last accepted ``cmd``: the step met an invalid
    instruction or an invalid weight code; its results are not meaningful.
counters : ``Out(data.ArrayLayout(unsigned(COUNTER_BITS), len(COUNTER_NAMES)))``
    Free-running clock-cycle counters in the order of
    :data:`mmfree.protocol.COUNTER_NAMES`: ``cycles`` (since reset),
    ``tokens`` (steps completed), then cycles spent per instruction class
    (``embed``, ``stats``, ``quant``, ``matrix``, ``drain``, ``head``).
"""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree.numerics import ACC_BITS
from mmfree.protocol import COUNTER_NAMES

__all__ = ["CMD_LAYOUT", "COUNTER_BITS", "CoreSignature", "load_layout", "result_layout"]

COUNTER_BITS = 48
ADDR_BITS = 24

CMD_LAYOUT = data.StructLayout({"reset": 1, "token": 16})


def load_layout(data_bits: int) -> data.StructLayout:
    """One word written into memory ``mem`` at ``addr``."""
    return data.StructLayout({"mem": 2, "addr": ADDR_BITS, "data": unsigned(data_bits)})


def result_layout() -> data.StructLayout:
    """One top-k candidate with the step's head scale ``(m, e)``."""
    return data.StructLayout({"id": 16, "acc": signed(ACC_BITS), "present": 1, "last": 1,
                              "m": unsigned(16), "e": signed(18)})


class CoreSignature(wiring.Signature):
    """The core's ports (see the module docstring); ``data_bits`` is the widest memory word."""

    def __init__(self, data_bits: int):
        if not isinstance(data_bits, int) or data_bits < 1:
            raise ValueError(f"data_bits must be a positive integer, got {data_bits!r}")
        self.data_bits = data_bits
        super().__init__({
            "load": In(stream.Signature(load_layout(data_bits))),
            "cmd": In(stream.Signature(CMD_LAYOUT)),
            "result": Out(stream.Signature(result_layout())),
            "busy": Out(1),
            "error": Out(1),
            "counters": Out(data.ArrayLayout(unsigned(COUNTER_BITS), len(COUNTER_NAMES))),
        })
