"""Error types shared by every layer.

Every user-facing failure raises a subclass of :class:`MmfreeError` whose
message is one line naming the cause (the tensor, field, file or tool). The
CLI prints that line and exits non-zero.
"""


class MmfreeError(Exception):
    """Base class: a clear, one-line, user-facing error."""


class CheckpointError(MmfreeError):
    """A checkpoint or its config is malformed or unsupported."""


class CapacityError(MmfreeError):
    """A model does not fit a target's memories."""


class LinkError(MmfreeError):
    """The host link failed: timeout, bad frame, error reply."""


class ToolError(MmfreeError):
    """An external tool (Verilator, Yosys, nextpnr) is missing or failed."""
