"""Broken phi3 plugins for phi3's own tests (see pyproject.toml)."""
