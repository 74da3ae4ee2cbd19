"""The serial core's firmware: the program interpreter of docs/isa.md in micro-instructions.

The iCEBreaker's serial core (docs/ice40-core.md) has no fixed-function
sequencer: this firmware, in the micro-instruction set of
:mod:`mmfree.uisa`, fetches the compiled program from pmem and executes
EMBED, LINEAR (input stage, matrix row blocks on the engine, every
epilogue) and END with the exact arithmetic of docs/numerics.md. It is
built into the bitstream's ROM; :mod:`mmfree.model.serial` executes it and
the tests hold it to :class:`~mmfree.model.machine.GoldenMachine`.

Entry points: ROM word 0 runs one step (token from ``LDIO 0``), word 1 the
reset command (zero vmem). Both end in ``HALT``.

A program the firmware cannot run (unknown opcode, a LINEAR with no
quantizer, segment or row, an input longer than qbuf, an epilogue or
segment quantizer out of range, a vmem operand outside the model's vmem,
no END within pmem, END without a TOPK head) sets the step's error flag
and ends the step; the top-k beats are still sent (docs/protocol.md).
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

from mmfree import isa
from mmfree.protocol import COUNTER_NAMES
from mmfree.uisa import Asm, Mode, disassemble

__all__ = ["Firmware", "build", "TOPK", "MAX_INPUT"]

TOPK = 4                  #: candidates per step (the icebreaker target's topk)
MAX_INPUT = 256           #: qbuf: 3 slots x 64 words x 4 codes
VMEM_MODEL = 976          #: vmem words a program may use (model/serial.VMEM_SCRATCH)
TKS = 976                 #: the head's top-k, saved for END: accumulators +0..3, ids +4..7
HEADSEEN = 984            #: 1 once a TOPK LINEAR ran in this step
AMT = 985                 #: per quantizer q: the dequantization shift clamp(-e_S, -32, 63)
NEXT_PC = 988             #: pmem quarter of the instruction after the current LINEAR
ABUF = 992                #: engine accumulators: segment s, row r at ABUF + 5 s + r
SCR = 1008                #: per quantizer q: sh +0, R +3, M16 +6, m_S +9, e_S +12
PMEM_QUARTERS = 4 * 128
ROWS = 5

PH = {name: i for i, name in enumerate(COUNTER_NAMES)}

# registers --------------------------------------------------------------------------------
Z = 0
TOK, PC, N, SRC, DST, AUX, W0, SB = 1, 2, 3, 4, 5, 6, 7, 8
T0, T1, T2, T3, T4, T5, T6 = 9, 10, 11, 12, 13, 14, 15
SM = (16, 17, 18)             # epilogue: segment s's scale mantissa
SA = (19, 20, 21)             # epilogue: segment s's dequantization shift
UNIT = 22                     # statistics: the RMS weight is unit
BODY = 23                     # epilogue: ROM address of the per-row body
J, P0, P1, P2 = 24, 25, 26, 27   # loop index and pointers
K1, K2, K3 = 28, 29, 30       # sqrt_t, et, (divu) until the epilogues; then sigmoid clamps and 2^16
LR = 31                       # link register


@dataclasses.dataclass(frozen=True)
class Firmware:
    words: tuple[int, ...]
    labels: dict

    def listing(self) -> str:
        return disassemble(self.words, self.labels)


def _join16(a: Asm, rd: int, lo: int, hi: int) -> None:
    """rd = lo | hi << 16 (zero-extended 16-bit values; clobbers T6)."""
    a.shr(T6, hi, imm=-16)
    a.or_(rd, lo, T6)


def _field24(a: Asm, rd: int, q_lo: int, q_hi: int, off: int) -> None:
    """rd = bits [off, off + 24) of ``q_lo | q_hi << 16`` (off 0 or 8; clobbers T6)."""
    if off == 0:
        a.andi(T6, q_hi, 0xFF)
        a.shr(T6, T6, imm=-16)
        a.or_(rd, q_lo, T6)
    else:
        a.shr(T6, q_lo, imm=8)
        a.shr(rd, q_hi, imm=-8)
        a.or_(rd, rd, T6)


def _bitlen_p(a: Asm, rd: int, tmp: int) -> None:
    """rd = bitlen(P) for 0 <= P < 2^63 (clobbers ``tmp``)."""
    a.shrp(tmp, imm=32)
    a.shrp(rd, imm=0)
    a.bitlen(rd, rd)
    lbl = f"_bl{len(a)}"
    a.beq(tmp, Z, lbl)
    a.bitlen(rd, tmp)
    a.addi(rd, rd, 32)
    a.label(lbl)


def _check_vmem(a: Asm, base: int, length: int) -> None:
    """Error unless [base, base + length) lies in the model's vmem (clobbers T5, T6)."""
    a.add(T6, base, length)
    a.li(T5, VMEM_MODEL)
    a.bltu(T5, T6, "bad")


