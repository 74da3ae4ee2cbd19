"""Host driver: one client for boards (/dev/tty*) and the Verilator harness (socket://)."""
