"""The host link protocol: frames, CRC, commands, replies, error codes, limits.

One contract for both ends of the serial link: the hardware (``mmfree.hw``)
builds its frame decoder, encoder and command decoder from these constants,
and the host driver (``mmfree.host``) encodes commands and decodes replies
with these functions. ``docs/protocol.md`` is the byte-by-byte prose form.

Frame (both directions)::

    offset  size  field
    0       1     SOF = 0xA5
    1       1     opcode (a Command from the host, a Reply from the device)
    2       2     length of the payload, little-endian, 0 .. max_payload
    4       n     payload
    4+n     2     CRC-16/CCITT-FALSE of bytes 1 .. 3+n, little-endian

CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no reflection,
no final XOR; ``crc16(b"123456789") == 0x29B1``.

Receiving (:class:`FrameDecoder`, and the hardware decoder bit for bit):
bytes outside a frame that are not SOF are dropped silently. After SOF come
opcode and length; a length above the receiver's ``max_payload`` is an error
(``BAD_LENGTH``), a CRC mismatch is an error (``BAD_CRC``), and a frame whose
bytes stop arriving for the receiver's inter-byte timeout is an error
(``TRUNCATED``). After any error the receiver forgets the frame and hunts for
SOF in the bytes that follow, so a host recovers by waiting one timeout of
silence and sending the command again.

This module imports nothing of ``mmfree`` but :mod:`mmfree.errors`.
"""

from __future__ import annotations

import dataclasses
import enum
import struct

from .errors import LinkError

__all__ = [
    "SOF", "HEADER_BYTES", "CRC_BYTES", "OVERHEAD", "MAX_PAYLOAD", "MIN_MAX_PAYLOAD", "PROTOCOL_VERSION",
    "CRC_POLY", "CRC_INIT", "MODEL_HASH_BYTES", "MAX_TOKEN", "LOAD_HEADER_BYTES", "COUNTER_NAMES",
    "ProtocolError", "Command", "Reply", "ErrorCode", "MemoryId", "reply_to",
    "crc16", "crc16_update", "Frame", "FrameError", "encode_frame", "decode_frame", "FrameDecoder",
    "Load", "LoadAck", "Step", "Generate", "GenerateDone", "TopK", "Info", "MemoryInfo", "Counters",
    "ErrorReply", "SetModel",
]

# --------------------------------------------------------------------------- limits

SOF = 0xA5                 #: start-of-frame byte
HEADER_BYTES = 4           #: SOF, opcode, length (2)
CRC_BYTES = 2              #: CRC-16, little-endian
OVERHEAD = HEADER_BYTES + CRC_BYTES
MAX_PAYLOAD = 4096         #: largest payload any receiver accepts (a device may accept less: Info.max_payload)
MIN_MAX_PAYLOAD = 64       #: smallest max_payload a receiver may declare (every command but LOAD is <= 16 bytes)
PROTOCOL_VERSION = 1       #: Info.protocol_version of this definition
CRC_POLY = 0x1021
CRC_INIT = 0xFFFF
MODEL_HASH_BYTES = 16      #: model identity carried by SET_MODEL and INFO
MAX_TOKEN = 0xFFFF         #: token ids travel as u16
LOAD_HEADER_BYTES = 5      #: memory id (1) + byte offset (4) before LOAD data

#: READ_COUNTERS values, in reply order (u64 each). The core may append more.
COUNTER_NAMES = ("cycles", "tokens", "embed", "stats", "quant", "matrix", "drain", "head")


class ProtocolError(LinkError):
    """A frame or payload does not follow this protocol (the message names the field)."""


# --------------------------------------------------------------------------- codes

