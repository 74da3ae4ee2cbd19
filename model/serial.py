"""The serial core's instruction-set simulator: firmware, memories and matrix engine, exactly.

The iCEBreaker's serial core (docs/ice40-core.md) runs firmware
(:mod:`mmfree.firmware`) written in the micro-instruction set of
:mod:`mmfree.uisa`; the firmware interprets the compiled program from pmem.
This simulator executes that firmware on the core's memories as the
hardware lays them out, so it checks two things at once: the firmware
computes the golden model bit for bit (tests compare it with
:class:`~mmfree.model.machine.GoldenMachine`), and it is the reference the
RTL of :mod:`mmfree.hw.ucpu` is compared with, instruction by instruction.

Memories (iCE40 UP5K)::

    spram   32768 x 32   wmem words [0, W); cmem words >= CMEM_EBR as 16-bit halves of words [W, 32768)
    cmem    CMEM_EBR x 16 block RAM (cmem words below CMEM_EBR)
    vmem    1024 x 32    block RAM; words [VMEM_SCRATCH, 1024) are the firmware's
    pmem    128 x 64     block RAM, read as 16-bit quarters
    qbuf    3 x 64 x 4   int8 codes, one 32-bit word (4 codes) per matrix column block
    rom     512 x 32     firmware

The matrix engine (``MCFG``/``MATRIX``) streams one row block of 5 x 4
tiles: per segment ``s``, ``ncb`` tiles from the wmem pointer (which
advances) times qbuf slot ``slots[s]`` words ``0 .. ncb-1``; the 5 row
accumulators of segment ``s`` land in ``vmem[ABUF + 5 s + r]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmfree import numerics as nx
from mmfree import packing as pk
from mmfree import uisa
from mmfree.errors import MmfreeError
from mmfree.targets import ICE40_CMEM_EBR_WORDS, ICE40_SPRAM_WORDS, ICE40_WMEM_WORDS
from mmfree.uisa import MASK32, Mode, Op

from .golden import StepResult

__all__ = ["SerialMachine", "SerialFault", "ROWS", "COLS", "VMEM_WORDS", "VMEM_SCRATCH", "ABUF", "SCR",
           "QBUF_SLOT_WORDS"]

ROWS, COLS = 5, 4                 #: the engine's tile (the icebreaker target's)
VMEM_WORDS = 1024
VMEM_SCRATCH = 976                #: vmem words the compiler may use: [0, VMEM_SCRATCH)
ABUF = 992                        #: 15 accumulators of one row block (3 segments x 5 rows)
SCR = 1008                        #: 16 words of firmware scratch
QBUF_SLOT_WORDS = 64              #: qbuf words per slot: inputs up to 256
PMEM_WORDS = 128
MAX_INSNS = 5_000_000             #: a step that runs longer is a firmware bug


class SerialFault(MmfreeError):
    """The firmware did something the hardware does not define (a firmware bug)."""


def _s32(v: int) -> int:
    v &= MASK32
    return v - (1 << 32) if v >> 31 else v


def _sat32(v: int) -> int:
    return max(-(1 << 31), min((1 << 31) - 1, v))


def shift(x: int, s: int, rnd: bool, mode: Mode, wide: bool) -> int:
    """The shift unit (mmfree.uisa): source ``x`` (64-bit if ``wide``), signed amount ``s``."""
    lo, hi = (-32, 63) if wide else (-32, 31)
    if not lo <= s <= hi:
        raise SerialFault(f"shift amount {s} outside [{lo}, {hi}]")
    if s >= 0:
        r = (x + (1 << (s - 1))) >> s if (rnd and s > 0) else x >> s
    else:
        r = (_sat32(x) if wide else x) << -s
    if mode == Mode.WRAP:
        return _s32(r)
    if mode == Mode.SAT:
        return _sat32(r)
    return max(-128, min(127, r))


_B3 = np.array([[((b // 3 ** i) % 3) for i in range(5)] for b in range(256)], dtype=np.int64)
_B3 = np.where(_B3 == 2, -1, _B3)
_B3_BAD = np.arange(256) > pk.B3_MAX_BYTE


class SerialMachine:
    """The serial core executing its firmware: ``step(token)`` like :class:`GoldenMachine`.

    Parameters
    ----------
    wmem, cmem, pmem : the compiled images (as :meth:`GoldenMachine.from_dir` reads them)
    topk : int
        Candidates reported per step (the icebreaker target's 4).
    rom : list of int, optional
        Firmware words (default: :func:`mmfree.firmware.build`).
    """

    def __init__(self, wmem: np.ndarray, cmem: np.ndarray, pmem, *, topk: int = 4, rom=None):
        from mmfree import firmware
        self.rom = list(firmware.build().words if rom is None else rom)
        self.code = [uisa.decode(w) for w in self.rom]
        self.k = topk
        self.spram = np.zeros(ICE40_SPRAM_WORDS, dtype=np.int64)
        self.cmem_ebr = np.zeros(ICE40_CMEM_EBR_WORDS, dtype=np.int64)
        self.pmem = np.zeros(PMEM_WORDS, dtype=object)
        self.vmem = [0] * VMEM_WORDS
        self.load("wmem", wmem)
        self.load("cmem", cmem)
        self.load("pmem", pmem)
        self.sig = [int(v) for v in nx.SIG_TABLE]
        self.stats: dict[str, int] = {}
        self.reset()

    @classmethod
    def from_dir(cls, path: str | Path, **kw) -> "SerialMachine":
        path = Path(path)
        man = json.loads((path / "manifest.json").read_text())
        t = man["target"]
        if (t["rows"], t["cols"], t["packing"]) != (ROWS, COLS, "b3"):
            raise MmfreeError(f"{path}: compiled for {t['rows']}x{t['cols']} {t['packing']} tiles; "
                              f"the serial core takes {ROWS}x{COLS} b3 (--target icebreaker)")
        imgs = man["images"]
        words = {n: pk.read_bin(path / imgs[n]["bin"], imgs[n]["width"]) for n in ("wmem", "cmem", "pmem")}
        return cls(words["wmem"], pk.words_int(words["cmem"], 16), [int(w) for w in pk.words_int(words["pmem"], 64)],
                   topk=t["topk"], **kw)

    # ------------------------------------------------------------------ loading (the link's LOAD)
    def load(self, mem: str, data, addr: int = 0) -> None:
        """Write words at ``addr`` of ``wmem`` (uint8 [N, 4] or ints), ``cmem`` (ints), ``pmem`` (ints)."""
        if mem == "wmem":
            a = np.asarray(data)
            vals = (a.astype(np.int64) << (8 * np.arange(a.shape[1]))).sum(axis=1) if a.ndim == 2 else a
            if addr + len(vals) > ICE40_WMEM_WORDS:
                raise MmfreeError(f"wmem [{addr}, {addr + len(vals)}) beyond its {ICE40_WMEM_WORDS} words")
            self.spram[addr:addr + len(vals)] = vals
        elif mem == "cmem":
            vals = [int(v) & 0xFFFF for v in np.asarray(data).reshape(-1)]
            top = ICE40_CMEM_EBR_WORDS + 2 * (ICE40_SPRAM_WORDS - ICE40_WMEM_WORDS)
            if addr + len(vals) > top:
                raise MmfreeError(f"cmem [{addr}, {addr + len(vals)}) beyond its {top} words")
            for i, v in enumerate(vals):
                a = addr + i
                if a < ICE40_CMEM_EBR_WORDS:
                    self.cmem_ebr[a] = v
                else:
                    w, half = divmod(a - ICE40_CMEM_EBR_WORDS, 2)
                    old = int(self.spram[ICE40_WMEM_WORDS + w])
                    old = (old & ~(0xFFFF << (16 * half))) | (v << (16 * half))
                    self.spram[ICE40_WMEM_WORDS + w] = old
        elif mem == "pmem":
            vals = [int(v) for v in data]
            if addr + len(vals) > PMEM_WORDS:
                raise MmfreeError(f"pmem [{addr}, {addr + len(vals)}) beyond its {PMEM_WORDS} words")
            for i, v in enumerate(vals):
                self.pmem[addr + i] = v & ((1 << 64) - 1)
        else:
            raise MmfreeError(f"unknown memory {mem!r}")

    def _cmem(self, a: int) -> int:
        if a < ICE40_CMEM_EBR_WORDS:
            return int(self.cmem_ebr[a])
        w, half = divmod(a - ICE40_CMEM_EBR_WORDS, 2)
        if ICE40_WMEM_WORDS + w >= ICE40_SPRAM_WORDS:
            raise SerialFault(f"cmem address {a} beyond the memory")
        return (int(self.spram[ICE40_WMEM_WORDS + w]) >> (16 * half)) & 0xFFFF

    # ------------------------------------------------------------------
    def reset(self) -> None:
        """The core's reset command: runs the firmware's reset entry (zeroes vmem)."""
        self._run(entry=1, token=0)

    def step(self, token: int) -> StepResult:
        """One step of the program for ``token``: the firmware's step entry."""
        beats = self._run(entry=0, token=int(token))
        ids = np.array([[b[0] for b in beats if b[2]]], dtype=np.int64)
        acc = np.array([[b[1] for b in beats if b[2]]], dtype=np.int64)
        return StepResult(acc=None, scale_m=np.array([self.scale_m]), scale_e=np.array([self.scale_e]),
                          topk_ids=ids, topk_acc=acc, trace={"beats": beats, "error": self.error})

    # ------------------------------------------------------------------
    def _run(self, entry: int, token: int) -> list:
        r = [0] * uisa.NREGS
        P = 0
        pc = entry
        beats = []
        self.error = False
        self.scale_m = self.scale_e = 0
        eng = self._eng = {"w": 0, "ncb": 0, "nseg": 0, "slots": (0, 0, 0)}
        self.qbuf = getattr(self, "qbuf", np.zeros((3, QBUF_SLOT_WORDS, 4), dtype=np.int64))
        count = {}
        vmem, code = self.vmem, self.code
        for _ in range(MAX_INSNS):
            if not 0 <= pc < len(code):
                raise SerialFault(f"pc {pc} outside the firmware ({len(code)} words)")
            i = code[pc]
            op = i.op
            count[op] = count.get(op, 0) + 1
            a, b = r[i.ra], r[i.rb]
            nxt = pc + 1
            res = None
            if op == Op.ADD:
                res = _s32(a + b)
            elif op == Op.SUB:
                res = _s32(a - b)
            elif op == Op.AND:
                res = _s32(a & b)
            elif op == Op.OR:
                res = _s32(a | b)
            elif op == Op.XOR:
                res = _s32(a ^ b)
            elif op == Op.MIN:
                res = min(a, b)
            elif op == Op.MAX:
                res = max(a, b)
            elif op == Op.MAXABS:
                res = _s32(max(a & MASK32, abs(b)))
            elif op == Op.BITLEN:
                res = (a & MASK32).bit_length()
            elif op == Op.ADDS:
                res = _sat32(a + b)
            elif op == Op.ADDI:
                res = _s32(a + i.imm16)
            elif op == Op.ANDI:
                res = _s32(a & i.imm16)
            elif op == Op.ORI:
                res = _s32(a | i.imm16)
            elif op == Op.LUI:
                res = _s32(i.imm16 << 16)
            elif op == Op.SHR:
                res = shift(a, _s32(b + i.imm7), i.round, i.mode, wide=False)
            elif op == Op.SHRP:
                res = shift(P, _s32(b + i.imm7), i.round, i.mode, wide=True)
            elif op == Op.MULS:
                res = shift(a * b, i.imm7, i.round, i.mode, wide=True)
            elif op == Op.MUL:
                P = a * b
            elif op == Op.MAC:
                P = P + a * b
                if not -(1 << 63) <= P < 1 << 63:
                    raise SerialFault("MAC overflowed the 64-bit accumulator")
            elif op == Op.MULI:
                P = a * i.imm16
            elif op in (Op.LDV, Op.LDC, Op.LDCU, Op.LDP, Op.LDS, Op.LDIO, Op.STV, Op.STQ):
                ad = _s32(a + i.imm16)
                if op == Op.LDV:
                    if not 0 <= ad < VMEM_WORDS:
                        raise SerialFault(f"LDV address {ad} at pc {pc}")
                    res = vmem[ad]
                elif op in (Op.LDC, Op.LDCU):
                    if ad < 0:
                        raise SerialFault(f"cmem address {ad} at pc {pc}")
                    v = self._cmem(ad)
                    res = v - 0x10000 if (op == Op.LDC and v >> 15) else v
                elif op == Op.LDP:
                    if not 0 <= ad < 4 * PMEM_WORDS:
                        raise SerialFault(f"LDP address {ad} at pc {pc}")
                    res = (int(self.pmem[ad >> 2]) >> (16 * (ad & 3))) & 0xFFFF
                elif op == Op.LDS:
                    if not 0 <= ad < len(self.sig):
                        raise SerialFault(f"LDS index {ad} at pc {pc}")
                    res = self.sig[ad]
                elif op == Op.LDIO:
                    if ad != 0:
                        raise SerialFault(f"LDIO address {ad} at pc {pc}")
                    res = token
                elif op == Op.STV:
                    if not 0 <= ad < VMEM_WORDS:
                        raise SerialFault(f"STV address {ad} at pc {pc}")
                    vmem[ad] = r[i.rd]
                else:   # STQ
                    if not 0 <= ad < 3 * 256:
                        raise SerialFault(f"STQ address {ad} at pc {pc}")
                    if (ad >> 2) & 63 >= QBUF_SLOT_WORDS:
                        raise SerialFault(f"STQ address {ad} at pc {pc}")
                    v = r[i.rd] & 0xFF
                    self.qbuf[ad >> 8, (ad >> 2) & 63, ad & 3] = v - 256 if v >> 7 else v
            elif op == Op.MCFG:
                eng.update(w=a & 0xFFFF, ncb=b & 0xFF, nseg=(b >> 8) & 3,
                           slots=tuple((b >> (12 + 2 * s)) & 3 for s in range(3)))
            elif op == Op.MATRIX:
                self._matrix(eng)
            elif op == Op.RES:
                beats.append((a & 0xFFFF, _s32(b << 8) >> 8, a >= 0, bool(i.x11 & 1)))
            elif op == Op.SCALE:
                self.scale_m, self.scale_e = a & 0xFFFF, ((b & 0x3FFFF) ^ 0x20000) - 0x20000
            elif op in uisa.BRANCHES:
                ua, ub = a & MASK32, b & MASK32
                take = {Op.BEQ: a == b, Op.BNE: a != b, Op.BLT: a < b, Op.BGE: a >= b,
                        Op.BLTU: ua < ub, Op.BGEU: ua >= ub}[op]
                if take:
                    nxt = i.x11
            elif op == Op.JMP:
                nxt = i.x11
            elif op == Op.JAL:
                res, nxt = pc + 1, i.x11
            elif op == Op.JR:
                nxt = a
            elif op == Op.PHASE:
                pass
            elif op == Op.ERR:
                self.error = True
            elif op == Op.HALT:
                self.stats = {k.name: v for k, v in count.items()}
                self.stats["instructions"] = sum(count.values())
                return beats
            else:  # pragma: no cover - Op is closed
                raise SerialFault(f"unhandled {op!r}")
            if res is not None and i.rd:
                r[i.rd] = res
            pc = nxt
        raise SerialFault(f"no HALT after {MAX_INSNS} instructions")

    def _matrix(self, eng: dict) -> None:
        ncb, nseg = eng["ncb"], eng["nseg"]
        if ncb == 0 or nseg == 0:
            raise SerialFault(f"MATRIX with ncb={ncb}, nseg={nseg}")
        n = ncb * nseg
        w0 = eng["w"]
        if w0 + n > ICE40_WMEM_WORDS:
            raise SerialFault(f"MATRIX reads wmem [{w0}, {w0 + n}) beyond wmem")
        words = self.spram[w0:w0 + n]
        by = (words[:, None] >> (8 * np.arange(4))) & 0xFF                     # [n, 4]
        if _B3_BAD[by].any():
            self.error = True
        trits = _B3[by].reshape(nseg, ncb, ROWS, COLS)                          # trit r*C + c
        for s in range(nseg):
            codes = self.qbuf[eng["slots"][s], :ncb]                            # [ncb, 4]
            acc = np.einsum("brc,bc->r", trits[s], codes)
            for row in range(ROWS):
                self.vmem[ABUF + ROWS * s + row] = int(acc[row])
        eng["w"] = w0 + n
