"""``phi3 bench``: measure backends side by side (see :mod:`phi3.bench` for the method).

Registered on the main CLI by :mod:`phi3.cli` (``cli.add_command(bench)``); shares only
:mod:`phi3.cli_support` with it, so the imports go one way.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from phi3.cli_support import handle_errors, table
from phi3.errors import ConfigError
from phi3.plugins import get_registry

F = TypeVar("F", bound=Callable[..., Any])


def _device_kind(backend: str, device: str) -> str | None:
    """The device class (npu/gpu/cpu) of a device a backend reported, None if it reports no such device."""
    entry = next((e for e in get_registry().entries() if e.name == backend), None)
    info = entry.info if entry is not None else None
    if info is None:
        return None
    for known in (*info.devices, *info.override_devices):
        if known.name.lower() == device.lower():
            return known.kind
    return None


def save_speeds(report: Mapping[str, Any], model: str, revision: str | None) -> tuple[Path | None, str]:
    """Keep each measured target's median decode rate for ``backend="auto"`` (see phi3.speed_records).

    Returns (file written or None, a line saying what happened).
    """
    from phi3.speed_records import SpeedRecord, model_size_bucket, save_records

    bucket = model_size_bucket(model, revision)
    if bucket is None:
        return None, f"decode speeds not saved for auto: the size of {model} could not be told from a config.json"
    when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    records = []
    for item in report["results"]:
        rate = item["summary"].get("decode_tokens_per_s")
        kind = _device_kind(item["backend"], item["device"])
        if rate is None or kind is None or not item.get("precision"):
            continue
        records.append(
            SpeedRecord(
                item["backend"],
                item["engine"],
                item["device"],
                kind,
                item["precision"],
                bucket,
                float(rate["median"]),
                when,
                model,
            )
        )
    if not records:
        return None, "decode speeds not saved for auto: nothing was measured"
    path = save_records(records)
    return path, f"decode speeds saved for auto ({bucket} models): {path}"


class _Bar:
    """A tqdm bar on stderr counting measuring processes (nothing when disabled)."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._bar: Any = None

    def __call__(self, message: str, completed: int, total: int) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, file=sys.stderr, leave=False, dynamic_ncols=True, unit="proc")
        self._bar.set_description_str(message)
        self._bar.n = completed
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@click.command()
@click.argument("model")
@click.option(
    "-b", "--backends", default=None, metavar="A,B", help="Backends to compare (default: every installed backend)."
)
@click.option(
    "-e",
    "--engines",
    default=None,
    metavar="E,F",
    help="Engines: names, backend:engine, or all (default: each backend's default engine).",
)
@click.option(
    "-d",
    "--device",
    "devices",
    default=None,
    metavar="D,E",
    help="Device(s) to run on, tried on every backend (default: auto).",
)
@click.option("-p", "--precision", default=None, help="Precision, e.g. int4 (default: each backend's, int4).")
@click.option(
    "--prompt-tokens",
    type=int,
    default=128,
    show_default=True,
    help="Exact prompt length, counted with the model's tokenizer.",
)
@click.option(
    "--new-tokens",
    type=int,
    default=128,
    show_default=True,
    help="Tokens decoded per run (end-of-sequence is suppressed).",
)
@click.option("--runs", type=int, default=5, show_default=True, help="Measured runs per target.")
@click.option(
    "--cold/--no-cold",
    default=True,
    show_default=True,
    help="Also time cold loads (empty compiled-blob cache), one extra process per run.",
)
@click.option("--revision", default=None, help="Hugging Face revision of a hub model.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON on stdout.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE.png",
    help="Also write a bar chart (needs matplotlib).",
)
@click.option(
    "--save/--no-save",
    default=True,
    show_default=True,
    help="Keep the measured decode rates under PHI3_HOME, so that backend auto prefers the fastest backend "
    "within a device class for models of this size.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def bench(
    model: str,
    backends: str | None,
    engines: str | None,
    devices: str | None,
    precision: str | None,
    prompt_tokens: int,
    new_tokens: int,
    runs: int,
    cold: bool,
    revision: str | None,
    as_json: bool,
    plot: Path | None,
    save: bool,
    quiet: bool,
) -> None:
    """Benchmark MODEL on several backends: load, first token, decode rate, memory.

    Every run is a new process: cold load (empty compiled-blob cache), then warm load (cache
    filled) and a generation of --new-tokens tokens from a --prompt-tokens prompt. Runs are
    interleaved across backends; the table shows the median (min-max). Artifacts are built into
    phi3's cache first if needed (not timed as a run). Backends that cannot run are listed with why.
    The median decode rates are saved under PHI3_HOME (--no-save: not), and backend auto then picks
    the fastest measured backend within the best device class for models of this size.
    """
    from phi3.bench import (  # here, not at the top: `phi3 list-backends` should not pay for it
        BenchSettings,
        build_report,
        import_pyplot,
        plan_targets,
        plot_report,
        run_benchmark,
        table_rows,
    )

    settings = BenchSettings(
        model=model,
        precision=precision,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        runs=runs,
        revision=revision,
        cold=cold,
    )
    if plot is not None:
        import_pyplot()  # fail now, not after minutes of measuring
    targets, unavailable = plan_targets(get_registry(), backends, engines, devices)
    if not targets:
        reasons = "; ".join(f"{u.backend}{'/' + u.engine if u.engine else ''}: {u.reason}" for u in unavailable)
        raise ConfigError(
            f"no backend can be benchmarked here ({reasons or 'no backend is installed'})",
            hint="see phi3 list-backends",
        )
    bar = _Bar(enabled=not quiet)
    try:
        results, prompt = run_benchmark(settings, targets, progress=bar)
    finally:
        bar.close()
    report = build_report(settings, results, unavailable, prompt)
    if save and report["results"]:
        _, note = save_speeds(report, model, revision)
        click.echo(f"phi3: {note}", err=True)
    if plot is not None and report["results"]:
        plot_report(report, plot)
        click.echo(f"phi3: chart written to {plot}", err=True)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        headers, rows = table_rows(report)
        s = report["settings"]
        click.echo(
            f"{model}: {s['prompt_tokens']}-token prompt, {s['new_tokens']} new tokens (EOS suppressed), "
            f"median (min-max) of {s['runs']} runs, each in a new process"
        )
        if rows:
            click.echo(table(headers, rows))
        for item in report["unavailable"]:
            what = item["backend"] + (f"/{item['engine']}" if item["engine"] else "")
            click.echo(f"  not measured: {what}: {item['reason']}")
    if not report["results"]:
        sys.exit(1)


__all__ = ["bench"]
