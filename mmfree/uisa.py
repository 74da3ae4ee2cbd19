"""The serial core's micro-instruction set: encoding, an assembler and a disassembler.

The iCEBreaker's serial core (docs/ice40-core.md) is a small 32-bit
processor with a ternary matrix engine. Its firmware (:mod:`mmfree.firmware`)
interprets the compiled program (docs/isa.md) from pmem; the program, the
images and the numerics are the same as on every other target. This module
defines the micro-instructions once: :mod:`mmfree.model.serial` executes them
(the instruction-set simulator the hardware is held to) and
:mod:`mmfree.hw.ucpu` implements them.

Machine state
-------------
``r0 .. r31``  32-bit registers; ``r0`` reads as zero and ignores writes.
``P``          64-bit product accumulator (``MUL``, ``MAC``, read by ``SHRP``).
``pc``         instruction address in the firmware ROM.

Word format (32 bits)::

    [5:0] op   [10:6] rd   [15:11] ra   [20:16] rb   [31:21] x11
    I-type:    [31:16] imm16 (in place of rb and x11)

Shifts (``SHR``, ``SHRP``, ``MULS``) take ``x11`` as ``[0]`` round,
``[2:1]`` mode, ``[3]`` reserved (0), ``[10:4]`` ``imm7`` (signed); the
amount is ``s = rb + imm7`` for ``SHR``/``SHRP`` and ``s = imm7`` for
``MULS``. With ``X`` the 64-bit source (``sext(ra)``, ``P`` or the exact
product ``ra * rb``):

* ``s >= 0``: ``floor(X / 2^s)``, or with round ``floor(X / 2^s + 1/2)``
  (round half up, docs/numerics.md section 1); ``s = 0`` is ``X``.
* ``s < 0``: ``X * 2^-s`` exactly, where a 64-bit source (``P``, a
  product) is first saturated to 32 bits.

then ``mode`` 0 wraps to 32 bits, 1 saturates to 32 bits, 2 clamps to
``[-128, 127]``. Valid amounts: ``[-32, 31]`` for a register source,
``[-32, 63]`` for ``P`` and products (the simulator raises outside them).
"""

from __future__ import annotations

import dataclasses
import enum

__all__ = ["Op", "Mode", "Asm", "Insn", "decode", "disassemble", "NREGS", "ROM_WORDS",
           "encode", "MASK32"]

NREGS = 32
ROM_WORDS = 512          #: firmware ROM: 512 x 32 bits (four iCE40 block RAMs)
MASK32 = (1 << 32) - 1


class Op(enum.IntEnum):
    # R-type ALU: rd = ra OP rb
    ADD = 0x01
    SUB = 0x02
    AND = 0x03
    OR = 0x04
    XOR = 0x05
    MIN = 0x06       #: signed minimum
    MAX = 0x07       #: signed maximum
    MAXABS = 0x08    #: rd = max(ra, |rb|), unsigned (|-2^31| = 2^31)
    BITLEN = 0x09    #: rd = bitlen(ra) of ra as unsigned (0 for 0)
    ADDS = 0x0A      #: rd = sat32(ra + rb)
    # I-type ALU
    ADDI = 0x10      #: rd = ra + sext(imm16)
    ANDI = 0x11      #: rd = ra & zext(imm16)
    ORI = 0x12       #: rd = ra | zext(imm16)
    LUI = 0x13       #: rd = imm16 << 16
    # shifts and products
    SHR = 0x18       #: rd = shift(sext(ra), rb + imm7)
    SHRP = 0x19      #: rd = shift(P, rb + imm7)
    MUL = 0x1A       #: P = ra * rb (signed, exact)
    MAC = 0x1B       #: P = P + ra * rb
    MULI = 0x1C      #: P = ra * sext(imm16)
    MULS = 0x1D      #: rd = shift(ra * rb, imm7); P unchanged
    # memories, address ra + sext(imm16)
    LDV = 0x20       #: rd = vmem[a] (32 bits)
    LDC = 0x21       #: rd = sext(cmem[a]) (16 bits)
    LDCU = 0x22      #: rd = zext(cmem[a])
    LDP = 0x23       #: rd = pmem quarter a: bits [16(a%4)+15 : 16(a%4)] of program word a // 4
    LDS = 0x24       #: rd = sigmoid table T[a], a in [0, 1024] (P16, 17 bits)
    LDIO = 0x25      #: rd = io[a]: 0 the step's token
    STV = 0x28       #: vmem[a] = rd
    STQ = 0x29       #: qbuf byte a = rd[7:0]: slot a[9:8], word a[7:2], lane a[1:0]
    # the matrix engine and the result port
    MCFG = 0x2C      #: engine: wmem pointer = ra, geometry = rb (ncb [7:0], nseg [9:8], slots [17:12])
    MATRIX = 0x2D    #: one row block (blocks until its accumulators are in vmem ABUF)
    RES = 0x2E       #: result beat: id = ra[15:0], acc = rb[23:0], present = ra >= 0, last = x11[0]
    SCALE = 0x2F     #: head scale m = ra[15:0], e = rb[17:0] (sent with every result beat)
    # control: B* compare ra, rb and go to x11
    BEQ = 0x30
    BNE = 0x31
    BLT = 0x32       #: signed
    BGE = 0x33       #: signed
    BLTU = 0x34      #: unsigned
    BGEU = 0x35      #: unsigned
    JMP = 0x38       #: pc = x11
    JAL = 0x39       #: rd = pc + 1; pc = x11
    JR = 0x3A        #: pc = ra
    PHASE = 0x3C     #: cycle-counter class = x11 (docs/protocol.md counters)
    ERR = 0x3E       #: set the step's sticky error flag
    HALT = 0x3F      #: the step (or reset) is done; the core goes idle


