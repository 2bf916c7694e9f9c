"""Exceptions raised by edgeinfer. Each message names the thing that is wrong and what was expected."""


class EdgeInferError(Exception):
    """Base class of every edgeinfer error."""


class PackError(EdgeInferError):
    """A .pack file is corrupt, truncated, forged, foreign or of an unsupported version, or cannot be written."""


class InputError(EdgeInferError, ValueError):
    """A run-time input is wrong: an unknown or missing input name, a wrong shape or dtype (also a ValueError)."""


class ImageError(InputError):
    """An image cannot be read or is not one the pipeline takes (missing file, not an image, empty, wrong kind)."""


class PipelineError(EdgeInferError, ValueError):
    """A pipeline dict, file or override is malformed, or does not fit the model; the message names the key and what
    was expected (also a ValueError)."""


class CompileError(EdgeInferError):
    """A model cannot be compiled."""


class UnsupportedOpError(CompileError):
    """An op, or an attribute of an op, that edgeinfer does not implement."""

    def __init__(self, op: str, node: str, opset: int, detail: str = ""):
        self.op, self.node, self.opset = op, node, opset
        msg = f"unsupported op {op!r} (node {node!r}, opset {opset})"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class DeviceError(EdgeInferError):
    """A requested device or backend is missing or unusable."""
