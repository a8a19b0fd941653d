"""phi3's conformance fixtures (an isolated, session-scoped PHI3_HOME: each artifact is built once)."""

from __future__ import annotations

pytest_plugins = ["phi3.testing.fixtures"]
