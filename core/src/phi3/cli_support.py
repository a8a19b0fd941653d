"""What every phi3 command shares: one-line errors, option parsing, plain tables.

The CLI's imports go one way: :mod:`phi3.cli` (the group and most commands) and
:mod:`phi3.bench_cli` (``phi3 bench``) both import this module, and nothing here imports them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from phi3.cache import exit_on_interrupt_during_builds
from phi3.errors import Phi3Error
from phi3.fs_errors import describe_os_error

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, hint: str | None = None, code: int = 1) -> None:
    click.echo(f"Error: {message}", err=True)
    if hint:
        click.echo(f"  {hint}", err=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Turn phi3 errors (and surprises) into one line and exit 1, unless --debug."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(click.get_current_context().find_root().params.get("debug"))
        exit_on_interrupt_during_builds()  # Ctrl-C in a quantize: exit 130 from a thread, never inside vendor C++
        try:
            return func(*args, **kwargs)
        except Phi3Error as exc:
            if debug:
                traceback.print_exc()
            fail(exc.message, exc.hint)
        except KeyboardInterrupt:
            click.echo("\nInterrupted.", err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except BrokenPipeError:
            quiet_broken_pipe()
        except OSError as exc:  # a full disk, a closed stdout, a permission: the user's to fix, not a bug
            if debug:
                traceback.print_exc()
            error = describe_os_error(exc, "a file" if exc.filename else "the output")
            fail(error.message, error.hint)
        except Exception as exc:
            if debug:
                traceback.print_exc()
            fail(
                f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())}",
                "this is a bug in phi3; run with --debug for the traceback and report it",
            )
        return None

    return wrapper  # type: ignore[return-value]


def quiet_broken_pipe() -> None:
    """The reader went away (``phi3 generate ... | head -c1``): stop quietly, as ``yes | head`` does.

    stdout is pointed at devnull first so the interpreter's final flush cannot fail again.
    """
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(141)  # 128 + SIGPIPE, what a shell reports for a writer killed by the broken pipe


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="'-O/--option'")
        options[key.strip()] = parse_value(value)
    return options


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def flush_stdout() -> None:
    """Flush stdout now, while a failure can still be one line (at interpreter exit it would abort)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_broken_pipe()
    except (OSError, ValueError) as exc:
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        fail(f"cannot write the output: {reason}", "check where stdout goes (a full disk, a closed pipe)")


__all__ = ["F", "fail", "flush_stdout", "handle_errors", "parse_options", "table"]
