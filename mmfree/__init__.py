"""mmfree: an open FPGA accelerator and toolchain for MatMul-free language models.

Data flows one way: checkpoint -> compiler -> images + program -> hardware
(or the integer golden model) -> host. The modules directly under ``mmfree``
(``errors``, ``config``, ``numerics``, ...) are the shared contracts at the
bottom of the import graph; they import none of ``mmfree.model``,
``mmfree.compiler``, ``mmfree.hw``, ``mmfree.host`` or ``mmfree.sim``.
"""

__version__ = "0.1.0"
