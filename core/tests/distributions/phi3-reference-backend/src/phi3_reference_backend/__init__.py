"""Marker package: the backend itself lives in phi3.testing.reference_backend."""
