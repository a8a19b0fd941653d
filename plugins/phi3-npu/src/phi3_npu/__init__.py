"""phi3-npu: the Intel NPU backend of phi3."""

from phi3_npu._version import __version__

__all__ = ["__version__"]
