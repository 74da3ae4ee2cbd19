"""System tops: the link path around the accelerator core, for simulation and for boards.

Data path (both tops)::

    bytes in -> FIFO -> FrameDecoder -> CommandDecoder <-> Core
                                             |
    bytes out <------------ FrameEncoder <---+

:class:`LinkTop`   the link path alone, with the core's ports brought out
                   (``core``, flipped): what the command decoder's cocotb
                   tests drive, and what both tops below contain.
:class:`SimTop`    :class:`LinkTop` and a core, with plain byte ports
                   (``rx_data``/``rx_valid``/``rx_ready``,
                   ``tx_data``/``tx_valid``/``tx_ready``): the UART's bit
                   timing is bypassed, one byte per clock each way. The
                   Verilator harness (``sim/harness.cpp``) serves it on TCP.
:class:`BoardTop`  :class:`LinkTop`, a core, ``UARTRx``/``UARTTx``, a PLL from
                   the board oscillator to ``target.clock_hz`` (ECP5
                   ``EHXPLLL``, iCE40 ``SB_PLL40_PAD``), reset and status LEDs,
                   for the ``ulx3s-85f`` and ``icebreaker`` boards
                   (amaranth-boards platforms).

The core is built by ``core_factory(target)``; the default is
``mmfree.hw.core.Core``, imported only when needed.
"""

from __future__ import annotations

import importlib

from amaranth.build import ResourceError
from amaranth.hdl import ClockDomain, ClockSignal, Instance, Module, ResetSignal, Signal
from amaranth.lib import fifo, io, stream, wiring
from amaranth.lib.cdc import AsyncFFSynchronizer, ResetSynchronizer
from amaranth.lib.wiring import In, Out

from mmfree.protocol import MAX_PAYLOAD

from .command import CommandDecoder, check_parameters
from .coreif import CoreSignature
from .framer import FrameDecoder, FrameEncoder
from .uart import UARTRx, UARTTx, uart_divisor

__all__ = ["LinkTop", "SimTop", "BoardTop", "BOARDS", "SIM_TIMEOUT", "default_core_factory", "board_platform",
           "ecp5_pll_params", "ice40_pll_params"]

#: Inter-byte timeout of :class:`SimTop` in clock cycles: 15 ms to 0.5 s of
#: wall time at the harness's 0.1 to 3 million cycles per second. A host
#: writes a frame in one piece, so the socket delivers it whole; the host
#: driver's ``settle`` for a simulator (0.5 s) covers the timeout.
SIM_TIMEOUT = 50_000


def default_core_factory(target):
    """The core of ``target``'s board: :class:`~mmfree.hw.serial_core.SerialCore` where :data:`BOARDS`
    says ``"core": "serial"`` (the iCEBreaker), else :class:`~mmfree.hw.core.Core` (its tile streams in
    the ``mat`` domain when the target has a ``matrix_clock_hz``)."""
    if BOARDS.get(target.board or "", {}).get("core") == "serial":
        from .serial_core import SerialCore
        return SerialCore(target)
    from .core import Core
    return Core(target, matrix_domain=matrix_domain(target))


def matrix_domain(target) -> str:
    """The clock domain of the core's tile streams: ``mat`` when ``target.matrix_clock_hz`` is set, else ``sync``."""
    return "sync" if target.matrix_clock_hz is None else "mat"


def _core_shape(core, target):
    """(data_bits, memories) of a built core."""
    data_bits = len(core.load.payload.data)
    memories = getattr(core, "memories", None)
    return data_bits, memories


