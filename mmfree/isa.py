"""The instruction set the sequencer runs (docs/isa.md is its prose form).

A program is a list of 64-bit words. Three instructions cover a whole
``hgrn_bit`` token step; one bitstream runs any model whose program and
memories fit:

``EMBED``   token row of the embedding -> a V32 vector in vmem.
``LINEAR``  one BitLinear input group: statistics and int8 quantization of a
            vmem vector, the ternary matrices of up to three projections
            streamed from wmem as one tile stream, dequantization, and a
            fused epilogue (write, residual add, MLGRU update, GLU product,
            or top-k for the LM head).
``END``     the token is done; the top-k of the last TOPK epilogue is the result.

Encoding: word 0 holds the opcode in bits [7:0]. Multi-word instructions
carry their operands in the following words; :func:`decode` checks every
field. Addresses are word addresses in the named memory.
"""

from __future__ import annotations

import dataclasses
import enum

from .errors import MmfreeError


class Op(enum.IntEnum):
    EMBED = 0x01
    LINEAR = 0x02
    END = 0x0F


class Epilogue(enum.IntEnum):
    """What happens to dequantized outputs as they stream out of the array."""

    WRITE = 0   #: dst[j] = y_j
    ADD = 1     #: dst[j] = sat32(aux[j] + y_j)  (residual)
    MLGRU = 2   #: segments i, f, g: update h (at aux), dst[j] = g_j * silu(h_j)
    GLU = 3     #: segments gate, up: dst[j] = silu(gate_j) * up_j
    TOPK = 4    #: LM head: raw accumulators -> top-k (no dequantization)


class IsaError(MmfreeError):
    """A program word or field is out of range or malformed."""


def _field(name: str, value: int, bits: int, signed: bool = False) -> int:
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not isinstance(value, int) or not lo <= value <= hi:
        raise IsaError(f"field {name}={value!r} does not fit {bits} {'signed' if signed else 'unsigned'} bits")
    return value & ((1 << bits) - 1)


def _get(word: int, lsb: int, bits: int, signed: bool = False) -> int:
    v = (word >> lsb) & ((1 << bits) - 1)
    if signed and v >> (bits - 1):
        v -= 1 << bits
    return v


@dataclasses.dataclass(frozen=True)
class Embed:
    """``vmem[dst + j] = sat32(rshr(code[token, j] * m[token], -e[token]))`` for j < n.

    Codes are row-major at ``codes`` in cmem (int16 one per word, or int8 two
    per word, low byte first); the PF scale of row v is at ``scales + 2 v``
    (mantissa, then exponent as int16).
    """

    dst: int
    n: int
    codes: int
    scales: int
    code_bits: int

    def encode(self) -> list[int]:
        w0 = (Op.EMBED | _field("dst", self.dst, 16) << 8 | _field("n", self.n, 16) << 24
              | _field("code_bits16", {8: 0, 16: 1}.get(self.code_bits, -1), 1) << 40)
        w1 = _field("codes", self.codes, 32) | _field("scales", self.scales, 32) << 32
        return [w0, w1]


@dataclasses.dataclass(frozen=True)
class Quant:
    """One quantizer of a LINEAR: folded weight ``cv`` at cmem ``cv`` and PF constant ``k``."""

    cv: int
    k_m: int
    k_e: int

    def encode(self) -> int:
        return _field("cv", self.cv, 32) | _field("k_m", self.k_m, 16) << 32 | _field("k_e", self.k_e, 16, True) << 48


@dataclasses.dataclass(frozen=True)
class Segment:
    """Rows ``rows`` of the tile stream that use quantizer ``q``."""

    q: int
    rows: int

    def encode(self) -> int:
        return _field("q", self.q, 2) | _field("rows", self.rows, 24) << 8


