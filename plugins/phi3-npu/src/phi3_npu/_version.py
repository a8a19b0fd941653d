"""The phi3-npu version, kept apart so that the probe can read it without importing anything."""

__version__ = "0.1.0"
