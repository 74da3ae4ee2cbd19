"""The modules in this folder are cocotb testbenches: they run inside the simulator.

:func:`mmfree.sim.runner.run_cocotb` imports them there (this folder goes on
the simulator's ``sys.path``); the pytest wrappers are ``tests/test_*_cocotb.py``.
pytest itself must not import them.
"""

collect_ignore_glob = ["*.py"]