class Mode(enum.IntEnum):
    WRAP = 0
    SAT = 1
    CLAMP8 = 2


R_TYPE = {Op.ADD, Op.SUB, Op.AND, Op.OR, Op.XOR, Op.MIN, Op.MAX, Op.MAXABS, Op.BITLEN, Op.ADDS,
          Op.SHR, Op.SHRP, Op.MUL, Op.MAC, Op.MULS, Op.MCFG, Op.MATRIX, Op.RES, Op.SCALE,
          Op.BEQ, Op.BNE, Op.BLT, Op.BGE, Op.BLTU, Op.BGEU, Op.JMP, Op.JAL, Op.JR, Op.PHASE, Op.ERR, Op.HALT}
I_TYPE = {Op.ADDI, Op.ANDI, Op.ORI, Op.LUI, Op.MULI, Op.LDV, Op.LDC, Op.LDCU, Op.LDP, Op.LDS, Op.LDIO,
          Op.STV, Op.STQ}
SHIFTS = {Op.SHR, Op.SHRP, Op.MULS}
BRANCHES = {Op.BEQ, Op.BNE, Op.BLT, Op.BGE, Op.BLTU, Op.BGEU}
assert R_TYPE.isdisjoint(I_TYPE) and R_TYPE | I_TYPE == set(Op)


@dataclasses.dataclass(frozen=True)
class Insn:
    """One decoded micro-instruction (fields that the opcode does not use are 0)."""
    op: Op
    rd: int = 0
    ra: int = 0
    rb: int = 0
    x11: int = 0
    imm16: int = 0          #: sign-extended except for ANDI, ORI, LUI (zero-extended)

    @property
    def round(self) -> bool:
        return bool(self.x11 & 1)

    @property
    def mode(self) -> Mode:
        return Mode((self.x11 >> 1) & 3)

    @property
    def imm7(self) -> int:
        v = (self.x11 >> 4) & 0x7F
        return v - 0x80 if v & 0x40 else v


