"""Cross-package tests: run by the nox `integration` session with every plugin installed together."""

pytest_plugins = ["phi3.testing.fixtures"]