class Command(enum.IntEnum):
    """Opcodes host -> device. The direct reply's opcode is ``command | 0x80``."""

    PING = 0x00           #: payload echoed back in PONG (link test)
    INFO = 0x01           #: -> INFO (Info)
    LOAD = 0x02           #: Load -> LOAD (LoadAck)
    RESET_STATE = 0x03    #: zero the recurrent state -> RESET_STATE (empty)
    STEP = 0x04           #: Step -> TOPK
    GENERATE = 0x05       #: Generate -> n x TOPK, then GENERATE_DONE
    READ_COUNTERS = 0x06  #: -> COUNTERS (Counters)
    SET_MODEL = 0x07      #: SetModel: declare the loaded model -> SET_MODEL (empty)


class Reply(enum.IntEnum):
    """Opcodes device -> host."""

    PONG = 0x80
    INFO = 0x81
    LOAD = 0x82
    RESET_STATE = 0x83
    TOPK = 0x84
    GENERATE_DONE = 0x85
    COUNTERS = 0x86
    SET_MODEL = 0x87
    ERROR = 0xFF


class ErrorCode(enum.IntEnum):
    """``ErrorReply.code``; codes 1..4 are also the frame decoder's own errors."""

    BAD_CRC = 0x01          #: frame CRC mismatch (detail: received CRC)
    BAD_LENGTH = 0x02       #: length above max_payload, or wrong for the command (detail: the length)
    UNKNOWN_COMMAND = 0x03  #: opcode is not a Command (detail: the opcode)
    TRUNCATED = 0x04        #: inter-byte timeout inside a frame
    BAD_ARGUMENT = 0x05     #: a field is out of range: memory id, offset, count (detail: the value)
    BAD_TOKEN = 0x06        #: token id >= vocabulary size (detail: the token)
    NO_MODEL = 0x07         #: STEP/GENERATE before SET_MODEL
    MODEL_MISMATCH = 0x08   #: the model does not fit this bitstream (detail: which limit)
    LINE_ERROR = 0x09       #: UART framing error or receive overrun (bytes were lost)
    BUSY = 0x0A             #: a command arrived while GENERATE runs
    INTERNAL = 0x0B         #: the device failed an internal check


class MemoryId(enum.IntEnum):
    """LOAD targets (``mmfree.targets`` memories). The core may add more."""

    WMEM = 0
    CMEM = 1
    VMEM = 2
    PMEM = 3


def reply_to(command: int) -> Reply:
    """The direct reply opcode of ``command`` (``PING -> PONG``, ``STEP -> TOPK``, ...)."""
    return Reply(Command(command) | 0x80)


# --------------------------------------------------------------------------- CRC

def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _make_table()


def crc16_update(crc: int, byte: int) -> int:
    """One byte into a CRC-16/CCITT-FALSE register."""
    return ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]