@dataclasses.dataclass(frozen=True)
class Linear:
    """One BitLinear input group and its epilogue (docs/isa.md).

    The weights are one tile stream at ``wmem`` (word address): for each row
    block of ``rows_per_tile`` rows, for each segment in order, for each
    column block: one tile. So segments advance together, one row block at a
    time, and the epilogue receives the same channels of every segment
    together.
    """

    src: int
    n: int
    cu: int | None          # cmem address of the RMS weight; None = unit
    wmem: int
    quants: tuple[Quant, ...]
    segments: tuple[Segment, ...]
    epilogue: Epilogue
    dst: int
    aux: int = 0            # ADD: residual source; MLGRU: state h
    lb: int | None = None   # MLGRU: cmem address of P16 lower bounds

    def __post_init__(self):
        if not 1 <= len(self.quants) <= 3:
            raise IsaError(f"LINEAR needs 1 to 3 quantizers, got {len(self.quants)}")
        if not 1 <= len(self.segments) <= 3:
            raise IsaError(f"LINEAR needs 1 to 3 segments, got {len(self.segments)}")
        for s in self.segments:
            if s.q >= len(self.quants):
                raise IsaError(f"segment uses quantizer {s.q}, only {len(self.quants)} defined")
        rows = {s.rows for s in self.segments}
        if len(rows) != 1:
            raise IsaError(f"segments must have equal row counts, got {sorted(rows)}")
        want = {Epilogue.MLGRU: 3, Epilogue.GLU: 2}.get(self.epilogue, 1)
        if len(self.segments) != want:
            raise IsaError(f"epilogue {self.epilogue.name} needs {want} segments, got {len(self.segments)}")

    def encode(self) -> list[int]:
        w0 = (Op.LINEAR | _field("epilogue", int(self.epilogue), 4) << 8
              | _field("nquant", len(self.quants), 2) << 12 | _field("nseg", len(self.segments), 2) << 14
              | _field("unit_cu", int(self.cu is None), 1) << 16 | _field("has_lb", int(self.lb is not None), 1) << 17
              | _field("src", self.src, 16) << 24 | _field("n", self.n, 24) << 40)
        w1 = _field("wmem", self.wmem, 32) | _field("cu", self.cu or 0, 32) << 32
        w2 = _field("dst", self.dst, 16) | _field("aux", self.aux, 16) << 16 | _field("lb", self.lb or 0, 32) << 32
        return [w0, w1, w2] + [q.encode() for q in self.quants] + [s.encode() for s in self.segments]


@dataclasses.dataclass(frozen=True)
class End:
    def encode(self) -> list[int]:
        return [int(Op.END)]


Instruction = Embed | Linear | End


def encode(program: list[Instruction]) -> list[int]:
    """Program -> 64-bit words."""
    words = []
    for ins in program:
        words += ins.encode()
    return words


def decode(words: list[int]) -> list[Instruction]:
    """64-bit words -> program; raises :class:`IsaError` naming the bad word."""
    out, pc = [], 0
    while pc < len(words):
        w0 = words[pc]
        op = w0 & 0xFF
        need = 1
        try:
            if op == Op.EMBED:
                need = 2
                w1 = words[pc + 1]
                out.append(Embed(dst=_get(w0, 8, 16), n=_get(w0, 24, 16), code_bits=16 if _get(w0, 40, 1) else 8,
                                 codes=_get(w1, 0, 32), scales=_get(w1, 32, 32)))
            elif op == Op.LINEAR:
                nq, ns = _get(w0, 12, 2), _get(w0, 14, 2)
                need = 3 + nq + ns
                w1, w2 = words[pc + 1], words[pc + 2]
                qs = tuple(Quant(cv=_get(w, 0, 32), k_m=_get(w, 32, 16), k_e=_get(w, 48, 16, True))
                           for w in words[pc + 3:pc + 3 + nq])
                ss = tuple(Segment(q=_get(w, 0, 2), rows=_get(w, 8, 24)) for w in words[pc + 3 + nq:pc + need])
                out.append(Linear(src=_get(w0, 24, 16), n=_get(w0, 40, 24),
                                  cu=None if _get(w0, 16, 1) else _get(w1, 32, 32), wmem=_get(w1, 0, 32),
                                  quants=qs, segments=ss, epilogue=Epilogue(_get(w0, 8, 4)),
                                  dst=_get(w2, 0, 16), aux=_get(w2, 16, 16),
                                  lb=_get(w2, 32, 32) if _get(w0, 17, 1) else None))
            elif op == Op.END:
                out.append(End())
            else:
                raise IsaError(f"word {pc}: unknown opcode 0x{op:02x}")
        except IndexError:
            raise IsaError(f"word {pc}: instruction truncated (needs {need} words)") from None
        except ValueError as e:
            raise IsaError(f"word {pc}: {e}") from None
        pc += need
    return out
