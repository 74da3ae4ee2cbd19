"""cocotb tests of :mod:`mmfree.hw.uart` at the bit level.

The design (tests/test_uart_cocotb.py) holds, for each divisor ``d`` in
``params["divisors"]``, a transmitter ``tx{d}_`` and a receiver ``rx{d}_``,
plus ``loop_``: a transmitter wired to a receiver (divisor
``params["loop_divisor"]``). The clock period is 10 ns, so a bit lasts
``10 * d`` ns. Receiver lines are driven with ``Timer``s at any bit period
(off-rate senders) and any phase against the clock.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, Timer

from mmfree.sim.runner import cocotb_params

PARAMS = cocotb_params()
DIVISORS = PARAMS.get("divisors", [4, 7, 16])
LOOP_DIVISOR = PARAMS.get("loop_divisor", 5)
PERIOD_PS = 10_000
EDGE_BYTES = [0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80, 0xA5, 0x7E]


async def reset(dut):
    cocotb.start_soon(Clock(dut.clk, PERIOD_PS, unit="ps").start())
    for d in DIVISORS:
        getattr(dut, f"tx{d}_i_valid").value = 0
        getattr(dut, f"rx{d}_rx").value = 1
        getattr(dut, f"rx{d}_o_ready").value = 1
    dut.loop_i_valid.value = 0
    dut.loop_o_ready.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


def bit(handle) -> int:
    return int(handle.value)


def waveform(data, d: int, stop: int = 1) -> list[int]:
    """The line, one value per clock cycle, for ``data`` sent back to back."""
    out = []
    for b in data:
        for v in [0] + [(b >> i) & 1 for i in range(8)] + [stop]:
            out += [v] * d
    return out


async def send_line(line, data, bit_ps: float, *, stop: int = 1, phase_ps: int = 0, hold: int = 1) -> None:
    """Drive ``line`` with 8N1 frames of ``data`` at ``bit_ps`` per bit (float: accumulated exactly)."""
    line.value = 1
    if phase_ps:
        await Timer(phase_ps, unit="ps")
    t, now = 0.0, 0
    for b in data:
        for v in [0] + [(b >> i) & 1 for i in range(8)] + [stop]:
            line.value = v
            t += bit_ps
            step = round(t) - now
            now += step
            await Timer(step, unit="ps")
    line.value = hold


class RxMonitor:
    """Collects a receiver's bytes and pulses every cycle (``o.ready`` as ``ready(cycle)`` says)."""

    def __init__(self, dut, prefix: str, ready=lambda cycle: True):
        self.o_valid = getattr(dut, f"{prefix}_o_valid")
        self.o_ready = getattr(dut, f"{prefix}_o_ready")
        self.o_payload = getattr(dut, f"{prefix}_o_payload")
        self.frame_error = getattr(dut, f"{prefix}_frame_error")
        self.overrun = getattr(dut, f"{prefix}_overrun")
        self.ready = ready
        self.data, self.frame_errors, self.overruns, self.cycle = [], 0, 0, 0
        self.running = True
        self.clk = dut.clk
        self.task = cocotb.start_soon(self.run())

    async def run(self):
        while self.running:
            await FallingEdge(self.clk)
            self.o_ready.value = int(self.ready(self.cycle))
            await ReadOnly()
            if bit(self.o_valid) and bit(self.o_ready):
                self.data.append(bit(self.o_payload))
            self.frame_errors += bit(self.frame_error)
            self.overruns += bit(self.overrun)
            self.cycle += 1

    async def stop(self, settle_cycles: int):
        await ClockCycles(self.clk, settle_cycles)
        self.running = False
        await self.task
        await FallingEdge(self.clk)           # leave the ReadOnly phase: the caller may drive again


@cocotb.test()
async def test_tx_waveform(dut):
    """Every divisor: exact bit timing, LSB first, start/stop bits, back-to-back bytes with no gap."""
    await reset(dut)
    rng = random.Random(1)
    for d in DIVISORS:
        data = EDGE_BYTES + [rng.randrange(256) for _ in range(8)]
        valid, ready, payload = (getattr(dut, f"tx{d}_i_{n}") for n in ("valid", "ready", "payload"))
        tx, busy = getattr(dut, f"tx{d}_tx"), getattr(dut, f"tx{d}_busy")
        line, accepts, busies, idx, cycle = [], [], [], 0, 0
        total = 10 * d * len(data) + 3 * d
        while cycle < total:
            await FallingEdge(dut.clk)
            valid.value = int(idx < len(data))
            if idx < len(data):
                payload.value = data[idx]
            await ReadOnly()
            line.append(bit(tx))
            busies.append(bit(busy))
            if idx < len(data) and bit(ready):
                accepts.append(cycle)
                idx += 1
            cycle += 1
        start = accepts[0] + 1
        assert line[:start] == [1] * start, f"d={d}: line not idle before the first byte"
        assert accepts == [accepts[0] + 10 * d * k for k in range(len(data))], \
            f"d={d}: bytes not accepted every {10 * d} cycles: {accepts}"
        exp = waveform(data, d)
        got = line[start:start + len(exp)]
        if got != exp:
            first = next(i for i, (a, b) in enumerate(zip(got, exp)) if a != b)
            raise AssertionError(f"d={d}: line differs at cycle {first} (byte {first // (10 * d)}, "
                                 f"bit {first % (10 * d) // d}): got {got[first]}, expected {exp[first]}")
        assert line[start + len(exp):] == [1] * (len(line) - start - len(exp)), f"d={d}: line not idle after"
        assert busies[start:start + len(exp)] == [1] * len(exp) and busies[start + len(exp)] == 0, \
            f"d={d}: busy does not cover exactly the bytes on the line"
        await FallingEdge(dut.clk)
        valid.value = 0


