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

Encoding: word 0 holds the opcode in bits [7:0]; its other fields give the
instruction's size. Operands follow in the next words (bit positions in
each class's docstring and in docs/isa.md); unnamed bits are reserved and
must be zero. :func:`decode` checks every field and names the bad word;
:func:`disassemble` prints a listing. Addresses are word addresses in the
named memory: vmem addresses and lengths are 24 bits, cmem and wmem
addresses 32 bits.
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


VADDR_BITS = 24     #: vmem addresses (src, dst, aux)
LEN_BITS = 24       #: vector lengths and segment row counts
ADDR_BITS = 32      #: cmem and wmem addresses


def _reserved(pc: int, word: int, mask: int, what: str) -> None:
    if word & mask:
        raise IsaError(f"word {pc}: reserved bits of {what} are not zero (0x{word & mask:016x})")


@dataclasses.dataclass(frozen=True)
class Embed:
    """``vmem[dst + j] = sat32(rshr(code[token, j] * m[token], -e[token]))`` for j < n.

    ``token`` is the token of the current step (given by the host). Codes
    are row-major at ``codes`` in cmem, each row starting on a word: int16
    one per word (row stride ``n`` words), or int8 two per word, low byte
    first (row stride ``ceil(n / 2)`` words). The PF scale of row v is at
    ``scales + 2 v``: mantissa (uint16), then exponent (int16).

    Words: ``w0 = op[7:0] | code16[8] | dst[39:16] | n[63:40]``,
    ``w1 = codes[31:0] | scales[63:32]``.
    """

    dst: int
    n: int
    codes: int
    scales: int
    code_bits: int

    def __post_init__(self):
        if self.code_bits not in (8, 16):
            raise IsaError(f"EMBED code_bits must be 8 or 16, got {self.code_bits!r}")
        if self.n == 0:
            raise IsaError("EMBED needs n >= 1")

    @property
    def size(self) -> int:
        return 2

    def encode(self) -> list[int]:
        w0 = (Op.EMBED | int(self.code_bits == 16) << 8 | _field("dst", self.dst, VADDR_BITS) << 16
              | _field("n", self.n, LEN_BITS) << 40)
        w1 = _field("codes", self.codes, ADDR_BITS) | _field("scales", self.scales, ADDR_BITS) << 32
        return [w0, w1]


@dataclasses.dataclass(frozen=True)
class Quant:
    """One quantizer of a LINEAR: folded weight ``cv`` at cmem ``cv`` and PF constant ``k``.

    Word: ``cv[31:0] | k_m[47:32] | k_e[63:48]`` (``k_e`` signed).
    """

    cv: int
    k_m: int
    k_e: int

    def encode(self) -> int:
        return (_field("cv", self.cv, ADDR_BITS) | _field("k_m", self.k_m, 16) << 32
                | _field("k_e", self.k_e, 16, True) << 48)


@dataclasses.dataclass(frozen=True)
class Segment:
    """Rows ``rows`` of the tile stream that use quantizer ``q``.

    Word: ``q[1:0] | rows[31:8]``, other bits zero.
    """

    q: int
    rows: int

    def encode(self) -> int:
        if self.rows == 0:
            raise IsaError("segment needs rows >= 1")
        return _field("q", self.q, 2) | _field("rows", self.rows, LEN_BITS) << 8


