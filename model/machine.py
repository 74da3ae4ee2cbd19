"""The golden machine: the integer golden model executing a compiled program from memory images.

Where :class:`~mmfree.model.golden.GoldenModel` steps a
:class:`~mmfree.compiled.CompiledModel`, this machine holds what the
hardware holds (docs/isa.md): ``wmem`` (packed tile words), ``cmem``
(16-bit constant words), ``vmem`` (V32 words, one row per stream) and
``pmem`` (64-bit program words). It decodes the program and runs it
instruction by instruction, reading every operand from those memories the
way the hardware reads them: tiles are unpacked from wmem words with
:mod:`mmfree.packing` and put back in place by the tile order; C16 weights,
P16 lower bounds, embedding codes and scales are read from cmem words.

The arithmetic is not reimplemented: ``EMBED`` is
:func:`mmfree.numerics.dequantize`, a LINEAR's input stage is
:func:`mmfree.model.golden.input_stage`, and its epilogues are
:func:`~mmfree.model.golden.mlgru`, :func:`~mmfree.model.golden.glu`,
:func:`~mmfree.model.golden.topk` and :func:`mmfree.numerics.sat`. So the
machine run from a compiled directory equals ``GoldenModel`` run from the
checkpoint bit for bit, which the tests check; that pins the compiler's
packing, layout and program to the numerics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmfree import isa
from mmfree import numerics as nx
from mmfree import packing as pk
from mmfree.errors import MmfreeError

from .golden import StepResult, glu, input_stage, mlgru, topk


class MachineError(MmfreeError):
    """The program reads outside a memory, or does something the hardware cannot."""


class GoldenMachine:
    """Executes a program on memory images, one token per step for each of ``batch`` streams.

    Parameters
    ----------
    wmem : ndarray uint8 [words, bytes]
        Packed tile words, little-endian bytes per word.
    cmem : ndarray uint16 [words]
    pmem : sequence of int
        64-bit program words.
    rows, cols, packing, topk : target parameters (the manifest's ``target``).
    vmem_words : int
        vmem size (zeroed at reset).
    """

    def __init__(self, wmem: np.ndarray, cmem: np.ndarray, pmem, *, rows: int, cols: int, packing: str,
                 topk: int, vmem_words: int, batch: int = 1):
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.wmem = np.asarray(wmem, dtype=np.uint8)
        self.cmem = np.asarray(cmem, dtype=np.uint16)
        self.pmem = [int(w) for w in pmem]
        self.rows, self.cols, self.packing, self.k = rows, cols, packing, topk
        self.vmem_words, self.batch = vmem_words, batch
        self.program = isa.decode(self.pmem)
        if not any(isinstance(i, isa.End) for i in self.program):
            raise MachineError("program has no END")
        self._weights: dict[int, list[np.ndarray]] = {}   # instruction index -> matrix per quantizer
        self.reset()

    # ------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path: str | Path, batch: int = 1, fmt: str = "bin") -> "GoldenMachine":
        """Load the images a compile wrote to ``path`` (``fmt``: ``"bin"`` or ``"hex"`` files)."""
        path = Path(path)
        try:
            man = json.loads((path / "manifest.json").read_text())
        except FileNotFoundError:
            raise MachineError(f"{path}: no manifest.json (not a compiled directory)") from None
        t = man["target"]
        imgs = man["images"]
        read = pk.read_bin if fmt == "bin" else pk.read_hex
        words = {name: read(path / imgs[name][fmt], imgs[name]["width"]) for name in ("wmem", "cmem", "pmem")}
        cmem = pk.words_int(words["cmem"], 16).astype(np.uint16)
        pmem = [int(w) for w in pk.words_int(words["pmem"], 64)]
        vmem = man["capacity"]["vmem"]
        vwords = vmem["available_words"] or vmem["used_words"]
        return cls(words["wmem"], cmem, pmem, rows=t["rows"], cols=t["cols"], packing=t["packing"],
                   topk=t["topk"], vmem_words=vwords, batch=batch)

    def reset(self) -> None:
        """Zero vmem (the recurrent state of every layer)."""
        self.vmem = np.zeros((self.batch, self.vmem_words), dtype=np.int64)

    # ------------------------------------------------------------------
    # memory reads, bounds-checked
    def _cm(self, addr: int, n: int, what: str) -> np.ndarray:
        if addr + n > len(self.cmem):
            raise MachineError(f"{what}: cmem [{addr}, {addr + n}) beyond its {len(self.cmem)} words")
        return self.cmem[addr:addr + n]

    def _c16(self, addr: int, n: int, what: str) -> np.ndarray:
        return self._cm(addr, n, what).view(np.int16).astype(np.int64)

    def _vm(self, addr: int, n: int, what: str) -> slice:
        if addr + n > self.vmem_words:
            raise MachineError(f"{what}: vmem [{addr}, {addr + n}) beyond its {self.vmem_words} words")
        return slice(addr, addr + n)

    def weights(self, idx: int) -> list[np.ndarray | None]:
        """Ternary matrices (float32) of LINEAR ``idx`` per quantizer: its segments stacked in order.

        Read from wmem as the hardware streams them: ``ntiles`` words from the
        instruction's address, unpacked, placed by the tile order.
        """
        if idx not in self._weights:
            ins = self.program[idx]
            nseg = len(ins.segments)
            ntiles = pk.n_tiles(ins.rows, ins.n, nseg, self.rows, self.cols)
            if ins.wmem + ntiles > len(self.wmem):
                raise MachineError(f"instruction {idx}: wmem [{ins.wmem}, {ins.wmem + ntiles}) beyond its "
                                   f"{len(self.wmem)} words")
            tiles = pk.unpack_tiles(self.wmem[ins.wmem:ins.wmem + ntiles], self.rows * self.cols, self.packing)
            segs = pk.untile_stream(tiles, nseg, ins.rows, ins.n, self.rows, self.cols)
            mats = []
            for qi in range(len(ins.quants)):
                mine = [segs[s] for s, seg in enumerate(ins.segments) if seg.q == qi]
                mats.append(np.concatenate(mine).astype(np.float32) if mine else None)
            self._weights[idx] = mats
        return self._weights[idx]

    # ------------------------------------------------------------------
    def _embed(self, ins: isa.Embed, tokens: np.ndarray) -> None:
        n = ins.n
        stride = n if ins.code_bits == 16 else -(-n // 2)
        rows = []
        for v in tokens.tolist():
            words = self._cm(ins.codes + v * stride, stride, "EMBED codes")
            codes = words.view(np.int16) if ins.code_bits == 16 else words.astype("<u2").view(np.int8)
            rows.append(codes[:n].astype(np.int64))
        sc = np.stack([self._cm(ins.scales + 2 * v, 2, "EMBED scales") for v in tokens.tolist()])
        m, e = sc[:, 0].astype(np.int64), sc[:, 1].view(np.int16).astype(np.int64)
        self.vmem[:, self._vm(ins.dst, n, "EMBED dst")] = nx.dequantize(np.stack(rows), m, e)

    def _linear(self, idx: int, ins: isa.Linear):
        n, rows = ins.n, ins.rows
        b = self.vmem[:, self._vm(ins.src, n, f"instruction {idx} src")]
        cu = None if ins.cu is None else self._c16(ins.cu, n, f"instruction {idx} cu")
        mats = self.weights(idx)
        projs, used = [], []
        for qi, q in enumerate(ins.quants):
            cv = self._c16(q.cv, n, f"instruction {idx} cv{qi}")
            if mats[qi] is not None:
                projs.append((f"q{qi}", mats[qi], cv, (q.k_m, q.k_e)))
                used.append(qi)
        topk_head = ins.epilogue == isa.Epilogue.TOPK
        outs = dict(zip(used, input_stage(b, cu, projs, dequant=not topk_head)))
        if topk_head:
            acc, s_m, s_e = outs[ins.segments[0].q]
            ids, top = topk(acc, self.k)
            return StepResult(acc=acc, scale_m=s_m, scale_e=s_e, topk_ids=ids, topk_acc=top, trace={})
        # split each quantizer's rows back into its segments, in order
        seg_out, offs = [], {}
        for seg in ins.segments:
            o = offs.get(seg.q, 0)
            seg_out.append(outs[seg.q][:, o:o + rows])
            offs[seg.q] = o + rows
        dst = self._vm(ins.dst, rows, f"instruction {idx} dst")
        epi = ins.epilogue
        if epi == isa.Epilogue.WRITE:
            self.vmem[:, dst] = seg_out[0]
        elif epi == isa.Epilogue.ADD:
            aux = self.vmem[:, self._vm(ins.aux, rows, f"instruction {idx} aux")]
            self.vmem[:, dst] = nx.sat(aux + seg_out[0])
        elif epi == isa.Epilogue.MLGRU:
            hs = self._vm(ins.aux, rows, f"instruction {idx} h")
            lb = None if ins.lb is None else self._cm(ins.lb, rows, f"instruction {idx} lb").astype(np.int64)
            h, out, _, _ = mlgru(seg_out[0], seg_out[1], seg_out[2], self.vmem[:, hs], lb)
            self.vmem[:, hs] = h
            self.vmem[:, dst] = out
        elif epi == isa.Epilogue.GLU:
            self.vmem[:, dst] = glu(seg_out[0], seg_out[1])
        else:  # pragma: no cover - Epilogue is closed
            raise MachineError(f"instruction {idx}: unsupported epilogue {epi!r}")
        return None

    def step(self, tokens) -> StepResult:
        """Run the program once for every stream; returns the last TOPK result."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if tokens.shape[0] != self.batch:
            raise ValueError(f"expected {self.batch} tokens, got {tokens.shape[0]}")
        vocab = next(i.rows for i in self.program if isinstance(i, isa.Linear) and i.epilogue == isa.Epilogue.TOPK)
        if tokens.min() < 0 or tokens.max() >= vocab:
            raise ValueError(f"token id out of range [0, {vocab})")
        result = None
        for idx, ins in enumerate(self.program):
            if isinstance(ins, isa.Embed):
                self._embed(ins, tokens)
            elif isinstance(ins, isa.Linear):
                r = self._linear(idx, ins)
                if r is not None:
                    result = r
            else:
                break
        if result is None:
            raise MachineError("program ended without a TOPK result")
        return result
