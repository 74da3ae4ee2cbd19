"""The serial core's micro-ISA, its firmware and its simulator, held to the golden machine."""

from __future__ import annotations

import random

import numpy as np
import pytest

from mmfree import firmware, uisa
from mmfree import numerics as nx
from mmfree.compiler.compile import compile_checkpoint
from mmfree.config import ModelConfig
from mmfree.model.checkpoint import random_checkpoint
from mmfree.model.machine import GoldenMachine
from mmfree.model.serial import VMEM_SCRATCH, SerialFault, SerialMachine, shift
from mmfree.uisa import Asm, Insn, Mode, Op

SHIPPED_ICE40 = "ice40"


def _same(s: SerialMachine, g: GoldenMachine, tokens) -> None:
    for tok in tokens:
        rs, rg = s.step(tok), g.step([tok])
        assert not rs.trace["error"]
        assert rs.topk_ids.tolist() == rg.topk_ids.tolist(), tok
        assert rs.topk_acc.tolist() == rg.topk_acc.tolist(), tok
        assert (int(rs.scale_m[0]), int(rs.scale_e[0])) == (int(rg.scale_m[0]), int(rg.scale_e[0]))
        n = g.vmem_words
        assert s.vmem[:n] == g.vmem[0, :n].tolist(), f"vmem differs after token {tok}"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    from mmfree.model.checkpoint import resolve

    out = tmp_path_factory.mktemp("ice40") / "c"
    compile_checkpoint(resolve(SHIPPED_ICE40), "icebreaker", out)
    return out


# --------------------------------------------------------------------------- firmware on the simulator

def test_firmware_fits_the_rom():
    fw = firmware.build()
    assert 0 < len(fw.words) <= uisa.ROM_WORDS
    assert fw.labels["step"] and fw.labels["reset"]
    assert [uisa.decode(w).op for w in fw.words[:2]] == [Op.JMP, Op.JMP]
    assert "sigmoid" in fw.listing()


def test_shipped_ice40_model_bit_exact(shipped):
    s, g = SerialMachine.from_dir(shipped), GoldenMachine.from_dir(shipped)
    s.reset()
    _same(s, g, [104, 105, 0, 255, 32])
    assert s.stats["instructions"] > 100_000 and s.stats["MATRIX"] == 3 * (26 + 26 + 39 + 26) + 52   # row blocks of 5 rows
    s.reset()                                              # reset zeroes every vmem word
    assert s.vmem == [0] * len(s.vmem)
    g.reset()
    _same(s, g, [10])


@pytest.mark.parametrize("emb_bits, lower", [(8, True), (16, False)])
def test_odd_shapes(tmp_path, emb_bits, lower):
    # d 23 and I 30 pad both tile dimensions; vocab 130 < 5 x 26 row blocks; unit cu (down), GLU, 4 layers
    cfg = ModelConfig(vocab_size=130, hidden_size=23, num_hidden_layers=4, intermediate_size=30,
                      use_lower_bound=lower)
    ck = random_checkpoint(tmp_path / "ck", cfg, seed=9 + emb_bits)
    compile_checkpoint(ck, "icebreaker", tmp_path / "c", emb_bits=emb_bits)
    s, g = SerialMachine.from_dir(tmp_path / "c"), GoldenMachine.from_dir(tmp_path / "c")
    _same(s, g, [0, 129, 7, 7, 64, 1])


def test_serial_machine_needs_its_tiles(tmp_path):
    cfg = ModelConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, intermediate_size=8)
    ck = random_checkpoint(tmp_path / "ck", cfg, seed=1)
    compile_checkpoint(ck, "sim", tmp_path / "c")
    with pytest.raises(Exception, match="the serial core takes 5x4 b3"):
        SerialMachine.from_dir(tmp_path / "c")


# --------------------------------------------------------------------------- programs it refuses

def _patched(path, edit) -> tuple[SerialMachine, list]:
    s = SerialMachine.from_dir(path)
    prog = [int(w) for w in s.pmem if w is not None]
    edit(prog)
    s.load("pmem", prog)
    return s, prog


