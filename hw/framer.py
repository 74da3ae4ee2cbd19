"""Link frames in hardware: a validating frame decoder and a frame encoder.

The frame format, CRC and error codes are :mod:`mmfree.protocol`'s
(``docs/protocol.md``)::

    SOF 0xA5 | opcode | length (2, LE) | payload (length) | CRC-16 (2, LE)

Both blocks are generic: they know frames, not commands. The command decoder
that talks to the accelerator core sits between them.

:class:`FrameDecoder` gives exactly the events of the Python reference
:class:`mmfree.protocol.FrameDecoder` for the same bytes (its ``timeout()``
corresponds to ``timeout`` idle cycles inside a frame).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree.protocol import MAX_PAYLOAD, MIN_MAX_PAYLOAD, SOF, ErrorCode

from .crc import CRC16

__all__ = ["FrameDecoder", "FrameEncoder", "HeaderLayout", "PayloadLayout"]

#: A frame header: opcode and payload length.
HeaderLayout = data.StructLayout({"opcode": 8, "length": 16})
#: A payload byte; ``last`` marks the frame's final byte.
PayloadLayout = data.StructLayout({"data": 8, "last": 1})


class FrameDecoder(wiring.Component):
    """Bytes in, CRC-checked frames out; errors reported, never a hang.

    The payload is stored in a ``max_payload`` x 8 memory while it arrives and
    released only after the CRC has matched, so nothing downstream ever sees
    a byte of a bad frame.

    Parameters
    ----------
    max_payload : int
        Longest accepted payload, ``MIN_MAX_PAYLOAD`` (64) .. ``MAX_PAYLOAD``
        (4096) bytes; the size of the payload memory.
    timeout : int
        Inter-byte timeout in clock cycles: inside a frame, ``timeout``
        consecutive cycles without an input byte abandon it (``TRUNCATED``).
        Pick several byte times, e.g. ``20 * 10 * divisor`` for a UART.

    Attributes
    ----------
    i : stream of 8 bits, in
        The byte stream (e.g. from :class:`~mmfree.hw.uart.UARTRx`). Ready
        while receiving (one byte per cycle); not ready while a good frame is
        being handed out (``header`` and ``payload``), so put a FIFO in front
        when the source cannot wait.
    header : stream of :data:`HeaderLayout`, out
        One transfer per good frame, one cycle after its last CRC byte.
    payload : stream of :data:`PayloadLayout`, out
        After each header transfer, exactly ``length`` transfers (none for an
        empty payload), ``last`` set on the final one; one byte per cycle.
        ``payload.valid`` is never high before its header was transferred.
    error : stream of 8 bits, out
        An :class:`~mmfree.protocol.ErrorCode` per bad frame:
        ``BAD_LENGTH`` (after the second length byte, when length >
        ``max_payload``), ``BAD_CRC`` (after the second CRC byte),
        ``TRUNCATED`` (inter-byte timeout). Never blocks decoding: if an error
        is still waiting when another occurs, the waiting one is kept and the
        new one is dropped.

    Bytes outside frames that are not SOF are dropped silently. After an
    error the decoder hunts for SOF in the bytes that follow. Latency: a
    frame's header is valid one cycle after its last CRC byte is accepted.
    """

    def __init__(self, *, max_payload: int = MAX_PAYLOAD, timeout: int):
        if isinstance(max_payload, bool) or not isinstance(max_payload, int) \
                or not MIN_MAX_PAYLOAD <= max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be an integer in [{MIN_MAX_PAYLOAD}, {MAX_PAYLOAD}], "
                             f"got {max_payload!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
            raise ValueError(f"timeout must be a positive integer number of clock cycles, got {timeout!r}")
        self.max_payload = max_payload
        self.timeout = timeout
        super().__init__({
            "i": In(stream.Signature(8)),
            "header": Out(stream.Signature(HeaderLayout)),
            "payload": Out(stream.Signature(PayloadLayout)),
            "error": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = CRC16()
        m.submodules.mem = mem = memory.Memory(shape=8, depth=self.max_payload, init=[])
        wr = mem.write_port()
        rd = mem.read_port(domain="sync")

        opcode = Signal(8)
        length = Signal(16)
        count = Signal(range(self.max_payload + 1))
        crc_lo = Signal(8)
        idle = Signal(range(self.timeout))
        byte = self.i.payload
        take = Signal()
        m.d.comb += [take.eq(self.i.valid & self.i.ready), crc.data.eq(byte)]

        with m.If(self.error.ready):
            m.d.sync += self.error.valid.eq(0)

        def fail(code):
            with m.If(~self.error.valid | self.error.ready):
                m.d.sync += [self.error.payload.eq(code), self.error.valid.eq(1)]
            m.next = "HUNT"

        def in_frame(body):
            """A state inside a frame: always ready; the idle counter abandons a stalled frame."""
            m.d.comb += self.i.ready.eq(1)
            with m.If(take):
                m.d.sync += idle.eq(0)
                body()
            with m.Elif(idle == self.timeout - 1):
                m.d.sync += idle.eq(0)
                fail(ErrorCode.TRUNCATED)
            with m.Else():
                m.d.sync += idle.eq(idle + 1)

        with m.FSM():
            with m.State("HUNT"):
                m.d.comb += self.i.ready.eq(1)
                m.d.sync += idle.eq(0)
                with m.If(take & (byte == SOF)):
                    m.d.comb += crc.clear.eq(1)
                    m.next = "OPCODE"

            with m.State("OPCODE"):
                def body():
                    m.d.comb += crc.en.eq(1)
                    m.d.sync += opcode.eq(byte)
                    m.next = "LEN_LO"
                in_frame(body)

            with m.State("LEN_LO"):
                def body():
                    m.d.comb += crc.en.eq(1)
                    m.d.sync += length[:8].eq(byte)
                    m.next = "LEN_HI"
                in_frame(body)

            with m.State("LEN_HI"):
                def body():
                    full = Cat(length[:8], byte)
                    m.d.comb += crc.en.eq(1)
                    m.d.sync += [length[8:].eq(byte), count.eq(0)]
                    with m.If(full > self.max_payload):
                        fail(ErrorCode.BAD_LENGTH)
                    with m.Elif(full == 0):
                        m.next = "CRC_LO"
                    with m.Else():
                        m.next = "PAYLOAD"
                in_frame(body)

            with m.State("PAYLOAD"):
                def body():
                    m.d.comb += [crc.en.eq(1), wr.addr.eq(count), wr.data.eq(byte), wr.en.eq(1)]
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == length - 1):
                        m.next = "CRC_LO"
                in_frame(body)

            with m.State("CRC_LO"):
                def body():
                    m.d.sync += crc_lo.eq(byte)
                    m.next = "CRC_HI"
                in_frame(body)

            with m.State("CRC_HI"):
                def body():
                    with m.If(Cat(crc_lo, byte) == crc.crc):
                        m.next = "HEADER"
                    with m.Else():
                        fail(ErrorCode.BAD_CRC)
                in_frame(body)

            with m.State("HEADER"):
                m.d.comb += [self.header.valid.eq(1), self.header.payload.opcode.eq(opcode),
                             self.header.payload.length.eq(length), rd.addr.eq(0), rd.en.eq(1)]
                with m.If(self.header.ready):
                    m.d.sync += count.eq(0)
                    m.next = "DRAIN"
                    with m.If(length == 0):
                        m.next = "HUNT"

            with m.State("DRAIN"):
                last = count == length - 1
                m.d.comb += [self.payload.valid.eq(1), self.payload.payload.data.eq(rd.data),
                             self.payload.payload.last.eq(last),
                             rd.addr.eq(count + 1), rd.en.eq(self.payload.ready)]
                with m.If(self.payload.ready):
                    m.d.sync += count.eq(count + 1)
                    with m.If(last):
                        m.next = "HUNT"
        return m


class FrameEncoder(wiring.Component):
    """Header and payload streams in, frame bytes out (SOF, header, payload, CRC).

    Attributes
    ----------
    header : stream of :data:`HeaderLayout`, in
        Starts a frame. Accepted only between frames.
    payload : stream of :data:`PayloadLayout`, in
        After each header, exactly ``header.length`` bytes; ``last`` is not
        checked (the length governs), so a :class:`FrameDecoder`'s outputs
        connect directly.
    o : stream of 8 bits, out
        The frame: ``6 + length`` bytes, one per cycle while ``o.ready``
        (payload bytes pass through combinationally: ``o.valid`` follows
        ``payload.valid`` and ``payload.ready`` follows ``o.ready``). One idle
        cycle between frames.

    The length is sent as given; keep it within the receiver's
    ``max_payload``.
    """

    def __init__(self):
        super().__init__({
            "header": In(stream.Signature(HeaderLayout)),
            "payload": In(stream.Signature(PayloadLayout)),
            "o": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = CRC16()
        opcode = Signal(8)
        length = Signal(16)
        count = Signal(16)
        sent = Signal()
        m.d.comb += [sent.eq(self.o.valid & self.o.ready), crc.data.eq(self.o.payload)]

        def emit(value, nxt, add_crc=True):
            m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(value)]
            if add_crc:
                m.d.comb += crc.en.eq(sent)
            with m.If(sent):
                m.next = nxt

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.header.ready.eq(1)
                with m.If(self.header.valid):
                    m.d.comb += crc.clear.eq(1)
                    m.d.sync += [opcode.eq(self.header.payload.opcode), length.eq(self.header.payload.length),
                                 count.eq(0)]
                    m.next = "SOF"
            with m.State("SOF"):
                emit(SOF, "OPCODE", add_crc=False)
            with m.State("OPCODE"):
                emit(opcode, "LEN_LO")
            with m.State("LEN_LO"):
                emit(length[:8], "LEN_HI")
            with m.State("LEN_HI"):
                emit(length[8:], "CRC_LO")
                with m.If(sent & (length != 0)):
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += [self.o.valid.eq(self.payload.valid), self.o.payload.eq(self.payload.payload.data),
                             self.payload.ready.eq(self.o.ready), crc.en.eq(sent)]
                with m.If(sent):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == length - 1):
                        m.next = "CRC_LO"
            with m.State("CRC_LO"):
                emit(crc.crc[:8], "CRC_HI", add_crc=False)
            with m.State("CRC_HI"):
                emit(crc.crc[8:], "IDLE", add_crc=False)
        return m
