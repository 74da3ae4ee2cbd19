"""The iCE40 UP5K's single-port RAM as one 32K x 32 memory.

The UP5K has four ``SB_SPRAM256KA`` blocks of 16K x 16 bits. :class:`Spram32`
puts two side by side (32 bits) and two deep (32K words): address bit 14
selects the pair. Without an iCE40 UltraPlus platform (simulation,
Verilator) it elaborates to an :class:`amaranth.lib.memory.Memory` with the
same behaviour, so the serial core simulates unchanged.

Contract: one access per cycle; a read (``we`` low) of ``addr`` in cycle
``t`` gives ``rdata`` in cycle ``t + 1``; a write stores the 16-bit halves
whose ``wmask`` bit is set. ``rdata`` after a write is undefined. SPRAM has
no initial contents (zero in simulation).
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Spram32", "SPRAM_WORDS"]

SPRAM_WORDS = 32768


def _is_up5k(platform) -> bool:
    return platform is not None and str(getattr(platform, "device", "")).startswith("iCE40UP")


class Spram32(wiring.Component):
    """32K x 32 single-port RAM (four SB_SPRAM256KA on an iCE40 UltraPlus).

    Members
    -------
    addr : In(15)
    wdata : In(32)
    wmask : In(2)
        Write enables of the low and high 16-bit halves.
    we : In(1)
    rdata : Out(32)
        The word read in the previous cycle.
    """

    def __init__(self):
        super().__init__({"addr": In(15), "wdata": In(32), "wmask": In(2), "we": In(1), "rdata": Out(32)})

    def elaborate(self, platform):
        m = Module()
        if not _is_up5k(platform):
            m.submodules.mem = mem = memory.Memory(shape=32, depth=SPRAM_WORDS, init=[])
            wr = mem.write_port(granularity=16)
            rd = mem.read_port(transparent_for=())
            m.d.comb += [wr.addr.eq(self.addr), wr.data.eq(self.wdata), wr.en.eq(Cat(self.wmask) & self.we.replicate(2)),
                         rd.addr.eq(self.addr), rd.en.eq(~self.we), self.rdata.eq(rd.data)]
            return m
        bank = self.addr[14]
        bank_r = Signal()
        m.d.sync += bank_r.eq(bank)
        outs = {}
        for b in range(2):
            for h in range(2):
                dout = Signal(16, name=f"spram{b}{h}_do")
                outs[b, h] = dout
                m.submodules[f"spram{b}{h}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=self.addr[:14], i_DATAIN=self.wdata[16 * h:16 * h + 16], i_MASKWREN=Const(0b1111, 4),
                    i_WREN=self.we & self.wmask[h] & (bank == b), i_CHIPSELECT=Const(1, 1),
                    i_CLOCK=ClockSignal("sync"), i_STANDBY=Const(0, 1), i_SLEEP=Const(0, 1),
                    i_POWEROFF=Const(1, 1), o_DATAOUT=dout)
        m.d.comb += self.rdata.eq(Cat(outs[0, 0], outs[0, 1]))
        with m.If(bank_r):
            m.d.comb += self.rdata.eq(Cat(outs[1, 0], outs[1, 1]))
        return m