@cocotb.test()
async def test_rx_rates_and_phases(dut):
    """Every divisor: back-to-back bytes at the nominal rate and off-rate senders, at random clock phases."""
    await reset(dut)
    rng = random.Random(2)
    skews = {4: (0.0, 0.015, -0.015), 7: (0.0, 0.02, -0.02)}
    for d in DIVISORS:
        for skew in skews.get(d, (0.0, 0.03, -0.03)):
            data = EDGE_BYTES + [rng.randrange(256) for _ in range(12)]
            mon = RxMonitor(dut, f"rx{d}")
            await send_line(getattr(dut, f"rx{d}_rx"), data, d * PERIOD_PS * (1 + skew),
                            phase_ps=rng.randrange(PERIOD_PS))
            await mon.stop(2 * d + 4)
            assert mon.data == data, f"d={d} skew={skew:+.1%}: got {mon.data}, sent {data}"
            assert mon.frame_errors == 0 and mon.overruns == 0, f"d={d} skew={skew:+.1%}: spurious error pulses"


@cocotb.test()
async def test_rx_frame_error_break_and_glitch(dut):
    """A 0 stop bit pulses frame_error once and drops the byte; a held-low line (break) reports once;
    a short low glitch is not a start bit; good bytes after all of it arrive intact."""
    await reset(dut)
    for d in DIVISORS:
        line = getattr(dut, f"rx{d}_rx")
        bit_ps = d * PERIOD_PS
        mon = RxMonitor(dut, f"rx{d}")
        await send_line(line, [0x3C], bit_ps)
        await send_line(line, [0x42], bit_ps, stop=0, hold=0)      # then the line stays low: a break
        await Timer(30 * bit_ps, unit="ps")
        line.value = 1
        await Timer(2 * bit_ps, unit="ps")
        glitch = max(1, d // 2 - 1)                                  # shorter than the mid-start check
        line.value = 0
        await Timer(glitch * PERIOD_PS, unit="ps")
        line.value = 1
        await Timer(2 * bit_ps, unit="ps")
        await send_line(line, [0x12, 0x34], bit_ps)
        await mon.stop(2 * d + 4)
        assert mon.data == [0x3C, 0x12, 0x34], f"d={d}: got {mon.data}"
        assert mon.frame_errors == 1, f"d={d}: {mon.frame_errors} frame_error pulses, expected 1"
        assert mon.overruns == 0


@cocotb.test()
async def test_rx_overrun(dut):
    """With ``o.ready`` low, the first byte waits; later ones are dropped with an overrun pulse each."""
    await reset(dut)
    d = DIVISORS[0]
    gate = {"open": False}
    mon = RxMonitor(dut, f"rx{d}", ready=lambda cycle: gate["open"])
    await send_line(getattr(dut, f"rx{d}_rx"), [0x11, 0x22, 0x33], d * PERIOD_PS)
    await ClockCycles(dut.clk, 2 * d + 4)
    assert mon.data == [] and mon.overruns == 2, f"overruns {mon.overruns}"
    assert bit(getattr(dut, f"rx{d}_o_valid")) == 1
    gate["open"] = True
    await send_line(getattr(dut, f"rx{d}_rx"), [0x44], d * PERIOD_PS)
    await mon.stop(2 * d + 4)
    assert mon.data == [0x11, 0x44] and mon.overruns == 2 and mon.frame_errors == 0, mon.data


@cocotb.test()
async def test_loopback(dut):
    """Transmitter into receiver: every byte value, back to back, at full line rate."""
    await reset(dut)
    rng = random.Random(3)
    d = LOOP_DIVISOR
    data = list(range(256))
    rng.shuffle(data)
    mon = RxMonitor(dut, "loop")
    idx = cycles = 0
    while idx < len(data):
        await FallingEdge(dut.clk)
        dut.loop_i_valid.value = 1
        dut.loop_i_payload.value = data[idx]
        await ReadOnly()
        if bit(dut.loop_i_ready):
            idx += 1
        cycles += 1
    await FallingEdge(dut.clk)
    dut.loop_i_valid.value = 0
    await mon.stop(12 * d)
    assert mon.data == data
    assert mon.frame_errors == 0 and mon.overruns == 0
    assert cycles <= 10 * d * (len(data) - 1) + 2, f"{cycles} cycles to hand over {len(data)} bytes"