@pytest.mark.parametrize("what", ["opcode", "no_end", "no_head", "n_too_long", "dst_in_scratch", "seg_quant"])
def test_bad_programs_set_error_and_still_answer(tiny_icebreaker, what):
    def edit(p):
        if what == "opcode":
            p[0] = (p[0] & ~0xFF) | 0x07
        elif what == "no_end":
            for i, w in enumerate(p):
                if w == 0x0F:
                    p[i] = 0x07
        elif what == "no_head":
            end = p.index(0x0F)
            head = max(i for i in range(end) if p[i] & 0xFF == 2)
            p[head] = 0x0F                    # END before the head
        elif what == "n_too_long":
            lin = next(i for i, w in enumerate(p) if w & 0xFF == 2)
            p[lin] = (p[lin] & ~(0xFFFFFF << 24)) | (257 << 24)
        elif what == "dst_in_scratch":
            lin = next(i for i, w in enumerate(p) if w & 0xFF == 2)
            p[lin + 2] = (p[lin + 2] & ~(0xFFFFFF << 24)) | (VMEM_SCRATCH - 3) << 24
        elif what == "seg_quant":
            lin = next(i for i, w in enumerate(p) if w & 0xFF == 2 and (w >> 12) & 3 == 1)
            p[lin + 5] |= 3                   # its one segment names quantizer 3
    s, _ = _patched(tiny_icebreaker, edit)
    r = s.step(3)
    assert r.trace["error"]
    beats = r.trace["beats"]
    assert len(beats) == firmware.TOPK and [b[3] for b in beats] == [False] * 3 + [True]
    if what in ("opcode", "no_head", "n_too_long", "dst_in_scratch"):
        assert not any(b[2] for b in beats)        # nothing present without a head
    if what == "dst_in_scratch":                  # refused before the epilogue wrote anything
        assert s.vmem[VMEM_SCRATCH - 3:VMEM_SCRATCH] == [0, 0, 0]


def test_vocab_below_topk(tmp_path):
    cfg = ModelConfig(vocab_size=3, hidden_size=8, num_hidden_layers=1, intermediate_size=8)
    ck = random_checkpoint(tmp_path / "ck", cfg, seed=2)
    compile_checkpoint(ck, "icebreaker", tmp_path / "c")
    s, g = SerialMachine.from_dir(tmp_path / "c"), GoldenMachine.from_dir(tmp_path / "c")
    r = s.step(1)
    assert [b[2] for b in r.trace["beats"]] == [True, True, True, False]
    assert r.topk_ids.tolist() == g.step([1]).topk_ids.tolist()


# --------------------------------------------------------------------------- the micro-ISA

def test_encode_decode_round_trip():
    rng = random.Random(1)
    for op in Op:
        for _ in range(20):
            if op in uisa.I_TYPE:
                lo, hi = (0, 65535) if op in (Op.ANDI, Op.ORI, Op.LUI) else (-32768, 32767)
                i = Insn(op, rng.randrange(32), rng.randrange(32), imm16=rng.randint(lo, hi))
            else:
                x11 = rng.randrange(2048)
                if op in uisa.SHIFTS:
                    x11 &= ~0b1000
                    if (x11 >> 1) & 3 == 3:
                        x11 &= ~0b100
                i = Insn(op, rng.randrange(32), rng.randrange(32), rng.randrange(32), x11)
            assert uisa.decode(uisa.encode(i)) == i


def test_assembler_errors():
    a = Asm()
    a.jmp("nowhere")
    with pytest.raises(ValueError, match="undefined label 'nowhere'"):
        a.assemble()
    a = Asm()
    a.label("x")
    with pytest.raises(ValueError, match="label 'x' defined twice"):
        a.label("x")
    with pytest.raises(ValueError, match="outside \\[-32768, 32767\\]"):
        a.addi(1, 1, 40000)
    with pytest.raises(ValueError, match="r32|not a register"):
        a.add(32, 1, 1)
    with pytest.raises(ValueError, match="shift immediate 64 outside"):
        a.shr(1, 2, imm=64)
    with pytest.raises(ValueError, match="unknown micro-opcode 0x3b"):
        uisa.decode(0x3B)
    a = Asm()
    for _ in range(uisa.ROM_WORDS + 1):
        a.halt()
    with pytest.raises(ValueError, match="the ROM holds 512"):
        a.assemble()


def test_shift_unit_matches_numerics():
    rng = np.random.default_rng(3)
    for _ in range(3000):
        x = int(rng.integers(-(1 << 62), 1 << 62)) >> int(rng.integers(0, 62))
        s = int(rng.integers(0, 64))
        assert shift(x, s, True, Mode.SAT, wide=True) == int(nx.sat(nx.rshr(x, s)))
        assert shift(x, s, False, Mode.WRAP, wide=True) == ((x >> s) + (1 << 31)) % (1 << 32) - (1 << 31)
        k = int(rng.integers(1, 33))
        assert shift(x, -k, False, Mode.SAT, wide=True) == int(nx.sat(int(nx.sat(x)) << k))
        v = int(rng.integers(-(1 << 31), 1 << 31))
        assert shift(v, -k, False, Mode.WRAP, wide=False) == ((v << k) + (1 << 31)) % (1 << 32) - (1 << 31)
        assert shift(v, min(s, 31), True, Mode.CLAMP8, wide=False) == max(-128, min(127, int(nx.rshr(v, min(s, 31)))))
    with pytest.raises(SerialFault, match="shift amount 32 outside \\[-32, 31\\]"):
        shift(1, 32, False, Mode.WRAP, wide=False)
    with pytest.raises(SerialFault, match="shift amount -33"):
        shift(1, -33, False, Mode.WRAP, wide=True)