def _w0_field(a: Asm, rd: int, shift: int, mask: int) -> None:
    a.shr(rd, W0, imm=shift)
    a.andi(rd, rd, mask)


@lru_cache(maxsize=None)
def build() -> Firmware:
    """Assemble the firmware (cached)."""
    a = Asm()
    a.jmp("step")                 # word 0
    a.jmp("reset")                # word 1

    # ---------------------------------------------------------------- reset: zero vmem
    a.label("reset")
    a.li(T0, 0)
    a.li(T1, 1024)
    a.label("reset_loop")
    a.stv(Z, T0)
    a.addi(T0, T0, 1)
    a.bne(T0, T1, "reset_loop")
    a.halt()

    # ---------------------------------------------------------------- step: fetch and dispatch
    a.label("step")
    a.ldio(TOK, Z, 0)
    a.li(PC, 0)
    a.scale(Z, Z)
    a.stv(Z, Z, HEADSEEN)
    a.label("fetch")
    a.phase(PH["drain"])
    a.li(T0, PMEM_QUARTERS - 4)
    a.blt(T0, PC, "bad")
    a.ldp(W0, PC, 0)
    a.andi(T0, W0, 0xFF)
    a.li(T1, int(isa.Op.LINEAR))
    a.beq(T0, T1, "linear")
    a.li(T1, int(isa.Op.EMBED))
    a.beq(T0, T1, "embed")
    a.li(T1, int(isa.Op.END))
    a.beq(T0, T1, "end")
    a.jmp("bad")

    # ---------------------------------------------------------------- EMBED
    a.label("embed")
    a.phase(PH["embed"])
    a.li(T0, PMEM_QUARTERS - 8)
    a.blt(T0, PC, "bad")
    a.ldp(T1, PC, 1)
    a.ldp(T2, PC, 2)
    a.ldp(T3, PC, 3)
    _field24(a, DST, T1, T2, 0)           # dst = [39:16]
    _field24(a, N, T2, T3, 8)             # n = [63:40]
    _check_vmem(a, DST, N)
    a.beq(N, Z, "embed_done")
    a.ldp(T1, PC, 4)
    a.ldp(T2, PC, 5)
    _join16(a, P0, T1, T2)                # codes
    a.ldp(T1, PC, 6)
    a.ldp(T2, PC, 7)
    _join16(a, P1, T1, T2)                # scales
    a.shr(T0, TOK, imm=-1)
    a.add(P1, P1, T0)
    a.ldcu(T4, P1, 0)                     # m_v
    a.ldc(T5, P1, 1)                      # e_v
    a.sub(T5, Z, T5)                      # shift -e_v, clamped to the shifter's range
    a.li(T0, 63)
    a.min(T5, T5, T0)
    a.li(T0, -32)
    a.max(T5, T5, T0)
    # code j: (word(row + j >> S1) << L) >> R, L = 16 (int16) or 24 - 8 (j & 1) (int8), R = 16 or 24
    a.andi(T0, W0, 0x100)
    a.li(P2, 0)                           # S1 = 1 and mask 1 for int8 codes
    a.li(SB, -16)                         # -L for j even
    a.li(T6, 16)                          # R
    a.mov(T3, N)                          # row stride
    a.bne(T0, Z, "embed_row")
    a.li(P2, 1)
    a.li(SB, -24)
    a.li(T6, 24)
    a.addi(T3, N, 1)
    a.shr(T3, T3, imm=1)
    a.label("embed_row")
    a.mul(TOK, T3)
    a.shrp(T0, imm=0)
    a.add(P0, P0, T0)                     # row = codes + token * stride
    a.li(J, 0)
    a.label("embed_loop")
    a.shr(T0, J, P2)
    a.add(T0, T0, P0)
    a.ldcu(T0, T0, 0)
    a.and_(T1, J, P2)
    a.shr(T1, T1, imm=-3)
    a.add(T1, T1, SB)
    a.shr(T0, T0, T1)
    a.shr(T0, T0, T6)
    a.mul(T0, T4)
    a.shrp(T0, T5, round=True, mode=Mode.SAT)
    a.add(T1, DST, J)
    a.stv(T0, T1, 0)
    a.addi(J, J, 1)
    a.bne(J, N, "embed_loop")
    a.label("embed_done")
    a.addi(PC, PC, 8)
    a.jmp("fetch")

    # ---------------------------------------------------------------- LINEAR: decode
    a.label("linear")
    a.phase(PH["stats"])
    _w0_field(a, T0, 12, 3)               # nquant
    a.beq(T0, Z, "bad")
    a.shr(T1, W0, imm=14)                 # nseg (W0 is 16 bits)
    a.beq(T1, Z, "bad")
    a.add(T2, T0, T1)                     # the next instruction: PC + 4 (4 + nq + ns)
    a.shr(T2, T2, imm=-2)
    a.addi(T2, T2, 16)
    a.add(T2, PC, T2)
    a.stv(T2, Z, NEXT_PC)
    a.li(T3, PMEM_QUARTERS)
    a.blt(T3, T2, "bad")
    _w0_field(a, T0, 8, 15)               # epilogue
    a.li(T1, int(isa.Epilogue.TOPK))
    a.blt(T1, T0, "bad")
    a.ldp(T1, PC, 1)
    a.andi(UNIT, T1, 1)
    a.ldp(T2, PC, 2)
    _field24(a, N, T1, T2, 8)             # n = [47:24]
    a.beq(N, Z, "bad")
    a.li(T0, MAX_INPUT)
    a.blt(T0, N, "bad")
    a.ldp(T1, PC, 8)
    a.ldp(T2, PC, 9)
    _field24(a, SRC, T1, T2, 0)           # src = w2[23:0]
    a.ldp(T1, PC, 10)
    _field24(a, DST, T2, T1, 8)           # dst = w2[47:24]
    _check_vmem(a, SRC, N)

    # ---------------------------------------------------------------- statistics
    a.li(T0, 0)                           # pass 1: sb from max|b|
    a.mov(P0, SRC)
    a.add(P1, SRC, N)
    a.label("max_loop")
    a.ldv(T1, P0, 0)
    a.maxabs(T0, T0, T1)
    a.addi(P0, P0, 1)
    a.bne(P0, P1, "max_loop")
    a.li(SB, 0)
    a.beq(T0, Z, "sb_done")
    a.bitlen(SB, T0)
    a.addi(SB, SB, -15)
    a.label("sb_done")
    a.muli(Z, 0)                          # pass 2: P = t = sum(u^2), u = rshr(bs * cu, 15)
    a.mov(P0, SRC)
    a.ldp(T1, PC, 6)
    a.ldp(T2, PC, 7)
    _join16(a, P2, T1, T2)                # cu
    a.li(T2, 1 << 15)                     # a unit cu: rshr(bs * 2^15, 15) = bs
    a.label("sumsq_loop")
    a.ldv(T1, P0, 0)
    a.shr(T1, T1, SB)
    a.bne(UNIT, Z, "sumsq_unit")
    a.ldc(T2, P2, 0)
    a.label("sumsq_unit")
    a.muls(T1, T1, T2, imm=15, round=True)
    a.mac(T1, T1)
    a.addi(P0, P0, 1)
    a.addi(P2, P2, 1)
    a.bne(P0, P1, "sumsq_loop")
    _bitlen_p(a, T0, T1)                  # sqrt_t, et into K1, K2
    a.li(K1, 0)
    a.li(K2, 0)
    a.beq(T0, Z, "quant")
    a.addi(K2, T0, -32)
    a.andi(T1, K2, 1)
    a.add(K2, K2, T1)
    a.shrp(T0, K2)                        # t >> et in [2^30, 2^32)
    a.li(T1, 0x8000)                      # isqrt, one bit per round
    a.label("isqrt_loop")
    a.or_(T2, K1, T1)
    a.muls(T3, T2, T2)
    a.bltu(T0, T3, "isqrt_skip")
    a.mov(K1, T2)
    a.label("isqrt_skip")
    a.shr(T1, T1, imm=1)
    a.bne(T1, Z, "isqrt_loop")

    # ---------------------------------------------------------------- quantizers
    a.label("quant")
    a.phase(PH["quant"])
    a.li(J, 0)                            # quantizer q
    a.label("quant_q")
    a.shr(T0, J, imm=-2)
    a.add(T0, T0, PC)
    a.ldp(T1, T0, 16)
    a.ldp(T2, T0, 17)
    _join16(a, P2, T1, T2)                # cv
    a.li(T3, 0)                           # pass A: M = max|bs * cv|
    a.mov(P0, SRC)
    a.mov(T4, P2)
    a.label("qmax_loop")
    a.ldv(T1, P0, 0)
    a.shr(T1, T1, SB)
    a.ldc(T2, T4, 0)
    a.muls(T1, T1, T2)
    a.maxabs(T3, T3, T1)
    a.addi(P0, P0, 1)
    a.addi(T4, T4, 1)
    a.bne(P0, P1, "qmax_loop")
    a.li(T0, 0)                           # sh, M16, R; a zero M gives 0, 0, 0 (codes 0)
    a.li(T1, 0)
    a.li(T2, 0)
    a.beq(T3, Z, "quant_scalars")
    a.bitlen(T0, T3)
    a.addi(T0, T0, -16)
    a.shr(T1, T3, T0)
    a.li(T4, 127 << 8)                    # R = ((127 << 24) + M16) // (2 M16)
    a.shr(T4, T4, imm=-16)
    a.add(T4, T4, T1)
    a.shr(T5, T1, imm=-1)
    a.li(T3, 16)
    a.jal(LR, "divu")
    a.mov(T2, T3)
    a.label("quant_scalars")
    a.stv(T0, J, SCR + 0)
    a.stv(T1, J, SCR + 6)
    a.mov(P0, SRC)                        # pass B: codes into qbuf slot q
    a.mov(T4, P2)
    a.shr(T5, J, imm=-8)
    a.label("qcode_loop")
    a.ldv(T1, P0, 0)
    a.shr(T1, T1, SB)
    a.ldc(T3, T4, 0)
    a.muls(T1, T1, T3)
    a.shr(T1, T1, T0)                     # v16
    a.muls(T1, T1, T2, imm=23, round=True, mode=Mode.CLAMP8)
    a.stq(T1, T5, 0)
    a.addi(P0, P0, 1)
    a.addi(T4, T4, 1)
    a.addi(T5, T5, 1)
    a.bne(P0, P1, "qcode_loop")
    # the scale (m_S, e_S) = output_scale(k, M16, sh, sqrt_t, et)
    a.li(T3, 0)                           # Qr = (M16 << 16) // sqrt_t, 0 without sqrt_t
    a.beq(K1, Z, "scale_q")
    a.ldv(T4, J, SCR + 6)
    a.shr(T4, T4, imm=-16)
    a.mov(T5, K1)
    a.li(T3, 17)
    a.jal(LR, "divu")
    a.label("scale_q")
    a.shr(T0, J, imm=-2)
    a.add(T0, T0, PC)
    a.ldp(T5, T0, 18)                     # k_m
    a.ldp(T2, T0, 19)
    a.shr(T2, T2, imm=-16)
    a.shr(T2, T2, imm=16)                 # k_e
    a.mul(T3, T5)                         # p = Qr * k_m
    _bitlen_p(a, T0, T1)
    a.li(T4, 0)                           # m
    a.li(T3, 0)                           # e
    a.beq(T0, Z, "scale_store")
    a.addi(T0, T0, -16)                   # s
    a.shrp(T4, T0, round=True)
    a.shr(T1, T4, imm=16)                 # a carry out of 16 bits renormalizes
    a.beq(T1, Z, "scale_nocarry")
    a.shr(T4, T4, imm=1)
    a.addi(T0, T0, 1)
    a.label("scale_nocarry")
    a.ldv(T1, J, SCR + 0)                 # e = k_e + sh + s - et / 2 - 16
    a.add(T3, T2, T1)
    a.add(T3, T3, T0)
    a.shr(T1, K2, imm=1)
    a.sub(T3, T3, T1)
    a.addi(T3, T3, -16)
    a.label("scale_store")
    a.stv(T4, J, SCR + 9)
    a.stv(T3, J, SCR + 12)
    a.sub(T3, Z, T3)                      # the dequantization shift
    a.li(T1, 63)
    a.min(T3, T3, T1)
    a.li(T1, -32)
    a.max(T3, T3, T1)
    a.stv(T3, J, AMT)
    a.addi(J, J, 1)
    _w0_field(a, T0, 12, 3)
    a.bne(J, T0, "quant_q")

    # ---------------------------------------------------------------- matrix and epilogue
    a.phase(PH["matrix"])
    _w0_field(a, T4, 12, 3)               # nq
    a.shr(T0, T4, imm=-2)
    a.add(T0, T0, PC)                     # segment word s at quarters T0 + 16 + 4 s
    a.ldp(T1, T0, 16)
    a.ldp(T2, T0, 17)
    _field24(a, J, T1, T2, 8)             # rows (in J until the loops start)
    a.beq(J, Z, "bad")
    a.addi(T3, N, 3)                      # geometry: ncb | nseg << 8 | slots << 12
    a.shr(T3, T3, imm=2)
    a.shr(T1, W0, imm=14)
    a.shr(T2, T1, imm=-8)
    a.or_(T3, T3, T2)
    a.li(T5, 0)                           # segment s
    a.label("seg_loop")
    a.ldp(T2, T0, 16)
    a.andi(T2, T2, 3)                     # its quantizer
    a.bge(T2, T4, "bad")
    for k in (0, 1):                      # rotate: after nseg rounds, segment s's scale is in
        a.mov(SM[k], SM[k + 1])           # SM[3 - nseg + s], SA[3 - nseg + s]
        a.mov(SA[k], SA[k + 1])
    a.ldv(SM[2], T2, SCR + 9)
    a.ldv(SA[2], T2, AMT)
    a.shr(T6, T5, imm=-1)
    a.addi(T6, T6, 12)
    a.sub(T6, Z, T6)
    a.shr(T6, T2, T6)                     # q << (12 + 2 s)
    a.or_(T3, T3, T6)
    a.addi(T0, T0, 4)
    a.addi(T5, T5, 1)
    a.bne(T5, T1, "seg_loop")
    a.ldp(T1, PC, 4)
    a.ldp(T2, PC, 5)
    _join16(a, T1, T1, T2)                # wmem address of the first tile
    a.mcfg(T1, T3)
    _w0_field(a, T0, 8, 15)               # epilogue
    a.li(T1, int(isa.Epilogue.TOPK))
    a.beq(T0, T1, "head")
    a.ldp(T1, PC, 12)
    a.ldp(T2, PC, 13)
    _field24(a, AUX, T1, T2, 0)           # aux = w3[23:0]
    _check_vmem(a, DST, J)
    a.li(T1, int(isa.Epilogue.GLU))
    a.bge(T0, T1, "epi_go")               # ADD and MLGRU also read and write aux
    a.li(T1, int(isa.Epilogue.WRITE))
    a.beq(T0, T1, "epi_go")
    _check_vmem(a, AUX, J)
    a.label("epi_go")
    a.mov(N, J)                           # N = rows from here on
    a.li(J, 0)
    a.mov(P1, DST)                        # dst + j
    a.mov(P2, AUX)                        # aux + j
    a.lui(K1, 0xFFF0)                     # sigmoid clamp: -16 * 2^16 .. 16 * 2^16 - 1
    a.li(K2, (16 << 16) - 1)
    a.li(K3, 1 << 16)
    a.la(BODY, "body_write")              # the body run per row (JR) until the row blocks end
    a.li(T1, int(isa.Epilogue.WRITE))
    a.beq(T0, T1, "rb_loop")
    a.la(BODY, "body_add")
    a.li(T1, int(isa.Epilogue.ADD))
    a.beq(T0, T1, "rb_loop")
    a.la(BODY, "body_glu")
    a.li(T1, int(isa.Epilogue.GLU))
    a.beq(T0, T1, "rb_loop")
    a.la(BODY, "body_mlgru")
    a.ldp(T1, PC, 1)                      # MLGRU: lower bounds flag in SB, pointer in SRC
    a.andi(SB, T1, 2)
    a.ldp(T1, PC, 14)
    a.ldp(T2, PC, 15)
    _join16(a, SRC, T1, T2)
    a.jmp("rb_loop")

    def deq(rd: int, seg: int, nseg: int) -> None:
        """rd = segment ``seg``'s dequantized output (its scale is in register 3 - nseg + seg)."""
        k = 3 - nseg + seg
        a.ldv(rd, P0, ROWS * seg)
        a.mul(rd, SM[k])
        a.shrp(rd, SA[k], round=True, mode=Mode.SAT)

    def write_body():
        deq(T0, 0, 1)
        a.stv(T0, P1)

    def add_body():
        deq(T0, 0, 1)
        a.ldv(T1, P2)
        a.adds(T0, T1, T0)
        a.stv(T0, P1)

    def glu_body():
        deq(T4, 0, 2)                     # gate
        a.mov(T0, T4)
        a.jal(LR, "sigmoid")
        a.muls(T0, T0, T5, imm=16, round=True)                  # silu(gate)
        deq(T1, 1, 2)                     # up
        a.muls(T0, T0, T1, imm=16, round=True, mode=Mode.SAT)
        a.stv(T0, P1)

    def mlgru_body():
        deq(T4, 1, 3)                     # f_pre
        a.jal(LR, "sigmoid")
        lbl = f"_nolb{len(a)}"
        a.beq(SB, Z, lbl)
        a.ldcu(T1, SRC, 0)                # f = lb + rshr((2^16 - lb) * f, 16)
        a.sub(T2, K3, T1)
        a.muls(T2, T2, T5, imm=16, round=True)
        a.add(T5, T1, T2)
        a.label(lbl)
        a.mov(T3, T5)                     # f
        deq(T4, 0, 3)                     # i_pre
        a.mov(T0, T4)
        a.jal(LR, "sigmoid")
        a.muls(T0, T0, T5, imm=16, round=True)      # silu(i)
        a.sub(T1, K3, T3)
        a.muls(T0, T0, T1, imm=16, round=True)      # i = silu(i) * (1 - f)
        a.ldv(T1, P2)
        a.muls(T1, T1, T3, imm=16, round=True)      # h * f
        a.adds(T1, T1, T0)                          # h
        a.stv(T1, P2)
        a.mov(T4, T1)
        a.jal(LR, "sigmoid")
        a.muls(T1, T1, T5, imm=16, round=True)      # silu(h)
        deq(T0, 2, 3)                               # g
        a.muls(T0, T0, T1, imm=16, round=True, mode=Mode.SAT)
        a.stv(T0, P1)
        a.addi(SRC, SRC, 1)

    # the row blocks: MATRIX, then the body (address in LR) per row, P0 = ABUF + r
    a.label("rb_loop")
    a.matrix()
    a.li(P0, ABUF)
    a.addi(T6, J, ROWS)
    a.min(T6, T6, N)                      # end of this row block (bodies keep T6, BODY)
    a.label("el_loop")
    a.jr(BODY)
    a.label("el_next")
    a.addi(J, J, 1)
    a.addi(P0, P0, 1)
    a.addi(P1, P1, 1)
    a.addi(P2, P2, 1)
    a.bne(J, T6, "el_loop")
    a.bne(J, N, "rb_loop")
    a.jmp("linear_done")

    for kind, body in (("write", write_body), ("add", add_body), ("glu", glu_body), ("mlgru", mlgru_body)):
        a.label(f"body_{kind}")
        body()
        a.jmp("el_next")

    # ---------------------------------------------------------------- the head: TOPK into vmem TKS
    a.label("head")
    a.phase(PH["head"])
    a.shr(T1, W0, imm=12)                 # the head's scale: its segment's quantizer
    a.andi(T1, T1, 3)
    a.shr(T1, T1, imm=-2)
    a.add(T1, T1, PC)
    a.ldp(T1, T1, 16)
    a.andi(T1, T1, 3)
    a.ldv(T2, T1, SCR + 9)
    a.ldv(T3, T1, SCR + 12)
    a.scale(T2, T3)
    a.lui(T1, 0x8000)                     # empty entries: accumulator -2^31, id -1
    a.li(T2, -1)
    for k in range(TOPK):
        a.stv(T1, Z, TKS + k)
        a.stv(T2, Z, TKS + TOPK + k)
    a.li(T0, 1)
    a.stv(T0, Z, HEADSEEN)
    a.mov(N, J)
    a.li(J, 0)
    a.la(BODY, "body_topk")
    a.jmp("rb_loop")
    a.label("body_topk")
    a.ldv(T0, P0, 0)
    a.ldv(T1, Z, TKS + TOPK - 1)
    a.bge(T1, T0, "el_next")              # not above the last entry (ties keep the lower id)
    a.li(T2, TKS + TOPK - 1)              # slot to fill
    a.label("tk_shift")
    a.li(T1, TKS)
    a.beq(T2, T1, "tk_place")
    a.ldv(T1, T2, -1)
    a.bge(T1, T0, "tk_place")
    a.stv(T1, T2, 0)                      # move entry k-1 down to k
    a.ldv(T1, T2, TOPK - 1)
    a.stv(T1, T2, TOPK)
    a.addi(T2, T2, -1)
    a.jmp("tk_shift")
    a.label("tk_place")
    a.stv(T0, T2, 0)
    a.stv(J, T2, TOPK)
    a.jmp("el_next")

    a.label("linear_done")
    a.ldv(PC, Z, NEXT_PC)
    a.jmp("fetch")

    # ---------------------------------------------------------------- END: the result beats
    a.label("bad")
    a.err()
    a.label("end")
    a.phase(PH["head"])
    a.ldv(T0, Z, HEADSEEN)
    a.bne(T0, Z, "end_ok")
    a.err()
    a.li(T2, -1)
    for k in range(TOPK):
        a.stv(T2, Z, TKS + TOPK + k)
    a.label("end_ok")
    for k in range(TOPK):                 # present = id >= 0
        a.ldv(T0, Z, TKS + k)
        a.ldv(T1, Z, TKS + TOPK + k)
        a.res(T1, T0, last=k == TOPK - 1)
    a.halt()

    # ---------------------------------------------------------------- subroutines
    # sigmoid: T5 = sigmoid_q(T4); K1 = -16 * 2^16, K2 = 16 * 2^16 - 1; clobbers T2, T4
    a.label("sigmoid")
    a.max(T4, T4, K1)
    a.min(T4, T4, K2)
    a.sub(T4, T4, K1)                     # xo
    a.andi(T5, T4, 2047)                  # frac
    a.shr(T4, T4, imm=11)                 # idx
    a.lds(T2, T4, 1)
    a.lds(T4, T4, 0)
    a.sub(T2, T2, T4)
    a.muls(T5, T2, T5, imm=11, round=True)
    a.add(T5, T4, T5)
    a.jr(LR)

    # divu: T3 = T4 // T5, unsigned, with T3 quotient bits on entry. Needs T5 << (bits - 1) < 2^32
    # and a quotient below 2^bits. Clobbers T4 (the remainder), T6, K3.
    a.label("divu")
    a.sub(T3, Z, T3)
    a.addi(T3, T3, 1)                     # -(bit): the left shift of the denominator
    a.li(K3, 0)
    a.label("divu_loop")
    a.shr(K3, K3, imm=-1)
    a.shr(T6, T5, T3)
    a.bltu(T4, T6, "divu_skip")
    a.sub(T4, T4, T6)
    a.ori(K3, K3, 1)
    a.label("divu_skip")
    a.addi(T3, T3, 1)
    a.bge(Z, T3, "divu_loop")
    a.mov(T3, K3)
    a.jr(LR)

    words = a.assemble()
    return Firmware(words=tuple(words), labels=dict(a.labels))
