"""NumPy implementations of every supported op: the reference backend and the CPU fallback.

Each op is a plain function registered under its ONNX name with :func:`register`; one module per
op family (conv, pool, linalg, elementwise, tensor, reduce, detection, quant). An implementation takes the
list of input arrays (``None`` for an omitted optional input) and the node's attribute dict, and
returns the list of output arrays. Semantics are those of ONNX opset 17: the frontend rewrites
older opsets into that form before the op sees them.
"""

from edgeinfer.ops.registry import OPS, OpFn, OpSpec, get_op, register

__all__ = ["OPS", "OpFn", "OpSpec", "get_op", "register"]

# Import the op families so that their @register decorators run.
from edgeinfer.ops import (  # noqa: E402,F401
    conv,
    detection,
    elementwise,
    linalg,
    pool,
    quant,
    reduce,
    tensor,
)
