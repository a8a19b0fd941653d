"""Strict xfails that pin an upstream bug by its own error, not by "anything went wrong".

A strict xfail names the exception it expects (``raises=AssertionError``) and its body asserts exactly
the behaviour that shows the bug, so an unrelated failure (an ImportError of a renamed helper, a vendor
error of another kind) turns the test red instead of counting as "the bug is still there". Where the
bug shows as a vendor exception rather than a wrong value, :func:`upstream_bug` turns that exception,
and only that one, into the ``AssertionError`` the xfail expects::

    @pytest.mark.xfail(strict=True, raises=AssertionError, reason="vendor 1.2 crashes on ...")
    def test_vendor_still_crashes_upstream() -> None:
        with upstream_bug(RuntimeError, match="cos_cache dimension 1 must be"):
            run_the_vendor_call()

``tests/test_xfail_policy.py`` (at the repository root) fails on a strict xfail without ``raises=``.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager


class UpstreamBugStillThere(AssertionError):
    """The upstream bug's own error was raised: the strict xfail that pins it still xfails."""


@contextmanager
def upstream_bug(*errors: type[BaseException], match: str, raised_in: str | None = None) -> Iterator[None]:
    """Re-raise an error of type ``errors`` whose message matches ``match`` (``re.search``), and, with
    ``raised_in``, that was raised in the function of that name (the innermost frame), as
    :class:`UpstreamBugStillThere` (an ``AssertionError``); any other error propagates unchanged.

    Used inside a strict ``xfail(raises=AssertionError)``: the known bug xfails, anything else fails.
    """
    if not errors:
        raise TypeError("upstream_bug needs at least one exception type")
    try:
        yield
    except errors as error:
        if re.search(match, str(error)) is None:
            raise
        frames = traceback.extract_tb(error.__traceback__)
        if raised_in is not None and (not frames or frames[-1].name != raised_in):
            raise
        raise UpstreamBugStillThere(f"upstream bug still there: {type(error).__name__}: {error}") from error
