"""Fails at import, like a plugin whose vendor library is missing or broken."""

import phi3_broken_example_no_such_vendor_library  # noqa: F401