def crc16(data: bytes, crc: int = CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (continuing from ``crc``)."""
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ b]
    return crc


# --------------------------------------------------------------------------- frames

@dataclasses.dataclass(frozen=True)
class Frame:
    """A received or to-be-sent frame: opcode and payload (CRC checked on receipt)."""

    opcode: int
    payload: bytes = b""

    def encode(self) -> bytes:
        return encode_frame(self.opcode, self.payload)


@dataclasses.dataclass(frozen=True)
class FrameError:
    """A receive error event of :class:`FrameDecoder` (the hardware decoder reports ``code`` only)."""

    code: ErrorCode
    detail: int = 0


def _check_max_payload(max_payload) -> int:
    if isinstance(max_payload, bool) or not isinstance(max_payload, int) \
            or not MIN_MAX_PAYLOAD <= max_payload <= MAX_PAYLOAD:
        raise ValueError(f"max_payload must be an integer in [{MIN_MAX_PAYLOAD}, {MAX_PAYLOAD}], "
                         f"got {max_payload!r}")
    return max_payload


def encode_frame(opcode: int, payload: bytes = b"", *, max_payload: int = MAX_PAYLOAD) -> bytes:
    """The bytes of one frame: SOF, opcode, length (LE), payload, CRC (LE)."""
    if isinstance(opcode, bool) or not isinstance(opcode, int) or not 0 <= opcode <= 0xFF:
        raise ProtocolError(f"opcode must be an integer in [0, 255], got {opcode!r}")
    payload = bytes(payload)
    if len(payload) > max_payload:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds max_payload {max_payload}")
    body = struct.pack("<BH", opcode, len(payload)) + payload
    return bytes([SOF]) + body + struct.pack("<H", crc16(body))


def decode_frame(data: bytes, *, max_payload: int = MAX_PAYLOAD) -> Frame:
    """Exactly one frame from ``data``; anything else raises :class:`ProtocolError`."""
    data = bytes(data)
    if len(data) < OVERHEAD:
        raise ProtocolError(f"frame of {len(data)} bytes is shorter than the {OVERHEAD}-byte minimum")
    if data[0] != SOF:
        raise ProtocolError(f"frame starts with 0x{data[0]:02X}, not SOF 0x{SOF:02X}")
    opcode, length = struct.unpack_from("<BH", data, 1)
    if length > max_payload:
        raise ProtocolError(f"frame length {length} exceeds max_payload {max_payload}")
    if len(data) != OVERHEAD + length:
        raise ProtocolError(f"frame with length {length} must be {OVERHEAD + length} bytes, got {len(data)}")
    (rx,) = struct.unpack_from("<H", data, HEADER_BYTES + length)
    crc = crc16(data[1:HEADER_BYTES + length])
    if rx != crc:
        raise ProtocolError(f"frame CRC 0x{rx:04X} does not match computed 0x{crc:04X}")
    return Frame(opcode, data[HEADER_BYTES:HEADER_BYTES + length])


class FrameDecoder:
    """Streaming frame receiver: bytes in, :class:`Frame` and :class:`FrameError` events out.

    The reference model of ``mmfree.hw.framer.FrameDecoder``: the same bytes
    give the same events in the same order. Garbage between frames is dropped
    silently; after ``BAD_LENGTH`` (at the second length byte), ``BAD_CRC``
    (at the second CRC byte) or ``TRUNCATED`` (:meth:`timeout`) it hunts for
    SOF in the bytes that follow.

    Parameters
    ----------
    max_payload : int
        Longest accepted payload, ``MIN_MAX_PAYLOAD .. MAX_PAYLOAD``.
    """

    _HUNT, _OPCODE, _LEN_LO, _LEN_HI, _PAYLOAD, _CRC_LO, _CRC_HI = range(7)

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self.max_payload = _check_max_payload(max_payload)
        self.reset()

    def reset(self) -> None:
        """Forget any partial frame."""
        self._state = self._HUNT
        self._opcode = self._length = self._rx_crc = 0
        self._crc = CRC_INIT
        self._buf = bytearray()

    @property
    def in_frame(self) -> bool:
        """True between a SOF and the end of its frame (a timeout now would report TRUNCATED)."""
        return self._state != self._HUNT

    def timeout(self) -> list[FrameError]:
        """The line has been idle for the inter-byte timeout: ``[TRUNCATED]`` if inside a frame."""
        if not self.in_frame:
            return []
        self.reset()
        return [FrameError(ErrorCode.TRUNCATED)]

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        """Consume ``data``; return the frames completed and the errors found, in order."""
        out: list[Frame | FrameError] = []
        for b in bytes(data):
            s = self._state
            if s == self._HUNT:
                if b == SOF:
                    self._state, self._crc = self._OPCODE, CRC_INIT
            elif s == self._OPCODE:
                self._opcode, self._crc, self._state = b, crc16_update(self._crc, b), self._LEN_LO
            elif s == self._LEN_LO:
                self._length, self._crc, self._state = b, crc16_update(self._crc, b), self._LEN_HI
            elif s == self._LEN_HI:
                self._length |= b << 8
                self._crc = crc16_update(self._crc, b)
                self._buf = bytearray()
                if self._length > self.max_payload:
                    out.append(FrameError(ErrorCode.BAD_LENGTH, self._length))
                    self._state = self._HUNT
                else:
                    self._state = self._PAYLOAD if self._length else self._CRC_LO
            elif s == self._PAYLOAD:
                self._buf.append(b)
                self._crc = crc16_update(self._crc, b)
                if len(self._buf) == self._length:
                    self._state = self._CRC_LO
            elif s == self._CRC_LO:
                self._rx_crc, self._state = b, self._CRC_HI
            else:
                self._rx_crc |= b << 8
                if self._rx_crc == self._crc:
                    out.append(Frame(self._opcode, bytes(self._buf)))
                else:
                    out.append(FrameError(ErrorCode.BAD_CRC, self._rx_crc))
                self._state = self._HUNT
        return out


# --------------------------------------------------------------------------- payloads

def _u(name: str, value, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise ProtocolError(f"{name} must be an integer in [0, {(1 << bits) - 1}], got {value!r}")
    return value


def _s(name: str, value, bits: int) -> int:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProtocolError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _need(what: str, payload: bytes, n: int, exact: bool = True) -> bytes:
    payload = bytes(payload)
    if (len(payload) != n) if exact else (len(payload) < n):
        raise ProtocolError(f"{what} payload must be {'' if exact else 'at least '}{n} bytes, got {len(payload)}")
    return payload


@dataclasses.dataclass(frozen=True)
class Load:
    """LOAD: write ``data`` at byte ``offset`` of memory ``mem``'s image.

    A memory image is its words in address order, each word little-endian in
    ``ceil(width / 8)`` bytes. Layout: mem u8, offset u32, data (the rest).
    """

    mem: int
    offset: int
    data: bytes

    def pack(self) -> bytes:
        return struct.pack("<BI", _u("mem", self.mem, 8), _u("offset", self.offset, 32)) + bytes(self.data)

    @classmethod
    def unpack(cls, payload: bytes) -> "Load":
        payload = _need("LOAD", payload, LOAD_HEADER_BYTES, exact=False)
        mem, offset = struct.unpack_from("<BI", payload)
        return cls(mem, offset, payload[LOAD_HEADER_BYTES:])


@dataclasses.dataclass(frozen=True)
class LoadAck:
    """LOAD reply: mem u8, offset u32, count u16 (data bytes written)."""

    mem: int
    offset: int
    count: int

    def pack(self) -> bytes:
        return struct.pack("<BIH", _u("mem", self.mem, 8), _u("offset", self.offset, 32), _u("count", self.count, 16))

    @classmethod
    def unpack(cls, payload: bytes) -> "LoadAck":
        return cls(*struct.unpack("<BIH", _need("LOAD reply", payload, 7)))


@dataclasses.dataclass(frozen=True)
class Step:
    """STEP: feed one token, run one decoding step. Layout: token u16."""

    token: int

    def pack(self) -> bytes:
        return struct.pack("<H", _u("token", self.token, 16))

    @classmethod
    def unpack(cls, payload: bytes) -> "Step":
        return cls(*struct.unpack("<H", _need("STEP", payload, 2)))


@dataclasses.dataclass(frozen=True)
class Generate:
    """GENERATE: feed ``token``, then ``count`` greedy steps, each fed the previous argmax.

    Layout: token u16, count u16. The device sends one TOPK per step (ids[0]
    is the token it feeds next), then GENERATE_DONE.
    """

    token: int
    count: int

    def pack(self) -> bytes:
        return struct.pack("<HH", _u("token", self.token, 16), _u("count", self.count, 16))

    @classmethod
    def unpack(cls, payload: bytes) -> "Generate":
        return cls(*struct.unpack("<HH", _need("GENERATE", payload, 4)))


@dataclasses.dataclass(frozen=True)
class GenerateDone:
    """GENERATE_DONE: count u16 (steps completed)."""

    count: int

    def pack(self) -> bytes:
        return struct.pack("<H", _u("count", self.count, 16))

    @classmethod
    def unpack(cls, payload: bytes) -> "GenerateDone":
        return cls(*struct.unpack("<H", _need("GENERATE_DONE", payload, 2)))


@dataclasses.dataclass(frozen=True)
class TopK:
    """TOPK: the k best candidates of one step, best first, and the head's scale.

    Layout: k u8, scale_m u16, scale_e i16, ids k x u16, accs k x i32.
    ``accs`` are the LM head's raw accumulators; the logit of candidate j is
    ``accs[j] * scale_m * 2**(scale_e - 16)`` (docs/numerics.md, the head).
    Ties are ordered by lower id first.
    """

    ids: tuple[int, ...]
    accs: tuple[int, ...]
    scale_m: int
    scale_e: int

    def __post_init__(self):
        object.__setattr__(self, "ids", tuple(self.ids))
        object.__setattr__(self, "accs", tuple(self.accs))
        if len(self.ids) != len(self.accs):
            raise ProtocolError(f"TOPK needs as many ids as accs, got {len(self.ids)} and {len(self.accs)}")
        if not 1 <= len(self.ids) <= 255:
            raise ProtocolError(f"TOPK k must be in [1, 255], got {len(self.ids)}")

    @property
    def k(self) -> int:
        return len(self.ids)

    def logits(self) -> list[float]:
        return [a * self.scale_m * 2.0 ** (self.scale_e - 16) for a in self.accs]

    def pack(self) -> bytes:
        ids = [_u(f"ids[{j}]", t, 16) for j, t in enumerate(self.ids)]
        accs = [_s(f"accs[{j}]", a, 32) for j, a in enumerate(self.accs)]
        return (struct.pack("<BHh", self.k, _u("scale_m", self.scale_m, 16), _s("scale_e", self.scale_e, 16))
                + struct.pack(f"<{self.k}H", *ids) + struct.pack(f"<{self.k}i", *accs))

    @classmethod
    def unpack(cls, payload: bytes) -> "TopK":
        payload = _need("TOPK", payload, 5, exact=False)
        k, m, e = struct.unpack_from("<BHh", payload)
        payload = _need(f"TOPK (k={k})", payload, 5 + 6 * k)
        ids = struct.unpack_from(f"<{k}H", payload, 5)
        accs = struct.unpack_from(f"<{k}i", payload, 5 + 2 * k)
        return cls(ids, accs, m, e)


@dataclasses.dataclass(frozen=True)
class MemoryInfo:
    """One memory in INFO: id u8, width u16 (bits per word), depth u32 (words)."""

    mem: int
    width: int
    depth: int


@dataclasses.dataclass(frozen=True)
class Info:
    """INFO reply: what this bitstream is and what it holds.

    Layout (34 bytes, then 7 per memory)::

        protocol_version u8, hw_version u16, flags u8 (bit 0: a model is set),
        max_payload u16, rows u16, cols u16, vec_lanes u16, topk u8,
        clock_hz u32, model_hash 16 bytes (zeros: none),
        n u8, then n x (mem u8, width u16, depth u32)
    """

    protocol_version: int
    hw_version: int
    flags: int
    max_payload: int
    rows: int
    cols: int
    vec_lanes: int
    topk: int
    clock_hz: int
    model_hash: bytes
    memories: tuple[MemoryInfo, ...] = ()

    FIXED = struct.Struct("<BHBHHHHBI16sB")
    FLAG_MODEL = 0x01

    def __post_init__(self):
        object.__setattr__(self, "memories", tuple(self.memories))
        object.__setattr__(self, "model_hash", bytes(self.model_hash))
        if len(self.model_hash) != MODEL_HASH_BYTES:
            raise ProtocolError(f"model_hash must be {MODEL_HASH_BYTES} bytes, got {len(self.model_hash)}")

    @property
    def lanes(self) -> int:
        return self.rows * self.cols

    @property
    def model_set(self) -> bool:
        return bool(self.flags & self.FLAG_MODEL)

    def pack(self) -> bytes:
        head = self.FIXED.pack(_u("protocol_version", self.protocol_version, 8), _u("hw_version", self.hw_version, 16),
                               _u("flags", self.flags, 8), _u("max_payload", self.max_payload, 16),
                               _u("rows", self.rows, 16), _u("cols", self.cols, 16),
                               _u("vec_lanes", self.vec_lanes, 16), _u("topk", self.topk, 8),
                               _u("clock_hz", self.clock_hz, 32), self.model_hash,
                               _u("memory count", len(self.memories), 8))
        return head + b"".join(struct.pack("<BHI", _u("mem", m.mem, 8), _u("width", m.width, 16),
                                           _u("depth", m.depth, 32)) for m in self.memories)

    @classmethod
    def unpack(cls, payload: bytes) -> "Info":
        payload = _need("INFO", payload, cls.FIXED.size, exact=False)
        *fields, n = cls.FIXED.unpack_from(payload)
        payload = _need(f"INFO ({n} memories)", payload, cls.FIXED.size + 7 * n)
        mems = tuple(MemoryInfo(*struct.unpack_from("<BHI", payload, cls.FIXED.size + 7 * j)) for j in range(n))
        return cls(*fields, memories=mems)


@dataclasses.dataclass(frozen=True)
class Counters:
    """COUNTERS reply: n u8, then n x u64 (names: :data:`COUNTER_NAMES`, extras unnamed)."""

    values: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "values", tuple(self.values))

    def as_dict(self) -> dict[str, int]:
        names = list(COUNTER_NAMES) + [f"counter{j}" for j in range(len(COUNTER_NAMES), len(self.values))]
        return dict(zip(names, self.values))

    def pack(self) -> bytes:
        return struct.pack("<B", _u("counter count", len(self.values), 8)) + b"".join(
            struct.pack("<Q", _u(f"values[{j}]", v, 64)) for j, v in enumerate(self.values))

    @classmethod
    def unpack(cls, payload: bytes) -> "Counters":
        payload = _need("COUNTERS", payload, 1, exact=False)
        n = payload[0]
        payload = _need(f"COUNTERS ({n} values)", payload, 1 + 8 * n)
        return cls(struct.unpack_from(f"<{n}Q", payload, 1))


@dataclasses.dataclass(frozen=True)
class ErrorReply:
    """ERROR reply: code u8, command u8 (the opcode it answers, 0xFF: none), detail u32."""

    code: int
    command: int = 0xFF
    detail: int = 0

    def pack(self) -> bytes:
        return struct.pack("<BBI", _u("code", self.code, 8), _u("command", self.command, 8),
                           _u("detail", self.detail, 32))

    @classmethod
    def unpack(cls, payload: bytes) -> "ErrorReply":
        code, command, detail = struct.unpack("<BBI", _need("ERROR", payload, 6))
        try:
            code = ErrorCode(code)
        except ValueError:
            pass            # a newer device's code: keep the number
        return cls(code, command, detail)

    def __str__(self) -> str:
        name = self.code.name if isinstance(self.code, ErrorCode) else f"0x{self.code:02X}"
        cmd = Command(self.command).name if self.command in Command._value2member_map_ else f"0x{self.command:02X}"
        return f"device error {name} (command {cmd}, detail {self.detail})"


@dataclasses.dataclass(frozen=True)
class SetModel:
    """SET_MODEL: model_hash (16 bytes) of the images just loaded and the model's vocabulary size.

    INFO reports the hash; STEP and GENERATE reject tokens ``>= vocab`` with BAD_TOKEN.
    """

    model_hash: bytes
    vocab: int = 0

    def pack(self) -> bytes:
        h = bytes(self.model_hash)
        if len(h) != MODEL_HASH_BYTES:
            raise ProtocolError(f"model_hash must be {MODEL_HASH_BYTES} bytes, got {len(h)}")
        if not 1 <= self.vocab <= MAX_TOKEN + 1:
            raise ProtocolError(f"vocab must be in 1..{MAX_TOKEN + 1}, got {self.vocab}")
        return h + struct.pack("<I", self.vocab)

    @classmethod
    def unpack(cls, payload: bytes) -> "SetModel":
        b = _need("SET_MODEL", payload, MODEL_HASH_BYTES + 4)
        return cls(b[:MODEL_HASH_BYTES], struct.unpack_from("<I", b, MODEL_HASH_BYTES)[0])
