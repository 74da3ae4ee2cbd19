"""Compiler: checkpoint -> packed memory images, program and manifest."""