class LinkTop(wiring.Component):
    """Byte streams to core operations: FIFO, frame decoder, command decoder, frame encoder.

    Parameters
    ----------
    target : mmfree.targets.Target
        Memory depths must be set.
    max_payload, timeout : int
        The frame decoder's (``timeout`` in clock cycles).
    fifo_depth : int
        Bytes buffered in front of the frame decoder (it is not ready while it
        hands a frame out).
    data_bits, memories, clock_hz :
        Passed to :class:`~mmfree.hw.command.CommandDecoder`.

    Members
    -------
    rx : ``In(stream.Signature(8))``; tx : ``Out(stream.Signature(8))``
        Bytes from and to the host.
    core : ``In(CoreSignature(data_bits))``
        The core's ports (flipped: this block drives ``load`` and ``cmd``).
    line_error : In(1)
        Pulse per lost byte (UART framing error or overrun).
    idle, model_set, active : Out(1)
        Idle (no byte buffered, no command in progress), model flag, a STEP or
        GENERATE running.
    """

    def __init__(self, target, *, max_payload: int = MAX_PAYLOAD, timeout: int, fifo_depth: int = 16,
                 data_bits: int | None = None, memories=None, clock_hz: int | None = None):
        # the blocks are built in elaborate() (an unelaborated LinkTop leaves no unused elaboratables);
        # the parameters are checked now
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
            raise ValueError(f"timeout must be a positive integer number of clock cycles, got {timeout!r}")
        if isinstance(fifo_depth, bool) or not isinstance(fifo_depth, int) or fifo_depth < 1:
            raise ValueError(f"fifo_depth must be a positive integer, got {fifo_depth!r}")
        self.target = target
        self.max_payload = max_payload
        self.timeout = timeout
        self.fifo_depth = fifo_depth
        self.clock_hz = clock_hz
        self.memories = memories
        self.data_bits = check_parameters(target, max_payload=max_payload, data_bits=data_bits, memories=memories)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "core": In(CoreSignature(self.data_bits)),
            "line_error": In(1),
            "idle": Out(1),
            "model_set": Out(1),
            "active": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.decoder = dec = FrameDecoder(max_payload=self.max_payload, timeout=self.timeout)
        m.submodules.command = cmd = CommandDecoder(self.target, max_payload=self.max_payload,
                                                    data_bits=self.data_bits, memories=self.memories,
                                                    clock_hz=self.clock_hz)
        m.submodules.encoder = enc = FrameEncoder()
        m.submodules.fifo = rx_fifo = fifo.SyncFIFOBuffered(width=8, depth=self.fifo_depth)
        wiring.connect(m, wiring.flipped(self.rx), rx_fifo.w_stream)
        wiring.connect(m, rx_fifo.r_stream, dec.i)
        wiring.connect(m, dec.header, cmd.header)
        wiring.connect(m, dec.payload, cmd.payload)
        wiring.connect(m, dec.error, cmd.error)
        wiring.connect(m, cmd.tx_header, enc.header)
        wiring.connect(m, cmd.tx_payload, enc.payload)
        wiring.connect(m, enc.o, wiring.flipped(self.tx))
        wiring.connect(m, wiring.flipped(self.core), cmd.core)
        m.d.comb += [cmd.line_error.eq(self.line_error),
                     self.idle.eq(cmd.idle & ~rx_fifo.r_rdy),
                     self.model_set.eq(cmd.model_set), self.active.eq(cmd.active)]
        return m


