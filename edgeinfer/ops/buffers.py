"""Per-thread work buffers shared by the conv and pool kernels (of the ops and of the NumPy backend).

A model run then allocates only its outputs, and successive layers reuse the same, cache-warm memory.
Buffers are per thread so that two threads can run ops at the same time.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Hashable

import numpy as np

_local = threading.local()


def scratch(name: Hashable, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Per-thread work buffer ``name`` with undefined contents, shared by every call and every layer.

    One buffer per name (grown when a bigger shape asks) keeps the scratch of successive layers in the
    same, cache-warm memory.
    """
    buffers = _local.__dict__.setdefault("scratch", {})
    size, dtype = math.prod(shape), np.dtype(dtype)
    flat = buffers.get((name, dtype))
    if flat is None or flat.size < size:
        flat = buffers[(name, dtype)] = np.empty(size, dtype)
    return flat[:size].reshape(shape)


def filled_buffer(key: Hashable, shape: tuple[int, ...], dtype: np.dtype, fill: float) -> np.ndarray:
    """Per-thread buffer for one padded geometry ``key`` whose padding, written once with ``fill``, persists.

    One per geometry (about the size of that layer's input), so that a call only copies the interior.
    Callers must write only the interior, never the border.
    """
    buffers = _local.__dict__.setdefault("filled", {})
    key = (key, shape, np.dtype(dtype).str, fill)
    buf = buffers.get(key)
    if buf is None:
        buf = buffers[key] = np.full(shape, fill, dtype)
    return buf
