"""Amaranth hardware: ternary accumulate array, vector pipeline, sequencer, link, SoC tops."""
