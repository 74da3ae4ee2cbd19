"""Instruction encoding (mmfree/isa.py): roundtrips, field checks, malformed programs."""

from __future__ import annotations

import numpy as np
import pytest

from mmfree import isa
from mmfree.isa import Embed, End, Epilogue, IsaError, Linear, Quant, Segment


def _linear(epi=Epilogue.ADD, **kw):
    nseg = {Epilogue.MLGRU: 3, Epilogue.GLU: 2}.get(epi, 1)
    base = dict(src=1, n=64, cu=7, wmem=3, quants=(Quant(100, 40000, -20),),
                segments=tuple(Segment(0, 64) for _ in range(nseg)), epilogue=epi, dst=2, aux=5)
    base.update(kw)
    return Linear(**base)


def test_roundtrip_hand_program():
    prog = [
        Embed(dst=0, n=1024, codes=0, scales=32_768_000, code_bits=16),
        Linear(src=0, n=1024, cu=9, wmem=0, quants=(Quant(1, 0x8000, -24), Quant(2, 0xFFFF, 5), Quant(3, 0, 0)),
               segments=(Segment(0, 1024), Segment(1, 1024), Segment(2, 1024)), epilogue=Epilogue.MLGRU,
               dst=2048, aux=4096, lb=123456),
        Linear(src=2048, n=1024, cu=11, wmem=12288, quants=(Quant(5, 40000, -30),), segments=(Segment(0, 1024),),
               epilogue=Epilogue.ADD, dst=1024, aux=0),
        Linear(src=1024, n=1024, cu=12, wmem=16384, quants=(Quant(6, 40001, -31),),
               segments=(Segment(0, 2816), Segment(0, 2816)), epilogue=Epilogue.GLU, dst=3072),
        Linear(src=3072, n=2816, cu=None, wmem=16384 + 22528, quants=(Quant(7, 50000, -29),),
               segments=(Segment(0, 1024),), epilogue=Epilogue.ADD, dst=0, aux=1024),
        Linear(src=0, n=1024, cu=13, wmem=2**32 - 1, quants=(Quant(2**32 - 1, 1, -(2**15)),),
               segments=(Segment(0, 32000),), epilogue=Epilogue.TOPK, dst=0),
        Linear(src=2**24 - 1, n=2**24 - 1, cu=None, wmem=0, quants=(Quant(0, 0, 2**15 - 1),),
               segments=(Segment(0, 2**24 - 1),), epilogue=Epilogue.WRITE, dst=2**24 - 1),
        End(),
    ]
    words = isa.encode(prog)
    assert all(isinstance(w, int) and 0 <= w < 2**64 for w in words)
    assert len(words) == sum(i.size for i in prog) == 2 + 10 + 6 + 7 + 6 + 6 + 6 + 1
    assert isa.decode(words) == prog
    assert words[-1] == 0x0F
    assert words[0] & 0xFF == 0x01 and words[2] & 0xFF == 0x02


def _random_instruction(rng) -> isa.Instruction:
    kind = rng.integers(0, 3)
    r = lambda bits: int(rng.integers(0, 2**bits, dtype=np.uint64))  # noqa: E731
    if kind == 0:
        return Embed(dst=r(24), n=max(1, r(24)), codes=r(32), scales=r(32), code_bits=int(rng.choice([8, 16])))
    if kind == 1:
        epi = Epilogue(int(rng.integers(0, 5)))
        nseg = {Epilogue.MLGRU: 3, Epilogue.GLU: 2}.get(epi, 1)
        nq = int(rng.integers(1, 4))
        rows = max(1, r(24))
        quants = tuple(Quant(cv=r(32), k_m=r(16), k_e=int(rng.integers(-2**15, 2**15))) for _ in range(nq))
        segs = tuple(Segment(q=int(rng.integers(0, nq)), rows=rows) for _ in range(nseg))
        return Linear(src=r(24), n=max(1, r(24)), cu=None if rng.random() < 0.3 else r(32), wmem=r(32),
                      quants=quants, segments=segs, epilogue=epi, dst=r(24), aux=r(24),
                      lb=r(32) if epi == Epilogue.MLGRU and rng.random() < 0.5 else None)
    return End()


def test_roundtrip_random_programs():
    rng = np.random.default_rng(0)
    for _ in range(300):
        prog = [_random_instruction(rng) for _ in range(int(rng.integers(1, 12)))]
        words = isa.encode(prog)
        assert isa.decode(words) == prog
        assert isa.decode(np.array(words, dtype=np.uint64)) == prog    # numpy words decode too
        assert len(isa.disassemble(words).splitlines()) == len(prog)


