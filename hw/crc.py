"""CRC-16 of a byte sequence, one byte per cycle (the link's frame check).

The default polynomial and initial value are the link protocol's
(:mod:`mmfree.protocol`: CRC-16/CCITT-FALSE, polynomial 0x1021, init 0xFFFF,
MSB first, no reflection, no final XOR). One byte step is linear over GF(2),
so each new register bit is the parity of a fixed set of register and data
bits: 16 XOR trees, no table, no memory.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from mmfree.protocol import CRC_INIT, CRC_POLY

__all__ = ["CRC16", "crc16_next", "crc16_masks"]


def _step(crc: int, byte: int, poly: int) -> int:
    for bit in reversed(range(8)):
        fb = ((crc >> 15) ^ (byte >> bit)) & 1
        crc = ((crc << 1) & 0xFFFF) ^ (poly if fb else 0)
    return crc


def crc16_masks(poly: int = CRC_POLY) -> list[int]:
    """For each CRC bit j after one byte: the mask of ``Cat(crc, byte)`` bits XORed into it.

    One byte step is linear over GF(2) in the 24 bits of (register, byte), so
    every new bit is the parity of a fixed subset of them.
    """
    cols = [_step(1 << k, 0, poly) for k in range(16)] + [_step(0, 1 << k, poly) for k in range(8)]
    return [sum(1 << k for k, col in enumerate(cols) if col >> j & 1) for j in range(16)]


def crc16_next(crc, byte, poly: int = CRC_POLY) -> Value:
    """The CRC register after shifting in ``byte`` MSB first (combinational, 16 bits).

    Each bit is one XOR of a fixed set of input bits (:func:`crc16_masks`),
    at most 24 inputs deep, so the network stays small in any netlist.
    """
    bits = Cat(Value.cast(crc)[:16], Value.cast(byte)[:8])
    return Cat(*((bits & Const(mask, 24)).xor() for mask in crc16_masks(poly)))


def _check16(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} must be an integer in [0, 0xFFFF], got {value!r}")
    return value


class CRC16(wiring.Component):
    """CRC-16 register, MSB-first, one byte per cycle.

    Parameters
    ----------
    poly : int
        Generator polynomial without the x^16 term (default 0x1021).
    init : int
        Register value after reset and after ``clear`` (default 0xFFFF).

    Attributes
    ----------
    data : Signal(8), in
        The byte to add.
    en : Signal(1), in
        Add ``data`` this cycle.
    clear : Signal(1), in
        Restart from ``init`` this cycle. With ``en`` in the same cycle the
        result is ``init`` followed by ``data`` (a new sequence starting here).
    crc : Signal(16), out
        The CRC of the bytes added since the last ``clear`` (or reset).

    Latency one cycle (``crc`` is a register); throughput one byte per cycle;
    no handshake.
    """

    def __init__(self, *, poly: int = CRC_POLY, init: int = CRC_INIT):
        self.poly = _check16("poly", poly)
        if not poly & 1:
            raise ValueError(f"poly must have its x^0 term (an odd value), got 0x{poly:04X}")
        self.init = _check16("init", init)
        super().__init__({"data": In(8), "en": In(1), "clear": In(1), "crc": Out(16, init=self.init)})

    def elaborate(self, platform):
        m = Module()
        base = Signal(16)
        m.d.comb += base.eq(Mux(self.clear, Const(self.init, 16), self.crc))
        with m.If(self.en):
            m.d.sync += self.crc.eq(crc16_next(base, self.data, self.poly))
        with m.Elif(self.clear):
            m.d.sync += self.crc.eq(self.init)
        return m
