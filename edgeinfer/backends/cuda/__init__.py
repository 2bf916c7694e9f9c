"""The CUDA backend's driver-facing pieces (device discovery, program sources, program cache) through CuPy.

Not registered as a backend yet: the executor waits for the driver-free planning layer (docs/cuda.md).
"""
