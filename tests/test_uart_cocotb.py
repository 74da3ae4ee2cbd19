# amaranth: UnusedElaboratable=no
"""UART transmitter and receiver (mmfree/hw/uart.py): bit-level cocotb tests and constructor checks.

The cocotb side is tests/cocotb/test_uart.py. One Verilator build holds a
transmitter and a receiver for each divisor in ``DIVISORS`` plus a
transmitter-to-receiver loopback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree.hw.uart import MIN_DIVISOR, UARTRx, UARTTx, uart_divisor
from mmfree.sim.runner import run_cocotb

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "cocotb"
BAUD = 1_000_000
DIVISORS = (4, 7, 16)        #: the minimum, an odd one, a common one
LOOP_DIVISOR = 5


class UARTLoopback(wiring.Component):
    """A transmitter whose line drives a receiver (``line`` shows it)."""

    def __init__(self, **kw):
        self.tx = UARTTx(**kw)
        self.rx = UARTRx(**kw)
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(8)), "line": Out(1),
                          "frame_error": Out(1), "overrun": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx, m.submodules.rx = self.tx, self.rx
        wiring.connect(m, wiring.flipped(self.i), self.tx.i)
        wiring.connect(m, self.rx.o, wiring.flipped(self.o))
        m.d.comb += [self.rx.rx.eq(self.tx.tx), self.line.eq(self.tx.tx),
                     self.frame_error.eq(self.rx.frame_error), self.overrun.eq(self.rx.overrun)]
        return m


def test_uart_cocotb():
    design = {}
    for d in DIVISORS:
        design[f"tx{d}"] = UARTTx(clk_freq=d * BAUD, baud=BAUD)
        design[f"rx{d}"] = UARTRx(clk_freq=d * BAUD, baud=BAUD)
        assert design[f"tx{d}"].divisor == design[f"rx{d}"].divisor == d
    design["loop"] = UARTLoopback(clk_freq=LOOP_DIVISOR * BAUD, baud=BAUD)
    run_cocotb(design, test_module="test_uart", build_dir=BUILD / "uart", module_dirs=[REPO / "tests" / "cocotb"],
               params={"divisors": list(DIVISORS), "loop_divisor": LOOP_DIVISOR})


@pytest.mark.parametrize("clk_freq, baud, divisor", [
    (12_000_000, 115_200, 104),      # iCEBreaker: 0.16 % off
    (25_000_000, 115_200, 217),      # ULX3S oscillator
    (100_000_000, 3_000_000, 33),    # 1.0 % off
    (48_000_000, 12_000_000, 4),     # the minimum divisor
    (16e6, 1e6, 16),                 # floats are fine
])
def test_uart_divisor(clk_freq, baud, divisor):
    assert uart_divisor(clk_freq, baud) == divisor
    assert UARTTx(clk_freq=clk_freq, baud=baud).divisor == UARTRx(clk_freq=clk_freq, baud=baud).divisor == divisor


@pytest.mark.parametrize("cls", [UARTTx, UARTRx])
@pytest.mark.parametrize("kw, msg", [
    ({"clk_freq": 12_000_000, "baud": 4_000_000},
     r"4000000 baud needs at least 4 clock cycles per bit, but a 12000000 Hz clock gives 3\.00"),
    ({"clk_freq": 12_000_000, "baud": 2_000_000 * 1.12},
     r"2240000\.0+2? baud from a 12000000 Hz clock: divisor 5 gives 2400000\.0 baud, 7\.14% off \(limit 2%\)"),
    ({"clk_freq": 10_000_000, "baud": 1_750_000},
     r"1750000 baud from a 10000000 Hz clock: divisor 6 gives 1666666\.7 baud, 4\.76% off \(limit 2%\)"),
    ({"clk_freq": 0, "baud": 9600}, r"clk_freq must be a positive number, got 0"),
    ({"clk_freq": "12e6", "baud": 9600}, r"clk_freq must be a positive number, got '12e6'"),
    ({"clk_freq": 12e6, "baud": -9600}, r"baud must be a positive number, got -9600"),
    ({"clk_freq": 12e6, "baud": float("nan")}, r"baud must be a positive number, got nan"),
    ({"clk_freq": True, "baud": 1}, r"clk_freq must be a positive number, got True"),
])
def test_uart_rejects(cls, kw, msg):
    with pytest.raises(ValueError, match=msg):
        cls(**kw)


def test_uart_requires_keywords():
    with pytest.raises(TypeError):
        UARTTx(12_000_000, 115_200)


def test_uart_ports():
    tx, rx = UARTTx(clk_freq=12e6, baud=115200), UARTRx(clk_freq=12e6, baud=115200)
    assert len(tx.i.payload) == 8 and len(tx.tx) == 1 and tx.tx.init == 1
    assert len(rx.o.payload) == 8 and rx.rx.init == 1 and MIN_DIVISOR == 4