def _sext(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def shift_x11(amount: int = 0, round: bool = False, mode: Mode = Mode.WRAP) -> int:
    """The ``x11`` field of a shift with immediate ``amount``."""
    if not -64 <= amount <= 63:
        raise ValueError(f"shift immediate {amount} outside [-64, 63]")
    return (int(round) | (int(mode) << 1) | ((amount & 0x7F) << 4))


def encode(i: Insn) -> int:
    for f, top in (("rd", NREGS), ("ra", NREGS), ("rb", NREGS)):
        if not 0 <= getattr(i, f) < top:
            raise ValueError(f"{i.op.name}: {f} = {getattr(i, f)} is not a register")
    w = int(i.op) | (i.rd << 6) | (i.ra << 11)
    if i.op in I_TYPE:
        if i.op in (Op.ANDI, Op.ORI, Op.LUI):
            if not 0 <= i.imm16 < 1 << 16:
                raise ValueError(f"{i.op.name}: immediate {i.imm16} outside [0, 65535]")
        elif not -(1 << 15) <= i.imm16 < 1 << 15:
            raise ValueError(f"{i.op.name}: immediate {i.imm16} outside [-32768, 32767]")
        return w | ((i.imm16 & 0xFFFF) << 16)
    if not 0 <= i.x11 < 1 << 11:
        raise ValueError(f"{i.op.name}: x11 = {i.x11} outside 11 bits")
    if i.op in SHIFTS and i.x11 & 0b1000:
        raise ValueError(f"{i.op.name}: x11 bit 3 is reserved")
    if i.op in SHIFTS and (i.x11 >> 1) & 3 == 3:
        raise ValueError(f"{i.op.name}: shift mode 3 is reserved")
    return w | (i.rb << 16) | (i.x11 << 21)


def decode(word: int) -> Insn:
    """Decode one ROM word; an unknown opcode raises ``ValueError``."""
    try:
        op = Op(word & 0x3F)
    except ValueError:
        raise ValueError(f"unknown micro-opcode {word & 0x3F:#04x} in word {word:#010x}") from None
    rd, ra = (word >> 6) & 31, (word >> 11) & 31
    if op in I_TYPE:
        imm = (word >> 16) & 0xFFFF
        if op not in (Op.ANDI, Op.ORI, Op.LUI):
            imm = _sext(imm, 16)
        return Insn(op, rd, ra, 0, 0, imm)
    return Insn(op, rd, ra, (word >> 16) & 31, (word >> 21) & 0x7FF, 0)


def disassemble(words, labels: dict[str, int] | None = None) -> str:
    names = {v: k for k, v in (labels or {}).items()}
    out = []
    for pc, w in enumerate(words):
        i = decode(w)
        if i.op in I_TYPE:
            args = f"r{i.rd}, r{i.ra}, {i.imm16}"
        elif i.op in SHIFTS:
            args = f"r{i.rd}, r{i.ra}, r{i.rb}, imm={i.imm7}, round={int(i.round)}, {i.mode.name.lower()}"
        elif i.op in BRANCHES:
            args = f"r{i.ra}, r{i.rb}, {names.get(i.x11, i.x11)}"
        elif i.op in (Op.JMP, Op.JAL):
            args = f"r{i.rd}, {names.get(i.x11, i.x11)}"
        else:
            args = f"r{i.rd}, r{i.ra}, r{i.rb}, {i.x11}"
        label = f"{names[pc]}:" if pc in names else ""
        out.append(f"{pc:4d} {w:08x} {label:14s} {i.op.name.lower():7s} {args}")
    return "\n".join(out)


class Asm:
    """A two-pass assembler: one method per instruction, labels as strings.

    Registers are plain integers 0..31. Branch and jump targets are label
    names, resolved by :meth:`assemble`.
    """

    def __init__(self):
        self._items: list[tuple[Insn, str | None, str]] = []
        self.labels: dict[str, int] = {}

    # --------------------------------------------------------------
    def label(self, name: str) -> None:
        if name in self.labels:
            raise ValueError(f"label {name!r} defined twice")
        self.labels[name] = len(self._items)

    def _emit(self, insn: Insn, target: str | None = None, field: str = "x11") -> None:
        encode(insn if target is None else dataclasses.replace(insn, **{field: 0}))   # field checks now
        self._items.append((insn, target, field))

    def assemble(self) -> list[int]:
        words = []
        for insn, target, field in self._items:
            if target is not None:
                if target not in self.labels:
                    raise ValueError(f"undefined label {target!r}")
                insn = dataclasses.replace(insn, **{field: self.labels[target]})
            words.append(encode(insn))
        if len(words) > ROM_WORDS:
            raise ValueError(f"firmware has {len(words)} words; the ROM holds {ROM_WORDS}")
        return words

    def __len__(self) -> int:
        return len(self._items)

    # -------------------------------------------------------------- ALU
    def _r(self, op, rd, ra, rb):
        self._emit(Insn(op, rd, ra, rb))

    def add(self, rd, ra, rb): self._r(Op.ADD, rd, ra, rb)
    def sub(self, rd, ra, rb): self._r(Op.SUB, rd, ra, rb)
    def and_(self, rd, ra, rb): self._r(Op.AND, rd, ra, rb)
    def or_(self, rd, ra, rb): self._r(Op.OR, rd, ra, rb)
    def xor(self, rd, ra, rb): self._r(Op.XOR, rd, ra, rb)
    def min(self, rd, ra, rb): self._r(Op.MIN, rd, ra, rb)
    def max(self, rd, ra, rb): self._r(Op.MAX, rd, ra, rb)
    def maxabs(self, rd, ra, rb): self._r(Op.MAXABS, rd, ra, rb)
    def bitlen(self, rd, ra): self._r(Op.BITLEN, rd, ra, 0)
    def adds(self, rd, ra, rb): self._r(Op.ADDS, rd, ra, rb)
    def mov(self, rd, ra): self._r(Op.ADD, rd, ra, 0)

    def _i(self, op, rd, ra, imm):
        self._emit(Insn(op, rd, ra, 0, 0, imm))

    def addi(self, rd, ra, imm): self._i(Op.ADDI, rd, ra, imm)
    def andi(self, rd, ra, imm): self._i(Op.ANDI, rd, ra, imm)
    def ori(self, rd, ra, imm): self._i(Op.ORI, rd, ra, imm)
    def lui(self, rd, imm): self._i(Op.LUI, rd, 0, imm)

    def la(self, rd, label: str) -> None:
        """rd = the ROM address of ``label`` (for ``JR``)."""
        self._emit(Insn(Op.ADDI, rd, 0, 0, 0, 0), label, "imm16")

    def li(self, rd, value: int) -> None:
        """Load a 32-bit constant (one or two instructions)."""
        value = _sext(value, 32)
        if -(1 << 15) <= value < 1 << 15:
            self.addi(rd, 0, value)
        else:
            u = value & MASK32
            self.lui(rd, u >> 16)
            if u & 0xFFFF:
                self.ori(rd, rd, u & 0xFFFF)

    # -------------------------------------------------------------- shifts, products
    def shr(self, rd, ra, rb=0, imm=0, round=False, mode=Mode.WRAP):
        self._emit(Insn(Op.SHR, rd, ra, rb, shift_x11(imm, round, mode)))

    def shrp(self, rd, rb=0, imm=0, round=False, mode=Mode.WRAP):
        self._emit(Insn(Op.SHRP, rd, 0, rb, shift_x11(imm, round, mode)))

    def muls(self, rd, ra, rb, imm=0, round=False, mode=Mode.WRAP):
        self._emit(Insn(Op.MULS, rd, ra, rb, shift_x11(imm, round, mode)))

    def mul(self, ra, rb): self._r(Op.MUL, 0, ra, rb)
    def mac(self, ra, rb): self._r(Op.MAC, 0, ra, rb)
    def muli(self, ra, imm): self._i(Op.MULI, 0, ra, imm)

    # -------------------------------------------------------------- memories
    def ldv(self, rd, ra, imm=0): self._i(Op.LDV, rd, ra, imm)
    def ldc(self, rd, ra, imm=0): self._i(Op.LDC, rd, ra, imm)
    def ldcu(self, rd, ra, imm=0): self._i(Op.LDCU, rd, ra, imm)
    def ldp(self, rd, ra, imm=0): self._i(Op.LDP, rd, ra, imm)
    def lds(self, rd, ra, imm=0): self._i(Op.LDS, rd, ra, imm)
    def ldio(self, rd, ra, imm=0): self._i(Op.LDIO, rd, ra, imm)
    def stv(self, rs, ra, imm=0): self._i(Op.STV, rs, ra, imm)
    def stq(self, rs, ra, imm=0): self._i(Op.STQ, rs, ra, imm)

    # -------------------------------------------------------------- engine, results
    def mcfg(self, ra, rb): self._r(Op.MCFG, 0, ra, rb)
    def matrix(self): self._r(Op.MATRIX, 0, 0, 0)
    def scale(self, ra, rb): self._r(Op.SCALE, 0, ra, rb)

    def res(self, ra, rb, last: bool):
        self._emit(Insn(Op.RES, 0, ra, rb, int(last)))

    # -------------------------------------------------------------- control
    def _b(self, op, ra, rb, target):
        self._emit(Insn(op, 0, ra, rb), target)

    def beq(self, ra, rb, t): self._b(Op.BEQ, ra, rb, t)
    def bne(self, ra, rb, t): self._b(Op.BNE, ra, rb, t)
    def blt(self, ra, rb, t): self._b(Op.BLT, ra, rb, t)
    def bge(self, ra, rb, t): self._b(Op.BGE, ra, rb, t)
    def bltu(self, ra, rb, t): self._b(Op.BLTU, ra, rb, t)
    def bgeu(self, ra, rb, t): self._b(Op.BGEU, ra, rb, t)
    def jmp(self, t): self._emit(Insn(Op.JMP), t)
    def jal(self, rd, t): self._emit(Insn(Op.JAL, rd), t)
    def jr(self, ra): self._r(Op.JR, 0, ra, 0)

    def phase(self, n: int): self._emit(Insn(Op.PHASE, x11=n))
    def err(self): self._r(Op.ERR, 0, 0, 0)
    def halt(self): self._r(Op.HALT, 0, 0, 0)
