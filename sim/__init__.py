"""Simulation: the Verilator harness of the SoC top and the cocotb runner helpers."""