@pytest.mark.parametrize("make, field", [
    (lambda: Embed(dst=1 << 24, n=1, codes=0, scales=0, code_bits=8), "dst"),
    (lambda: Embed(dst=0, n=1 << 24, codes=0, scales=0, code_bits=8), "n"),
    (lambda: Embed(dst=0, n=1, codes=1 << 32, scales=0, code_bits=8), "codes"),
    (lambda: Embed(dst=-1, n=1, codes=0, scales=0, code_bits=8), "dst"),
    (lambda: Quant(cv=0, k_m=1 << 16, k_e=0), "k_m"),
    (lambda: Quant(cv=0, k_m=0, k_e=1 << 15), "k_e"),
    (lambda: Quant(cv=0, k_m=0, k_e=-(1 << 15) - 1), "k_e"),
    (lambda: Segment(q=4, rows=1), "q"),
    (lambda: Segment(q=0, rows=1 << 24), "rows"),
    (lambda: _linear(src=1 << 24), "src"),
    (lambda: _linear(dst=1 << 24), "dst"),
    (lambda: _linear(aux=-1), "aux"),
    (lambda: _linear(n=1 << 24), "n"),
    (lambda: _linear(wmem=1 << 32), "wmem"),
    (lambda: _linear(cu=1 << 32), "cu"),
    (lambda: _linear(Epilogue.MLGRU, lb=1 << 32), "lb"),
    (lambda: _linear(src=1.5), "src"),
])
def test_field_overflow(make, field):
    with pytest.raises(IsaError, match=field):
        ins = make()
        ins.encode() if not isinstance(ins, (Quant, Segment)) else ins.encode()


@pytest.mark.parametrize("make, msg", [
    (lambda: Embed(dst=0, n=1, codes=0, scales=0, code_bits=12), "code_bits"),
    (lambda: _linear(quants=()), "1 to 3 quantizers"),
    (lambda: _linear(quants=(Quant(0, 0, 0),) * 4), "1 to 3 quantizers"),
    (lambda: _linear(segments=(Segment(1, 64),)), "quantizer 1"),
    (lambda: _linear(Epilogue.GLU, segments=(Segment(0, 64), Segment(0, 65))), "equal row counts"),
    (lambda: _linear(Epilogue.MLGRU, segments=(Segment(0, 64), Segment(0, 64))), "needs 3 segments"),
    (lambda: _linear(Epilogue.ADD, lb=5), "MLGRU"),
    (lambda: _linear(n=0), "n >= 1"),
])
def test_structural_errors(make, msg):
    with pytest.raises(IsaError, match=msg):
        make()


def test_truncated_program():
    prog = [Embed(0, 16, 0, 100, 8), _linear(Epilogue.MLGRU), End()]
    words = isa.encode(prog)
    with pytest.raises(IsaError, match="word 2: LINEAR truncated"):
        isa.decode(words[:-3])
    with pytest.raises(IsaError, match="word 0: EMBED truncated"):
        isa.decode(words[:1])
    for cut in range(len(words)):
        try:
            isa.decode(words[:cut])
        except IsaError as e:
            assert "truncated" in str(e)


def test_malformed_words():
    words = isa.encode([_linear(), End()])
    with pytest.raises(IsaError, match="unknown opcode 0x07"):
        isa.decode([0x07])
    with pytest.raises(IsaError, match="word 0: reserved bits"):
        isa.decode([words[0] | 1 << 20] + words[1:])
    with pytest.raises(IsaError, match="reserved bits of END"):
        isa.decode(words[:-1] + [0x10F])
    with pytest.raises(IsaError, match="unknown epilogue 9"):
        isa.decode([(words[0] & ~(0xF << 8)) | 9 << 8] + words[1:])
    with pytest.raises(IsaError, match="segment word"):
        isa.decode(words[:-2] + [words[-2] | 1 << 40, words[-1]])
    with pytest.raises(IsaError, match="64-bit"):
        isa.decode([1 << 64])
    # nseg = 0 is structurally invalid even when the words are there
    with pytest.raises(IsaError, match="word 0: LINEAR needs 1 to 3 segments"):
        isa.decode([words[0] & ~(3 << 14)] + words[1:])


def test_disassemble_labels():
    prog = [Embed(0, 16, 0, 100, 8), _linear(Epilogue.MLGRU, lb=77), End()]
    text = isa.disassemble(isa.encode(prog), ["emb", "L0.attn", ""])
    lines = text.splitlines()
    assert lines[0].startswith("    0  EMBED") and lines[0].endswith("; emb")
    assert "LINEAR  MLGRU" in lines[1] and "lb=c77" in lines[1] and "; L0.attn" in lines[1]
    assert lines[2].split() == ["10", "END"]   # EMBED 2 + LINEAR 4 + 1 quantizer + 3 segments