class SimTop(wiring.Component):
    """The simulated system: byte ports, link path and core (bit timing bypassed).

    Parameters
    ----------
    target : mmfree.targets.Target, optional
        With memory depths set (``mmfree.sim.harness.target_from_compiled``
        sizes the ``sim`` target from a compiled model). Default: the core's.
    core : Component, optional
        A built core; else ``core_factory(target)`` (default
        :func:`default_core_factory`), called when the top is elaborated.
    max_payload : int
    timeout : int
        Inter-byte timeout in cycles (default :data:`SIM_TIMEOUT`).
    fifo_depth : int

    Members (plain names, the Verilog ports)
    -------
    rx_data (In 8), rx_valid (In 1), rx_ready (Out 1)
        A byte is taken on a clock edge where ``rx_valid`` and ``rx_ready``
        are both high. ``rx_ready`` does not depend on ``rx_valid``.
    tx_data (Out 8), tx_valid (Out 1), tx_ready (In 1)
        A byte leaves on a clock edge where both are high.
    idle (Out 1)
        No byte buffered, no command in progress, the core not busy: a
        simulator may stop the clock (after the frame decoder's timeout has
        had time to fire on a partial frame).
    model_set (Out 1)
    """

    def __init__(self, target=None, *, core=None, core_factory=None, max_payload: int = MAX_PAYLOAD,
                 timeout: int = SIM_TIMEOUT, fifo_depth: int = 16):
        if core is None and target is None:
            raise ValueError("SimTop needs a target or a core")
        self.target = core.target if target is None else target
        self._core = core
        self.core_factory = core_factory or default_core_factory
        self.timeout = timeout
        self.max_payload = max_payload
        self.fifo_depth = fifo_depth
        super().__init__({
            "rx_data": In(8), "rx_valid": In(1), "rx_ready": Out(1),
            "tx_data": Out(8), "tx_valid": Out(1), "tx_ready": In(1),
            "idle": Out(1), "model_set": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        core = self._core if self._core is not None else self.core_factory(self.target)
        data_bits, memories = _core_shape(core, self.target)
        m.submodules.core = core
        m.submodules.link = link = LinkTop(self.target, max_payload=self.max_payload, timeout=self.timeout,
                                           fifo_depth=self.fifo_depth, data_bits=data_bits, memories=memories)
        wiring.connect(m, link.core, core)
        m.d.comb += [link.rx.payload.eq(self.rx_data), link.rx.valid.eq(self.rx_valid),
                     self.rx_ready.eq(link.rx.ready),
                     self.tx_data.eq(link.tx.payload), self.tx_valid.eq(link.tx.valid),
                     link.tx.ready.eq(self.tx_ready),
                     self.idle.eq(link.idle & ~core.busy), self.model_set.eq(link.model_set)]
        return m


# ------------------------------------------------------------------ boards

#: Board name -> amaranth-boards platform and the resources BoardTop uses.
BOARDS = {
    "ulx3s-85f": {"module": "amaranth_boards.ulx3s", "platform": "ULX3S_85F_Platform", "family": "ecp5",
                  "reset": "button_pwr", "baud": 3_000_000, "max_payload": MAX_PAYLOAD},
    # an 8-byte receive FIFO is flip-flops on the iCE40 (16 take a block RAM, and the serial core needs 29
    # of the 30); the host waits for each reply, so bytes do not pile up while a frame is handed out
    "icebreaker": {"module": "amaranth_boards.icebreaker", "platform": "ICEBreakerPlatform", "family": "ice40",
                   "reset": "button", "baud": 3_000_000, "max_payload": 512, "fifo_depth": 8, "core": "serial"},
}


def board_platform(board: str):
    """A fresh amaranth-boards platform instance for ``board``."""
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; known boards: {', '.join(BOARDS)}")
    spec = BOARDS[board]
    return getattr(importlib.import_module(spec["module"]), spec["platform"])()


def ecp5_pll_params(f_in: float, f_out: float, f_os: float | None = None) -> dict:
    """EHXPLLL dividers for ``f_out`` from ``f_in`` (the ``ecppll`` search), and ``f_os`` on CLKOS.

    Returns ``{"CLKI_DIV", "CLKFB_DIV", "CLKOP_DIV", "CLKOP_CPHASE", "f_vco", "f_out"}``, with
    ``f_os``: also ``"CLKOS_DIV", "CLKOS_CPHASE", "f_os"`` (from the same VCO); PFD 3.125..400 MHz,
    VCO 400..800 MHz, feedback from CLKOP.
    """
    best = None
    for clki in range(1, 129):
        pfd = f_in / clki
        if not 3.125e6 <= pfd <= 400e6:
            continue
        for fb in range(1, 81):
            out = pfd * fb
            for op in range(1, 129):
                vco = out * op
                if not 400e6 <= vco <= 800e6:
                    continue
                err = abs(out - f_out)
                osd = min(128, max(1, round(vco / f_os))) if f_os else 0
                err_os = abs(vco / osd - f_os) if f_os else 0.0
                key = (err + err_os, abs(vco - 600e6))
                if best is None or key < best[0]:
                    best = (key, err, clki, fb, op, vco, out, osd, err_os)
    if best is None:
        raise ValueError(f"no ECP5 PLL setting makes {f_out} Hz from {f_in} Hz")
    _, err, clki, fb, op, vco, out, osd, err_os = best
    if err > 0.005 * f_out:
        raise ValueError(f"ECP5 PLL: {f_out} Hz from {f_in} Hz is off by {err:.0f} Hz (best {out:.0f} Hz)")
    p = {"CLKI_DIV": clki, "CLKFB_DIV": fb, "CLKOP_DIV": op, "CLKOP_CPHASE": (op - 1) // 2,
         "f_vco": vco, "f_out": out}
    if f_os:
        if err_os > 0.005 * f_os:
            raise ValueError(f"ECP5 PLL: {f_os} Hz on CLKOS beside {f_out} Hz from {f_in} Hz is off by "
                             f"{err_os:.0f} Hz (best {vco / osd:.0f} Hz)")
        p.update({"CLKOS_DIV": osd, "CLKOS_CPHASE": (osd - 1) // 2, "f_os": vco / osd})
    return p


def ice40_pll_params(f_in: float, f_out: float) -> dict:
    """SB_PLL40 dividers (simple feedback) for ``f_out`` from ``f_in`` (the ``icepll`` search).

    Returns ``{"DIVR", "DIVF", "DIVQ", "FILTER_RANGE", "f_vco", "f_out"}``;
    PFD 10..133 MHz, VCO 533..1066 MHz, output 16..275 MHz.
    """
    best = None
    for divr in range(16):
        pfd = f_in / (divr + 1)
        if not 10e6 <= pfd <= 133e6:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533e6 <= vco <= 1066e6:
                continue
            for divq in range(1, 7):
                out = vco / (1 << divq)
                if not 16e6 <= out <= 275e6:
                    continue
                err = abs(out - f_out)
                if best is None or err < best[0]:
                    best = (err, divr, divf, divq, vco, out, pfd)
    if best is None:
        raise ValueError(f"no iCE40 PLL setting makes {f_out} Hz from {f_in} Hz")
    err, divr, divf, divq, vco, out, pfd = best
    if err > 0.005 * f_out:
        raise ValueError(f"iCE40 PLL: {f_out} Hz from {f_in} Hz is off by {err:.0f} Hz (best {out:.0f} Hz)")
    filt = next((i + 1 for i, lim in enumerate((17e6, 26e6, 44e6, 66e6, 101e6)) if pfd < lim), 6)
    return {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": filt, "f_vco": vco, "f_out": out}


class BoardTop(wiring.Component):
    """A board's system: PLL, reset, UART, link path, core and status LEDs.

    Parameters
    ----------
    board : {"ulx3s-85f", "icebreaker"}
    target : mmfree.targets.Target, optional
        Default ``mmfree.targets.get(board)``; ``clock_hz`` is the core clock.
    core_factory : callable, optional
        ``core_factory(target)`` builds the core (default :func:`default_core_factory`).
    baud : int, optional
        UART rate (default 3 Mbaud, the FTDI bridges' fastest exact rate).
    max_payload : int, optional
        Default 4096 on the ULX3S, 512 on the iCEBreaker (one block RAM).

    Elaborate it with the board's platform (:func:`board_platform`); it
    makes its own ``sync`` domain: the board oscillator through the PLL,
    held in reset until the PLL locks and while the reset button
    (ULX3S ``PWR``, iCEBreaker user button) is pressed. LEDs, as many as the
    board has, in order: heartbeat (about 1 Hz), model set, step running,
    receive activity, transmit activity, PLL locked, line error seen (until
    reset). The inter-byte timeout is 20 byte times.
    """

    def __init__(self, board: str, *, target=None, core_factory=None, baud: int | None = None,
                 max_payload: int | None = None):
        if board not in BOARDS:
            raise ValueError(f"unknown board {board!r}; known boards: {', '.join(BOARDS)}")
        from mmfree import targets
        spec = BOARDS[board]
        self.board = board
        self.target = targets.get(board) if target is None else target
        if not self.target.clock_hz:
            raise ValueError(f"target {self.target.name} has no clock_hz")
        self.baud = spec["baud"] if baud is None else baud
        self.max_payload = spec["max_payload"] if max_payload is None else max_payload
        self.divisor = uart_divisor(self.target.clock_hz, self.baud)
        if self.target.matrix_clock_hz is not None and spec["family"] != "ecp5":
            raise ValueError(f"{board}: a separate matrix clock needs an ECP5 board")
        self.timeout = 20 * 10 * self.divisor
        self.core_factory = core_factory or default_core_factory
        super().__init__({})

    def _clock(self, m, platform):
        """The sync domain (and ``mat``, with a ``matrix_clock_hz``) from the board clock through a PLL;
        returns the PLL's lock signal."""
        spec = BOARDS[self.board]
        f_in = platform.default_clk_frequency
        f_out = self.target.clock_hz
        f_mat = self.target.matrix_clock_hz
        clk_port = platform.request(platform.default_clk, dir="-")
        clk = Signal()
        mat_clk = Signal()
        locked = Signal()
        if abs(f_in - f_out) < 1 and f_mat is None:
            m.submodules.clk_buf = buf = io.Buffer("i", clk_port)
            m.d.comb += [clk.eq(buf.i), locked.eq(1)]
        elif spec["family"] == "ecp5":
            # one output: sync on CLKOP; with a matrix clock: mat on CLKOP (the feedback), sync on CLKOS
            p = ecp5_pll_params(f_in, f_out) if f_mat is None else ecp5_pll_params(f_in, f_mat, f_out)
            op_clk = clk if f_mat is None else mat_clk
            os_args = {} if f_mat is None else dict(
                a_FREQUENCY_PIN_CLKOS=f"{p['f_os'] / 1e6:g}", p_CLKOS_ENABLE="ENABLED",
                p_CLKOS_DIV=p["CLKOS_DIV"], p_CLKOS_CPHASE=p["CLKOS_CPHASE"], p_CLKOS_FPHASE=0,
                o_CLKOS=clk, i_ENCLKOS=0)
            m.submodules.clk_buf = buf = io.Buffer("i", clk_port)
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{f_in / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{p['f_out'] / 1e6:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
                p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
                p_CLKI_DIV=p["CLKI_DIV"], p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["CLKOP_DIV"],
                p_CLKOP_CPHASE=p["CLKOP_CPHASE"], p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                p_CLKFB_DIV=p["CLKFB_DIV"],
                i_RST=0, i_STDBY=0, i_CLKI=buf.i, o_CLKOP=op_clk, i_CLKFB=op_clk,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
                i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked, **os_args)
        else:
            p = ice40_pll_params(f_in, f_out)
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_DIVR=p["DIVR"], p_DIVF=p["DIVF"], p_DIVQ=p["DIVQ"],
                p_FILTER_RANGE=p["FILTER_RANGE"],
                i_PACKAGEPIN=clk_port.io, i_RESETB=1, i_BYPASS=0, o_PLLOUTGLOBAL=clk, o_LOCK=locked)
        domains = [("sync", clk, f_out)] + ([("mat", mat_clk, f_mat)] if f_mat is not None else [])
        m.submodules.button = button = io.Buffer("i", platform.request(spec["reset"], 0, dir="-"))
        for name, c, f in domains:
            m.domains += ClockDomain(name)
            m.d.comb += ClockSignal(name).eq(c)
            platform.add_clock_constraint(c, f)
            if spec["family"] == "ecp5":
                # The reset reaches about 29,000 flip-flops (256 lanes). Through a DCCA it rides a global
                # network to their LSR pins instead of the fabric's routing, which it otherwise congests
                # over the whole die (nextpnr-ecp5 promotes only clock nets by itself).
                m.domains += ClockDomain(f"{name}_raw", reset_less=True)
                m.d.comb += ClockSignal(f"{name}_raw").eq(c)
                rst = Signal(name=f"{name}_rst_sync")
                m.submodules[f"{name}_reset_sync"] = AsyncFFSynchronizer(~locked | button.i, rst,
                                                                         o_domain=f"{name}_raw")
                m.submodules[f"{name}_reset_gbuf"] = Instance("DCCA", i_CLKI=rst, i_CE=1,
                                                              o_CLKO=ResetSignal(name))
            else:
                m.submodules.reset_sync = ResetSynchronizer(~locked | button.i, domain=name)
        return locked

    def elaborate(self, platform):
        if platform is None:
            raise ValueError("BoardTop must be elaborated with its board's platform (board_platform(board))")
        m = Module()
        locked = self._clock(m, platform)
        core = self.core_factory(self.target)
        data_bits, memories = _core_shape(core, self.target)
        m.submodules.core = core
        m.submodules.link = link = LinkTop(self.target, max_payload=self.max_payload, timeout=self.timeout,
                                           fifo_depth=BOARDS[self.board].get("fifo_depth", 16),
                                           data_bits=data_bits, memories=memories)
        m.submodules.uart_rx = urx = UARTRx(clk_freq=self.target.clock_hz, baud=self.baud)
        m.submodules.uart_tx = utx = UARTTx(clk_freq=self.target.clock_hz, baud=self.baud)
        wiring.connect(m, link.core, core)
        wiring.connect(m, urx.o, link.rx)
        wiring.connect(m, link.tx, utx.i)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx_pin = rx_pin = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_pin = tx_pin = io.Buffer("o", uart.tx)
        m.d.comb += [urx.rx.eq(rx_pin.i), tx_pin.o.eq(utx.tx),
                     link.line_error.eq(urx.frame_error | urx.overrun)]

        # status LEDs
        beat = Signal(range(self.target.clock_hz // 2 + 1))
        heart = Signal()
        with m.If(beat == self.target.clock_hz // 2):
            m.d.sync += [beat.eq(0), heart.eq(~heart)]
        with m.Else():
            m.d.sync += beat.eq(beat + 1)

        def stretch(pulse):
            """``pulse`` held for about 50 ms, so that one byte is visible."""
            n = Signal(range(self.target.clock_hz // 20 + 1))
            with m.If(pulse):
                m.d.sync += n.eq(self.target.clock_hz // 20)
            with m.Elif(n != 0):
                m.d.sync += n.eq(n - 1)
            return n != 0

        line_seen = Signal()
        with m.If(link.line_error):
            m.d.sync += line_seen.eq(1)
        status = [heart, link.model_set, link.active, stretch(urx.o.valid & urx.o.ready),
                  stretch(utx.i.valid & utx.i.ready), locked, line_seen]
        for j, value in enumerate(status):
            try:
                port = platform.request("led", j, dir="-")
            except ResourceError:       # the board has fewer LEDs
                break
            m.submodules[f"led{j}"] = led = io.Buffer("o", port)
            m.d.comb += led.o.eq(value)
        return m
