"""edgeinfer: run precompiled CNN models (.pack) on OpenCL GPUs, CUDA GPUs or NumPy.

    import edgeinfer
    sess = edgeinfer.Session("model.pack")   # picks the best device
    result = sess.run(img)                   # top-k labels or detections

Importing edgeinfer needs only numpy; compiling a model (``edgeinfer.compiler``) needs onnx.
"""

from edgeinfer.errors import (
    CompileError,
    DeviceError,
    EdgeInferError,
    ImageError,
    InputError,
    PackError,
    UnsupportedOpError,
)
from edgeinfer.session import Session, TensorSpec

__version__ = "0.1.0"

__all__ = [
    "CompileError",
    "DeviceError",
    "EdgeInferError",
    "ImageError",
    "InputError",
    "PackError",
    "Session",
    "TensorSpec",
    "UnsupportedOpError",
    "__version__",
]
