"""The phi3-openvino version, kept apart so that the probe can read it without importing anything."""

__version__ = "0.1.1"