@dataclasses.dataclass(frozen=True)
class Linear:
    """One BitLinear input group and its epilogue (docs/isa.md).

    The weights are one tile stream at ``wmem`` (word address): for each row
    block of ``rows_per_tile`` rows, for each segment in order, for each
    column block: one tile. So segments advance together, one row block at a
    time, and the epilogue receives the same channels of every segment
    together.

    Words: ``w0 = op[7:0] | epilogue[11:8] | nquant[13:12] | nseg[15:14] |
    unit_cu[16] | has_lb[17] | n[47:24]``; ``w1 = wmem[31:0] | cu[63:32]``;
    ``w2 = src[23:0] | dst[47:24]``; ``w3 = aux[23:0] | lb[63:32]``; then one
    word per quantizer and one per segment. Unnamed bits are zero.
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
        if self.lb is not None and self.epilogue != Epilogue.MLGRU:
            raise IsaError(f"lower bounds belong to the MLGRU epilogue, not {self.epilogue.name}")
        if self.n == 0:
            raise IsaError("LINEAR needs n >= 1")

    @property
    def size(self) -> int:
        return 4 + len(self.quants) + len(self.segments)

    @property
    def rows(self) -> int:
        return self.segments[0].rows

    def encode(self) -> list[int]:
        w0 = (Op.LINEAR | _field("epilogue", int(self.epilogue), 4) << 8
              | _field("nquant", len(self.quants), 2) << 12 | _field("nseg", len(self.segments), 2) << 14
              | int(self.cu is None) << 16 | int(self.lb is not None) << 17
              | _field("n", self.n, LEN_BITS) << 24)
        w1 = _field("wmem", self.wmem, ADDR_BITS) | _field("cu", self.cu or 0, ADDR_BITS) << 32
        w2 = _field("src", self.src, VADDR_BITS) | _field("dst", self.dst, VADDR_BITS) << 24
        w3 = _field("aux", self.aux, VADDR_BITS) | _field("lb", self.lb or 0, ADDR_BITS) << 32
        return [w0, w1, w2, w3] + [q.encode() for q in self.quants] + [s.encode() for s in self.segments]


@dataclasses.dataclass(frozen=True)
class End:
    """The token is done. Word: ``0x0f``, other bits zero."""

    @property
    def size(self) -> int:
        return 1

    def encode(self) -> list[int]:
        return [int(Op.END)]


Instruction = Embed | Linear | End

_M24, _M32 = (1 << 24) - 1, (1 << 32) - 1


def encode(program: list[Instruction]) -> list[int]:
    """Program -> 64-bit words."""
    words = []
    for ins in program:
        words += ins.encode()
    return words


def _decode_one(words: list[int], pc: int) -> tuple[Instruction, int]:
    w0 = words[pc]
    if not isinstance(w0, int) or not 0 <= w0 < 1 << 64:
        raise IsaError(f"word {pc}: {w0!r} is not a 64-bit word")
    op = w0 & 0xFF
    if op == Op.EMBED:
        if pc + 2 > len(words):
            raise IsaError(f"word {pc}: EMBED truncated (needs 2 words, {len(words) - pc} left)")
        w1 = words[pc + 1]
        _reserved(pc, w0, 0xFE00, "EMBED")
        return Embed(dst=_get(w0, 16, 24), n=_get(w0, 40, 24), code_bits=16 if _get(w0, 8, 1) else 8,
                     codes=_get(w1, 0, 32), scales=_get(w1, 32, 32)), 2
    if op == Op.LINEAR:
        nq, ns = _get(w0, 12, 2), _get(w0, 14, 2)
        need = 4 + nq + ns
        if pc + need > len(words):
            raise IsaError(f"word {pc}: LINEAR truncated (needs {need} words, {len(words) - pc} left)")
        w1, w2, w3 = words[pc + 1:pc + 4]
        _reserved(pc, w0, (0x3F << 18) | (0xFFFF << 48), "LINEAR word 0")
        _reserved(pc, w2, 0xFFFF << 48, "LINEAR word 2")
        _reserved(pc, w3, 0xFF << 24, "LINEAR word 3")
        qs = tuple(Quant(cv=_get(w, 0, 32), k_m=_get(w, 32, 16), k_e=_get(w, 48, 16, True))
                   for w in words[pc + 4:pc + 4 + nq])
        segw = words[pc + 4 + nq:pc + need]
        for w in segw:
            _reserved(pc, w, 0xFC | (_M32 << 32), "a LINEAR segment word")
        ss = tuple(Segment(q=_get(w, 0, 2), rows=_get(w, 8, 24)) for w in segw)
        try:
            epi = Epilogue(_get(w0, 8, 4))
        except ValueError:
            raise IsaError(f"word {pc}: unknown epilogue {_get(w0, 8, 4)}") from None
        return Linear(src=_get(w2, 0, 24), n=_get(w0, 24, 24),
                      cu=None if _get(w0, 16, 1) else _get(w1, 32, 32), wmem=_get(w1, 0, 32),
                      quants=qs, segments=ss, epilogue=epi, dst=_get(w2, 24, 24), aux=_get(w3, 0, 24),
                      lb=_get(w3, 32, 32) if _get(w0, 17, 1) else None), need
    if op == Op.END:
        _reserved(pc, w0, ~0xFF & ((1 << 64) - 1), "END")
        return End(), 1
    raise IsaError(f"word {pc}: unknown opcode 0x{op:02x}")


def decode(words: list[int]) -> list[Instruction]:
    """64-bit words -> program; raises :class:`IsaError` naming the bad word."""
    words = [int(w) for w in words]
    out, pc = [], 0
    while pc < len(words):
        try:
            ins, size = _decode_one(words, pc)
        except IsaError as e:
            msg = str(e)
            raise IsaError(msg if msg.startswith("word ") else f"word {pc}: {msg}") from None
        out.append(ins)
        pc += size
    return out


def _fmt(ins: Instruction) -> str:
    if isinstance(ins, Embed):
        return (f"EMBED   dst=v{ins.dst} n={ins.n} codes=c{ins.codes} scales=c{ins.scales} "
                f"bits={ins.code_bits}")
    if isinstance(ins, Linear):
        parts = [f"LINEAR  {ins.epilogue.name:<5} src=v{ins.src} n={ins.n}",
                 f"cu={'unit' if ins.cu is None else f'c{ins.cu}'}", f"wmem=w{ins.wmem}", f"dst=v{ins.dst}"]
        if ins.epilogue in (Epilogue.ADD, Epilogue.MLGRU):
            parts.append(f"aux=v{ins.aux}")
        if ins.lb is not None:
            parts.append(f"lb=c{ins.lb}")
        parts += [f"q{i}=(cv=c{q.cv} k={q.k_m}*2^{q.k_e})" for i, q in enumerate(ins.quants)]
        parts += [f"seg{i}=(q{s.q} rows={s.rows})" for i, s in enumerate(ins.segments)]
        return " ".join(parts)
    return "END"


def disassemble(words: list[int], labels: list[str] | None = None) -> str:
    """Human-readable listing: one line per instruction, ``word-address  mnemonic fields  ; label``.

    Memory prefixes: ``v`` vmem, ``c`` cmem, ``w`` wmem (word addresses, decimal).
    """
    lines, pc = [], 0
    for i, ins in enumerate(decode(words)):
        text = f"{pc:5d}  {_fmt(ins)}"
        if labels is not None and i < len(labels) and labels[i]:
            text += f"  ; {labels[i]}"
        lines.append(text)
        pc += ins.size
    return "\n".join(lines) + "\n"
