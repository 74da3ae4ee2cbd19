"""UART transmitter and receiver: 8 data bits, no parity, 1 stop bit (8N1), LSB first.

Both take the system clock frequency and the baud rate and derive the bit
period ``divisor = round(clk_freq / baud)`` clock cycles (:func:`uart_divisor`),
refusing a rate the clock cannot make within 2 % or a divisor below
:data:`MIN_DIVISOR`. A byte is 10 bit periods on the line: start (0), data
bits 0..7, stop (1); the idle line is 1.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTTx", "UARTRx", "uart_divisor", "MIN_DIVISOR", "MAX_BAUD_ERROR"]

#: Smallest bit period in clock cycles. The receiver samples mid-bit with an
#: uncertainty of one cycle, i.e. 1/divisor of a bit: at 4 it still samples
#: every bit inside its middle half.
MIN_DIVISOR = 4
#: Largest relative error of ``clk_freq / divisor`` against the requested baud rate.
MAX_BAUD_ERROR = 0.02


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value \
            or value == float("inf"):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def uart_divisor(clk_freq, baud) -> int:
    """Clock cycles per bit for ``baud`` from a ``clk_freq`` Hz clock.

    Raises
    ------
    ValueError
        If either is not a positive number, if the divisor is below
        :data:`MIN_DIVISOR`, or if ``clk_freq / divisor`` is 2 % or more
        away from ``baud``.
    """
    clk_freq = _positive("clk_freq", clk_freq)
    baud = _positive("baud", baud)
    divisor = int(clk_freq / baud + 0.5)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"{baud} baud needs at least {MIN_DIVISOR} clock cycles per bit, "
                         f"but a {clk_freq} Hz clock gives {clk_freq / baud:.2f}")
    actual = clk_freq / divisor
    error = abs(actual - baud) / baud
    if error >= MAX_BAUD_ERROR:
        raise ValueError(f"{baud} baud from a {clk_freq} Hz clock: divisor {divisor} gives {actual:.1f} baud, "
                         f"{error:.2%} off (limit {MAX_BAUD_ERROR:.0%})")
    return divisor


class UARTTx(wiring.Component):
    """8N1 UART transmitter with a byte stream input.

    Parameters
    ----------
    clk_freq : int or float
        Clock frequency in Hz.
    baud : int or float
        Baud rate; ``divisor = uart_divisor(clk_freq, baud)`` cycles per bit.

    Attributes
    ----------
    i : stream of 8 bits, in
        Bytes to send. ``i.ready`` is high while idle and in the last cycle of
        a stop bit, so a waiting byte follows the previous one with no idle
        gap: throughput one byte per ``10 * divisor`` cycles.
    tx : Signal(1), out
        The line, driven straight from a flip-flop (idle 1). The start bit of
        a byte accepted in cycle ``t`` begins in cycle ``t + 1``; every bit
        lasts exactly ``divisor`` cycles.
    busy : Signal(1), out
        A byte is on the line (start to end of stop bit).
    divisor : int
        Clock cycles per bit.
    """

    def __init__(self, *, clk_freq, baud):
        self.divisor = uart_divisor(clk_freq, baud)
        self.clk_freq, self.baud = clk_freq, baud
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        shreg = Signal(10, init=0x3FF)        # shreg[0] is the line; idle shifts in ones
        timer = Signal(range(d), init=d - 1)
        left = Signal(range(10))             # bits after the current one
        last = Signal()

        m.d.comb += [
            self.tx.eq(shreg[0]),
            last.eq(self.busy & (timer == 0) & (left == 0)),
            self.i.ready.eq(~self.busy | last),
        ]
        with m.If(self.busy):
            with m.If(timer == 0):
                m.d.sync += [timer.eq(d - 1), shreg.eq(Cat(shreg[1:], Const(1, 1))), left.eq(left - 1)]
                with m.If(left == 0):
                    m.d.sync += self.busy.eq(0)
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shreg.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))),
                         timer.eq(d - 1), left.eq(9), self.busy.eq(1)]
        return m


class UARTRx(wiring.Component):
    """8N1 UART receiver with a byte stream output.

    Parameters
    ----------
    clk_freq : int or float
        Clock frequency in Hz.
    baud : int or float
        Baud rate; ``divisor = uart_divisor(clk_freq, baud)`` cycles per bit.

    Attributes
    ----------
    rx : Signal(1), in
        The line (asynchronous; a 2-flip-flop synchronizer is inside).
    o : stream of 8 bits, out
        Received bytes, ``o.valid`` held until ``o.ready``. The byte appears
        two cycles (synchronizer) plus half a bit after the middle of its
        stop bit. No backpressure reaches the line: a byte that completes
        while the previous one is still waiting is dropped and ``overrun``
        pulses, so the consumer must take each byte within one byte time
        (``10 * divisor`` cycles), or put a FIFO in between.
    frame_error : Signal(1), out
        One-cycle pulse: the stop bit read 0. The byte is dropped, and the
        receiver waits for the line to go idle (1) before it looks for the
        next start bit, so a held-low line (break) reports once.
    overrun : Signal(1), out
        One-cycle pulse: a received byte was dropped because ``o`` was full.
    divisor : int
        Clock cycles per bit.

    A start bit is a 0 seen after idle and still 0 at its middle
    (``divisor // 2`` cycles later; a shorter pulse is ignored). Each data
    bit and the stop bit are sampled once, at their middles. The receiver
    hunts for the next start bit right after sampling the stop bit, so
    back-to-back bytes with no idle time are received. The sampling point
    may drift by about half a bit minus one clock cycle over the 10 bits:
    the tests pass senders off by +-3 % at divisor 16, +-2 % at 7 and
    +-1.5 % at 4.
    """

    def __init__(self, *, clk_freq, baud):
        self.divisor = uart_divisor(clk_freq, baud)
        self.clk_freq, self.baud = clk_freq, baud
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)),
                          "frame_error": Out(1), "overrun": Out(1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1, stages=2)

        timer = Signal(range(d))
        count = Signal(range(8))
        shreg = Signal(8)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.sync += [self.frame_error.eq(0), self.overrun.eq(0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(d - 1), count.eq(0)]
                    m.next = "DATA"
                    with m.If(line):
                        m.next = "IDLE"           # a glitch, not a start bit
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(d - 1), shreg.eq(Cat(shreg[1:], line)), count.eq(count + 1)]
                    with m.If(count == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(line):
                        with m.If(self.o.valid & ~self.o.ready):
                            m.d.sync += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.frame_error.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m
