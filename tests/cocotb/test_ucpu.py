"""cocotb tests of :class:`mmfree.hw.ucpu.UCpu` against :class:`mmfree.model.serial.SerialMachine`.

The top holds two CPUs (tests/test_ucpu_cocotb.py): ``fw_`` with the shipped
firmware in its ROM, ``rp_`` with a writable ROM for random programs. The
bench plays the serial core around a CPU: the memory bus (random 1- or
2-cycle read latency, random ``mem_ready`` stalls), the matrix engine (random
busy time) and the result port (random ``ready``), all on a
``SerialMachine``'s memories (``vmem``, ``_cmem``, ``pmem``, ``sig``,
``qbuf``, ``_matrix``).
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from mmfree import firmware, uisa
from mmfree.model.serial import SerialFault, SerialMachine
from mmfree.packing import B3_MAX_BYTE
from mmfree.sim.runner import cocotb_params
from mmfree.targets import ICE40_CMEM_EBR_WORDS, ICE40_SPRAM_WORDS, ICE40_WMEM_WORDS
from mmfree.uisa import Asm, Mode, Op

M32 = uisa.MASK32


def s32(v: int) -> int:
    v &= M32
    return v - (1 << 32) if v >> 31 else v


async def start_clock(dut) -> None:
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for p in ("fw_", "rp_"):
        for n in ("start", "entry", "token", "mem_ready", "mem_rvalid", "mem_rdata", "mat_busy", "res_ready"):
            getattr(dut, p + n).value = 0
    for n in ("rom_we", "rom_waddr", "rom_wdata"):
        getattr(dut, "rp_" + n).value = 0
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


class Bench:
    """One CPU (port prefix ``p``) on the memories of SerialMachine ``sm``."""

    def __init__(self, dut, p: str, sm: SerialMachine, rng: random.Random, p_ready=0.7, p_res=0.6):
        self.dut, self.sm, self.rng = dut, sm, rng
        self.p_ready, self.p_res = p_ready, p_res
        self.ideal = False         # no stalls, read latency 1, the engine busy one cycle per tile + 8
        h = lambda n: getattr(dut, p + n)                      # noqa: E731
        self.h = h
        self.eng = {"w": 0, "ncb": 0, "nseg": 0, "slots": (0, 0, 0)}

    def _load(self, space: int, a: int) -> int:
        sm = self.sm
        if space == 0:
            assert a < len(sm.vmem), f"LDV address {a}"
            return sm.vmem[a] & M32
        if space == 1:
            return sm._cmem(a)
        if space == 2:
            assert a < 512, f"LDP address {a}"
            return (int(sm.pmem[a >> 2]) >> (16 * (a & 3))) & 0xFFFF
        if space == 3:
            return sm.sig[a]
        raise AssertionError(f"load from space {space}")

    def _store(self, space: int, a: int, v: int) -> None:
        if space == 0:
            assert a < len(self.sm.vmem), f"STV address {a}"
            self.sm.vmem[a] = s32(v)
        elif space == 5:
            assert a < 768, f"STQ address {a}"
            b = v & 0xFF
            self.sm.qbuf[a >> 8, (a >> 2) & 63, a & 3] = b - 256 if b >> 7 else b
        else:
            raise AssertionError(f"store to space {space}")

    async def run(self, entry: int, token: int, limit: int = 2_000_000) -> dict:
        """Pulse start, serve the bus until busy falls; the beats, flags and cycle count."""
        h, rng, sm = self.h, self.rng, self.sm
        start, busy = h("start"), h("busy")
        mem_valid, mem_ready, mem_space, mem_addr = h("mem_valid"), h("mem_ready"), h("mem_space"), h("mem_addr")
        mem_we, mem_wdata, mem_rvalid, mem_rdata = h("mem_we"), h("mem_wdata"), h("mem_rvalid"), h("mem_rdata")
        mcfg_valid, mat_start, mat_busy = h("mcfg_valid"), h("mat_start"), h("mat_busy")
        res_valid, res_ready = h("res_valid"), h("res_ready")
        beats, eng_error = [], False
        resp = None                # (cycle, data) of the pending load answer
        mat_until = -1             # mat_busy high through this cycle
        pending_load = False
        ldv = lds = 0
        k = 0
        while True:
            await FallingEdge(self.dut.clk)
            if k == 0:
                h("entry").value, h("token").value = entry, token
            start.value = int(k == 0)
            mem_ready.value = int(self.ideal or rng.random() < self.p_ready)
            res_ready.value = int(self.ideal or rng.random() < self.p_res)
            if resp is not None and resp[0] == k:
                mem_rvalid.value, mem_rdata.value = 1, resp[1]
                resp = None
                pending_load = False
            else:
                mem_rvalid.value, mem_rdata.value = 0, rng.getrandbits(32)
            mat_busy.value = int(k <= mat_until)
            await ReadOnly()
            if k > 0 and not int(busy.value):
                break
            if int(mem_valid.value) and int(mem_ready.value):
                assert not pending_load, "a second request before the load's answer"
                space, a = int(mem_space.value), int(mem_addr.value)
                if int(mem_we.value):
                    self._store(space, a, int(mem_wdata.value))
                    lds += 1
                else:
                    resp = (k + (1 if self.ideal else rng.choice((1, 2))), self._load(space, a))
                    pending_load = True
                    ldv += 1
            if int(res_valid.value) and int(res_ready.value):
                beats.append((int(h("res_payload_id").value), h("res_payload_acc").value.to_signed(),
                              bool(int(h("res_payload_present").value)), bool(int(h("res_payload_last").value))))
            if int(mcfg_valid.value):
                a, b = int(h("mcfg_waddr").value), int(h("mcfg_geom").value)
                self.eng.update(w=a, ncb=b & 0xFF, nseg=(b >> 8) & 3, slots=tuple((b >> (12 + 2 * s)) & 3
                                                                                  for s in range(3)))
            if int(mat_start.value):
                assert k > mat_until, "MATRIX while the engine is busy"
                sm.error = False
                sm._matrix(self.eng)
                eng_error |= sm.error
                busy_for = self.eng["ncb"] * self.eng["nseg"] + 8 if self.ideal else rng.choice((1, 1, 2, 3, 7))
                mat_until = k + busy_for
            k += 1
            assert k < limit, f"no HALT within {limit} cycles"
        return {"beats": beats, "error": bool(int(h("error").value)) or eng_error, "cycles": k,
                "scale_m": int(h("scale_m").value), "scale_e": h("scale_e").value.to_signed(),
                "phase": int(h("phase").value)}


# ------------------------------------------------------------------------------ random programs

EDGES = [0, 1, -1, 2, -2, 3, (1 << 31) - 1, -(1 << 31), (1 << 31) - 2, -(1 << 31) + 1, 1 << 30, -(1 << 30),
         65535, 65536, -65536, 65537, 32767, 32768, -32768, -32769, 127, 128, -128, -129, 255, 256, 0xFFFF0000,
         0x80000001, 0x7FFF8000, 0x00FF00FF, 0x55555555, 0xAAAAAAAA, 1 << 16, (1 << 24) - 1, -(1 << 23)]


def rval(rng: random.Random) -> int:
    c = rng.random()
    if c < 0.4:
        return s32(rng.choice(EDGES))
    if c < 0.7:
        return s32(rng.getrandbits(32))
    if c < 0.85:
        return s32(rng.getrandbits(rng.randint(1, 31)) * rng.choice((1, -1)))
    return rng.randint(-300, 300)


def shift_amount(rng: random.Random, wide: bool) -> int:
    hi = 63 if wide else 31
    edges = [-32, -31, -17, -16, -15, -2, -1, 0, 1, 2, 15, 16, 17, 30, 31, 32, 33, 62, 63]
    if rng.random() < 0.6:
        return rng.choice([e for e in edges if e <= hi])
    return rng.randint(-32, hi)


class Gen:
    """A random straight-line program with forward branches, ending with STV of every register and HALT."""

    R_OPS = (Op.ADD, Op.SUB, Op.AND, Op.OR, Op.XOR, Op.MIN, Op.MAX, Op.MAXABS, Op.BITLEN, Op.ADDS)
    BR = ("beq", "bne", "blt", "bge", "bltu", "bgeu")

    def __init__(self, rng: random.Random, groups: int):
        self.rng, self.a = rng, Asm()
        self.labels: dict[int, list[str]] = {}
        self.n = 0
        a = self.a
        a.jmp("main")                 # word 0: the step entry
        a.halt()                      # word 1: the reset entry
        a.label("main")
        for r in range(1, 32):
            a.li(r, rval(rng))
        a.mul(rng.randrange(32), rng.randrange(32))
        for g in range(groups):
            for lbl in self.labels.pop(g, []):
                a.label(lbl)
            self.group(g)
            if len(a) > uisa.ROM_WORDS - 60:
                break
        for lbls in self.labels.values():
            for lbl in lbls:
                a.label(lbl)
        for r in range(1, 32):
            a.stv(r, 0, r - 1)
        a.shrp(1, imm=0)
        a.shrp(2, imm=32)
        a.stv(1, 0, 31)
        a.stv(2, 0, 32)
        a.halt()
        self.words = a.assemble()

    def reg(self, nonzero=False):
        return self.rng.randrange(1 if nonzero else 0, 32)

    def ahead(self, g: int) -> str:
        self.n += 1
        lbl = f"L{self.n}"
        self.labels.setdefault(g + self.rng.randint(1, 4), []).append(lbl)
        return lbl

    def addr_base(self, addr: int):
        """(register, imm) with register + imm = addr (register loaded here)."""
        rng = self.rng
        imm = rng.choice((0, rng.randint(-32768, 32767), -32768, 32767))
        rx = self.reg(nonzero=True)
        self.a.li(rx, addr - imm)
        return rx, imm

    def group(self, g: int) -> None:
        rng, a = self.rng, self.a
        k = rng.choices(["r", "i", "li", "shr", "shrp", "muls", "mul", "ld", "st", "br", "jal", "jr", "res",
                         "scale", "phase", "err", "mat"],
                        weights=[14, 7, 4, 10, 6, 7, 6, 8, 4, 5, 1, 1, 2, 1, 1, 0.3, 1])[0]
        if k == "r":
            op = rng.choice(self.R_OPS)
            rb = rng.choice((self.reg(), self.reg(), 0))
            a._r(op, self.reg(), self.reg(), rb)
        elif k == "i":
            op = rng.choice((Op.ADDI, Op.ANDI, Op.ORI, Op.LUI))
            if op == Op.ADDI:
                imm = rng.choice((rng.randint(-32768, 32767), -32768, 32767, -1, 1, 0))
            else:
                imm = rng.choice((rng.randint(0, 65535), 0, 65535, 0x8000, 0x7FFF))
            a._i(op, self.reg(), self.reg(), imm)
        elif k == "li":
            a.li(self.reg(nonzero=True), rval(rng))
        elif k in ("shr", "shrp"):
            s = shift_amount(rng, wide=k == "shrp")
            imm = rng.randint(max(-64, s - 200), min(63, s + 200))
            rb = self.reg(nonzero=True) if s != imm else rng.choice((0, self.reg(nonzero=True)))
            a.li(rb, s - imm)
            rnd, mode = bool(rng.getrandbits(1)), rng.choice(list(Mode))
            if k == "shr":
                a.shr(self.reg(), self.reg(), rb, imm, rnd, mode)
            else:
                a.shrp(self.reg(), rb, imm, rnd, mode)
        elif k == "muls":
            a.muls(self.reg(), self.reg(), self.reg(), shift_amount(rng, wide=True), bool(rng.getrandbits(1)),
                   rng.choice(list(Mode)))
        elif k == "mul":
            c = rng.random()
            if c < 0.4:
                a.mul(self.reg(), self.reg())
            elif c < 0.7:
                a.muli(self.reg(), rng.choice((rng.randint(-32768, 32767), -32768, 32767, -1)))
            else:
                a.mac(self.reg(), self.reg())
        elif k == "ld":
            op = rng.choice((Op.LDV, Op.LDC, Op.LDCU, Op.LDP, Op.LDS, Op.LDIO))
            top = {Op.LDV: 1024, Op.LDC: 21184, Op.LDCU: 21184, Op.LDP: 512, Op.LDS: 1025, Op.LDIO: 1}[op]
            addr = rng.choice((0, top - 1, rng.randrange(top)))
            rx, imm = self.addr_base(addr)
            a._i(op, self.reg(), rx, imm)
        elif k == "st":
            op = rng.choice((Op.STV, Op.STQ))
            top = 1024 if op == Op.STV else 768
            rx, imm = self.addr_base(rng.choice((0, top - 1, rng.randrange(top))))
            a._i(op, self.reg(), rx, imm)
        elif k == "br":
            ra = self.reg()
            rb = ra if rng.random() < 0.2 else self.reg()
            getattr(a, rng.choice(self.BR))(ra, rb, self.ahead(g))
        elif k == "jal":
            a.jal(self.reg(), self.ahead(g))
        elif k == "jr":
            rx = self.reg(nonzero=True)
            a.la(rx, self.ahead(g))
            a.jr(rx)
        elif k == "res":
            a.res(self.reg(), self.reg(), bool(rng.getrandbits(1)))
        elif k == "scale":
            a.scale(self.reg(), self.reg())
        elif k == "phase":
            a.phase(rng.randrange(2048))
        elif k == "err":
            a.err()
        elif k == "mat":
            ncb, nseg = rng.randint(1, 8), rng.randint(1, 3)
            w0 = rng.randrange(ICE40_WMEM_WORDS - ncb * nseg)
            geom = ncb | nseg << 8 | sum(rng.randrange(3) << (12 + 2 * s) for s in range(3))
            r1 = self.reg(nonzero=True)
            r2 = rng.choice([r for r in range(1, 32) if r != r1])
            a.li(r1, w0 | rng.getrandbits(16) << 16)
            a.li(r2, geom | rng.getrandbits(14) << 18)
            a.mcfg(r1, r2)
            a.matrix()


def random_memories(sm: SerialMachine, rng: np.random.Generator) -> None:
    """Random images in ``sm`` (wmem bytes mostly valid base-3, a few invalid)."""
    by = rng.integers(0, B3_MAX_BYTE + 1, (ICE40_SPRAM_WORDS, 4))
    bad = rng.random((ICE40_SPRAM_WORDS, 4)) < 0.002
    by[bad] = rng.integers(B3_MAX_BYTE + 1, 256, int(bad.sum()))
    sm.spram[:] = (by << (8 * np.arange(4))).sum(axis=1)
    sm.cmem_ebr[:] = rng.integers(0, 1 << 16, ICE40_CMEM_EBR_WORDS)
    for i in range(len(sm.pmem)):
        sm.pmem[i] = int(rng.integers(0, 1 << 63)) * 2 + int(rng.integers(0, 2))
    sm.vmem[:] = [s32(int(v)) for v in rng.integers(0, 1 << 32, len(sm.vmem), dtype=np.int64)]
    sm.qbuf[:] = rng.integers(-128, 128, sm.qbuf.shape)


def blank_machine() -> SerialMachine:
    return SerialMachine(np.zeros((0, 4), dtype=np.uint8), [], [])


async def load_rom(dut, words) -> None:
    for k, w in enumerate(words):
        await FallingEdge(dut.clk)
        dut.rp_rom_we.value, dut.rp_rom_waddr.value, dut.rp_rom_wdata.value = 1, k, w
    await FallingEdge(dut.clk)
    dut.rp_rom_we.value = 0


def compare(got: dict, ref: SerialMachine, beats, what: str) -> None:
    assert got["beats"] == [tuple(b) for b in beats], f"{what}: beats {got['beats']} != {beats}"
    assert got["error"] == ref.error, f"{what}: error {got['error']} != {ref.error}"
    assert (got["scale_m"], got["scale_e"]) == (ref.scale_m, ref.scale_e), f"{what}: scale"


@cocotb.test()
async def test_random_programs(dut):
    """Random programs (edge values, every shift limit, stalls) leave vmem, qbuf, beats, flags as the ISS does."""
    await start_clock(dut)
    par = cocotb_params()
    seed = int(par.get("seed", 1))
    rng = random.Random(seed)
    sm_rtl, sm_ref = blank_machine(), blank_machine()
    random_memories(sm_rtl, np.random.default_rng(seed))
    random_memories(sm_ref, np.random.default_rng(seed))
    bench = Bench(dut, "rp_", sm_rtl, rng)
    n_prog = int(par.get("programs", 40))
    insns = cycles = discarded = 0
    for k in range(n_prog):
        for _ in range(20):
            gen = Gen(rng, rng.randint(20, 160))
            sm_ref.rom, sm_ref.code = gen.words, [uisa.decode(w) for w in gen.words]
            token = rng.choice((0, 1, 65535, rng.randrange(65536)))
            saved = (list(sm_ref.vmem), sm_ref.qbuf.copy())
            try:
                beats = sm_ref._run(entry=0, token=token)
                break
            except SerialFault:                       # a MAC overflow: P is undefined there
                sm_ref.vmem[:], sm_ref.qbuf[:] = saved
                discarded += 1
        else:
            raise AssertionError("no valid program in 20 tries")
        bench.p_ready, bench.p_res = rng.choice(((1.0, 1.0), (0.7, 0.6), (0.3, 0.3)))
        await load_rom(dut, gen.words)
        got = await bench.run(0, token)
        what = f"program {k} (seed {seed})"
        compare(got, sm_ref, beats, what)
        diff = [i for i in range(len(sm_ref.vmem)) if sm_rtl.vmem[i] != sm_ref.vmem[i]]
        assert not diff, f"{what}: vmem differs at {diff[:8]}: rtl {[sm_rtl.vmem[i] for i in diff[:8]]} " \
                         f"iss {[sm_ref.vmem[i] for i in diff[:8]]}\n{uisa.disassemble(gen.words)}"
        assert (sm_rtl.qbuf == sm_ref.qbuf).all(), f"{what}: qbuf differs"
        insns += sm_ref.stats["instructions"]
        cycles += got["cycles"]
    dut._log.info(f"{n_prog} random programs, {insns} instructions in {cycles} cycles "
                  f"({cycles / insns:.2f} per instruction with stalls); {discarded} discarded (MAC overflow)")
    assert discarded < n_prog


@cocotb.test()
async def test_firmware_against_golden(dut):
    """The shipped firmware on a tiny compiled model: reset, then steps equal GoldenMachine and the ISS."""
    from mmfree.model.machine import GoldenMachine

    await start_clock(dut)
    par = cocotb_params()
    path = par["model"]
    sm, ref, g = SerialMachine.from_dir(path), SerialMachine.from_dir(path), GoldenMachine.from_dir(path)
    assert sm.rom == list(firmware.build().words)
    rng = random.Random(int(par.get("seed", 1)))
    bench = Bench(dut, "fw_", sm, rng, p_ready=0.8, p_res=0.7)
    sm.vmem[:] = [rng.randrange(-1 << 31, 1 << 31) for _ in sm.vmem]
    got = await bench.run(1, 0)
    assert sm.vmem == [0] * len(sm.vmem), "reset left vmem words non-zero"
    assert not got["error"] and not got["beats"]
    dut._log.info(f"reset: {got['cycles']} cycles")
    n = g.vmem_words
    for i, tok in enumerate(par.get("tokens", [3, 17])):
        bench.ideal = i == 0
        got = await bench.run(0, tok)
        rg, rs = g.step([tok]), ref.step(tok)
        assert not got["error"], f"token {tok}: error"
        compare(got, ref, rs.trace["beats"], f"token {tok}")
        ids = [[b[0] for b in got["beats"] if b[2]]]
        acc = [[b[1] for b in got["beats"] if b[2]]]
        assert ids == rg.topk_ids.tolist() and acc == rg.topk_acc.tolist(), f"token {tok}: top-k"
        assert (got["scale_m"], got["scale_e"]) == (int(rg.scale_m[0]), int(rg.scale_e[0])), f"token {tok}"
        assert sm.vmem[:n] == g.vmem[0, :n].tolist(), f"vmem differs after token {tok}"
        assert sm.vmem == ref.vmem, f"firmware scratch differs after token {tok}"
        ni = ref.stats["instructions"]
        dut._log.info(f"token {tok}: {got['cycles']} cycles ({'ideal bus, engine 1 tile per cycle + 8' if bench.ideal else 'random stalls'}), "
                      f"{ni} instructions ({got['cycles'] / ni:.2f} cycles per instruction), "
                      f"{ref.stats.get('MATRIX', 0)} MATRIX")


def _bne_next(a: Asm) -> None:
    lbl = f"t{len(a)}"
    a.bne(1, 2, lbl)
    a.label(lbl)


CPI = [   # (name, setup, instruction, cycles with an ideal bus; the engine busy 1 + 8 cycles)
    ("add", lambda a: None, lambda a: a.add(3, 1, 2), 2),
    ("beq not taken", lambda a: None, lambda a: a.beq(1, 2, "next"), 3),
    ("bne taken", lambda a: None, lambda a: _bne_next(a), 3),
    ("maxabs |b| <= a", lambda a: a.li(4, 5), lambda a: a.maxabs(3, 1, 4), 2),
    ("maxabs b < 0, |b| > a", lambda a: a.li(4, -5000), lambda a: a.maxabs(3, 1, 4), 4),
    ("maxabs b < 0, |b| <= a", lambda a: a.li(4, -5), lambda a: a.maxabs(3, 1, 4), 4),
    ("mul", lambda a: None, lambda a: a.mul(1, 2), 3),
    ("mac", lambda a: None, lambda a: a.mac(1, 2), 3),
    ("shrp s=0", lambda a: None, lambda a: a.shrp(3, imm=0), 4),
    ("shrp s=63", lambda a: None, lambda a: a.shrp(3, imm=63, mode=Mode.SAT), 4 + 7),
    ("shrp s=-1", lambda a: None, lambda a: a.shrp(3, imm=-1), 4 + 3),
    ("shr s=16", lambda a: None, lambda a: a.shr(3, 1, imm=16, round=True), 4 + 2),
    ("shr s=-32", lambda a: None, lambda a: a.shr(3, 1, imm=-32), 4),
    ("muls s=23", lambda a: None, lambda a: a.muls(3, 1, 2, imm=23, round=True, mode=Mode.CLAMP8), 4 + 2),
    ("ldv", lambda a: None, lambda a: a.ldv(3, 0, 7), 3),
    ("ldio", lambda a: None, lambda a: a.ldio(3, 0), 2),
    ("stv", lambda a: None, lambda a: a.stv(1, 0, 900), 2),
    ("res", lambda a: None, lambda a: a.res(1, 2, False), 2),
    ("matrix", lambda a: (a.li(5, 1 | 1 << 8), a.mcfg(0, 5)), lambda a: a.matrix(), 3 + 9),
]


@cocotb.test()
async def test_cycles_per_instruction(dut):
    """The documented cycles per instruction class (ideal bus): ten copies against none."""
    await start_clock(dut)
    sm = blank_machine()
    bench = Bench(dut, "rp_", sm, random.Random(3))
    bench.ideal = True

    async def cycles(setup, insn, n):
        a = Asm()
        a.jmp("main")
        a.halt()
        a.label("main")
        a.li(1, 1000)
        a.li(2, -3)
        setup(a)
        for _ in range(n):
            insn(a)
        a.label("next")
        a.halt()
        await load_rom(dut, a.assemble())
        return (await bench.run(0, 5))["cycles"]

    for name, setup, insn, want in CPI:
        d = await cycles(setup, insn, 10) - await cycles(setup, insn, 0)
        assert d == 10 * want, f"{name}: {d / 10} cycles, documented {want}"
