"""The ``phi3`` command line (also ``python -m phi3``).

User errors exit 1 with one line (``Error: ...``) plus the fix; usage errors exit 2 (click);
``--debug`` shows tracebacks. Generated text streams to stdout; everything else (what was picked,
progress, timings) goes to stderr, so ``phi3 generate ... > answer.txt`` keeps only the answer.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

import phi3
from phi3 import __version__
from phi3.adapter_cli import adapter_options, parse_adapter_args
from phi3.bench_cli import bench
from phi3.cache import ArtifactCache
from phi3.cli_support import flush_stdout, handle_errors, parse_options, table
from phi3.errors import ConfigError, Phi3Error
from phi3.fs_errors import translate_os_errors
from phi3.generation_config import GenerationConfig
from phi3.hookspecs import PLUGIN_API_VERSION
from phi3.model import Model, TextStream
from phi3.options import describe_options
from phi3.plugins import BackendEntry, get_registry
from phi3.progress import CliProgress, silence_vendor_progress_bars
from phi3.server.command import serve
from phi3.types import BackendInfo, BackendStatus, DeviceInfo, GenerationResult

F = TypeVar("F", bound=Callable[..., Any])

INSTALL_HINT = (
    "No phi3 backend is installed. Add one:\n"
    "  pip install phi3-openvino   # OpenVINO: Intel CPU / GPU / NPU\n"
    "  pip install phi3-dml        # ONNX Runtime GenAI: DirectML GPUs on Windows, CPU elsewhere\n"
    "  pip install phi3-npu        # Intel NPU (Core Ultra)\n"
    "  pip install phi3-llamacpp   # llama.cpp: any CPU; Vulkan / Metal / CUDA GPU builds"
)


# -- shared options ----------------------------------------------------------------------------


def backend_options(func: F) -> F:
    decorators = [
        click.option("-b", "--backend", default="auto", show_default=True, help="Backend name, or auto."),
        click.option(
            "-d", "--device", default="auto", show_default=True, help="Device (e.g. CPU, GPU.0, NPU), or auto."
        ),
        click.option("-p", "--precision", default=None, help="Precision, e.g. int4 (default), int8, fp16."),
        click.option("-e", "--engine", default=None, help="Backend engine (default: the backend's first usable)."),
        click.option(
            "-O",
            "--option",
            "options",
            multiple=True,
            metavar="KEY=VALUE",
            help="Backend option (value parsed as JSON when possible), repeatable.",
        ),
        click.option("--revision", default=None, help="Hugging Face revision of a hub model."),
        click.option("--trust-remote-code", is_flag=True, help="Allow the checkpoint's own Python code."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def generation_options(func: F) -> F:
    decorators = [
        click.option("-n", "--max-new-tokens", type=int, default=None, help="Most tokens to generate [256]."),
        click.option("--temperature", type=float, default=None),
        click.option("--top-p", type=float, default=None),
        click.option("--top-k", type=int, default=None),
        click.option("--sample/--greedy", "do_sample", default=None, help="Sample, or greedy decoding [greedy]."),
        click.option("--seed", type=int, default=None),
        click.option("--stop", multiple=True, help="Stop string, repeatable."),
        click.option("--repetition-penalty", type=float, default=None),
        click.option("--ignore-eos", is_flag=True, default=None, help="Keep decoding past end-of-sequence."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def structured_options(func: F) -> F:
    """Structured output (constrained decoding): the backend must enforce it or phi3 refuses."""
    decorators = [
        click.option(
            "--json-schema",
            "json_schema_file",
            default=None,
            metavar="FILE",
            help="Constrain the answer to this JSON Schema (a file; '-' reads stdin).",
        ),
        click.option("--json-object", is_flag=True, default=None, help="Constrain the answer to a JSON object."),
        click.option("--regex", default=None, metavar="PATTERN", help="Constrain the whole answer to PATTERN."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _read_json_schema(source: str) -> str:
    """The schema text of ``--json-schema FILE`` (``-``: stdin), checked to be JSON; the config checks
    that it is a valid JSON Schema."""
    if source == "-":
        text = _read_stdin("--json-schema is '-'")
    else:
        try:
            with translate_os_errors(f"--json-schema file {source}"):
                text = Path(source).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"--json-schema file {source} is not UTF-8 text", hint="save it as UTF-8") from None
    try:
        json.loads(text)
    except ValueError as exc:
        where = "stdin" if source == "-" else source
        raise ConfigError(f"--json-schema {where} is not JSON: {exc}", hint="give a JSON Schema document") from None
    return text


def _generation_config(**values: Any) -> GenerationConfig:
    if values.get("stop") == ():
        values["stop"] = None
    return GenerationConfig.from_options(**values)


def _load(
    model: str,
    backend: str,
    device: str,
    precision: str | None,
    engine: str | None,
    options: Sequence[str],
    revision: str | None,
    trust_remote_code: bool,
    quiet: bool = False,
    adapters: Mapping[str, str] | None = None,
) -> Model:
    progress = CliProgress(enabled=not quiet)
    try:
        loaded = phi3.load(
            model,
            backend=backend,
            device=device,
            precision=precision,
            engine=engine,
            revision=revision,
            trust_remote_code=trust_remote_code,
            progress=progress,
            adapters=adapters or None,
            **parse_options(options),
        )
    finally:
        progress.close()
    if not quiet:
        reason = f" ({loaded.selection_reason})" if loaded.selection_reason else ""
        cached = "cached artifact" if loaded.artifact.from_cache else "new artifact"
        click.echo(
            f"phi3: {loaded.backend}/{loaded.engine} on {loaded.device}, {loaded.precision}, {cached}{reason}", err=True
        )
    return loaded


def _read_stdin(what: str = "PROMPT is '-'") -> str:
    """The prompt (or ``what`` else reads stdin) from stdin, or a phi3 error when there is none."""
    stream = sys.stdin
    if stream is None or stream.closed:
        raise ConfigError(f"{what} but stdin is closed", hint="pipe the input in, or pass it as an argument")
    try:
        return stream.read()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what} but stdin cannot be read: {exc}", hint="pass it as an argument") from None
    except UnicodeDecodeError:
        raise ConfigError("stdin is not UTF-8 text", hint="convert the prompt to UTF-8") from None


def _stats_line(result: GenerationResult) -> str:
    adapter = f", adapter {result.adapter}" if result.adapter else ""
    return (
        f"[{result.backend}/{result.engine} on {result.device}, {result.precision}{adapter}] "
        f"{result.prompt_tokens} prompt + {result.new_tokens} new tokens, "
        f"first token {result.time_to_first_token_s * 1000:.0f} ms, "
        f"{result.decode_tokens_per_s:.1f} tokens/s, stop: {result.finish_reason}"
    )


def _print_stream(stream: TextStream) -> GenerationResult:
    """Print pieces as they come. On any exit (a closed pipe, Ctrl-C) the stream is closed first, so
    the backend's decoding thread stops before the interpreter does (else: "terminate called", SIGABRT)."""
    try:
        for piece in stream:
            click.echo(piece, nl=False)
            sys.stdout.flush()
    finally:
        stream.close()
    click.echo()
    return stream.result


# -- commands ----------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "-V", "--version", prog_name="phi3", message=f"%(prog)s %(version)s (plugin API {PLUGIN_API_VERSION})"
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def cli(debug: bool) -> None:
    """Run Microsoft's Phi-3 family on AI-PC accelerators (NPU, GPU, CPU).

    MODEL is an alias (phi3-mini-4k, phi3.5-mini, phi4-mini, ...; `smoke` is a toy built-in model
    trained on a synthetic corpus), a Hugging Face id, a local checkpoint folder, or a folder made by
    `phi3 quantize -o`.
    """


def _entry_row(entry: BackendEntry) -> list[str]:
    info = entry.info
    origin = f"{entry.distribution} {entry.version}" if entry.distribution else "(not installed)"
    if info is None:
        return [entry.name, entry.status.value, origin, "-", "-", "-", "-", "-"]
    default = info.default_engine
    engines = ", ".join(
        f"{e.name}{'*' if e.name == default else ''}{'' if e.available else ' (unusable)'}" for e in info.engines
    )
    devices = ", ".join(d.name for d in info.devices) or "none"
    if info.override_devices:
        devices += " (override: " + ", ".join(d.name for d in info.override_devices) + ")"
    return [
        entry.name,
        entry.status.value,
        origin,
        engines,
        devices,
        ", ".join(info.precisions),
        _structured(info),
        _adapters(info),
    ]


def _adapters(info: BackendInfo) -> str:
    """Whether a backend applies LoRA adapters, and where an engine differs."""
    differ = [
        f"{e.name}: {'yes' if e.adapters else 'no'}"
        for e in info.engines
        if e.adapters is not None and e.adapters != info.adapters
    ]
    return ("yes" if info.adapters else "no") + (f" ({'; '.join(differ)})" if differ else "")


def _structured(info: BackendInfo) -> str:
    """The structured-output kinds a backend enforces, and where an engine differs."""
    kinds = ", ".join(info.structured_output) or "none"
    differ = [
        f"{e.name}: {', '.join(e.structured_output) or 'none'}"
        for e in info.engines
        if e.structured_output is not None and tuple(e.structured_output) != tuple(info.structured_output)
    ]
    return kinds + (f" ({'; '.join(differ)})" if differ else "")


@cli.command("list-backends")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def list_backends(as_json: bool) -> None:
    """List installed backends: status, engines, devices, precisions and the options each accepts
    (-O NAME=VALUE: type, range, default; checked by phi3 before any work). Fast: loads no vendor library."""
    registry = get_registry()
    entries = registry.entries()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "phi3_version": __version__,
                    "plugin_api_version": PLUGIN_API_VERSION,
                    "backends": [e.as_dict() for e in entries],
                    "disabled": registry.disabled,
                },
                indent=2,
            )
        )
        return
    if not entries:
        click.echo(INSTALL_HINT)
        if registry.disabled:
            click.echo(f"(disabled by PHI3_LOAD_PLUGINS/PHI3_DISABLE_PLUGINS: {', '.join(registry.disabled)})")
        return
    headers = [
        "BACKEND",
        "STATUS",
        "DISTRIBUTION",
        "ENGINES (*default)",
        "DEVICES",
        "PRECISIONS",
        "STRUCTURED OUTPUT",
        "LORA ADAPTERS",
    ]
    click.echo(table(headers, [_entry_row(e) for e in entries]))
    for entry in entries:
        if entry.detail:
            click.echo(f"  {entry.name}: {entry.detail}")
    for entry in entries:
        option_lines = describe_options(entry.info) if entry.info else []
        if option_lines:
            click.echo(f"{entry.name} options (-O NAME=VALUE):")
            click.echo("\n".join(f"  {line}" for line in option_lines))
    if registry.disabled:
        click.echo(f"disabled by PHI3_LOAD_PLUGINS/PHI3_DISABLE_PLUGINS: {', '.join(registry.disabled)}")


@cli.command()
@click.option("-b", "--backend", default=None, help="Only this backend.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def devices(backend: str | None, as_json: bool) -> None:
    """Ask each backend's runtime which devices it really sees (may load vendor libraries)."""
    registry = get_registry()
    entries = [registry.entry(backend)] if backend else registry.entries()
    report: list[dict[str, Any]] = []
    for entry in entries:
        row: dict[str, Any] = {
            "backend": entry.name,
            "status": entry.status.value,
            "detail": entry.detail,
            "devices": [],
            "override_devices": [],
        }
        if entry.info is not None and entry.status is not BackendStatus.MISSING_DEPENDENCY:
            found: Sequence[DeviceInfo] = entry.info.devices
            if registry.has_hook(entry.name, "phi3_devices"):
                try:
                    found = registry.call(entry.name, "phi3_devices") or ()
                except Phi3Error as exc:
                    row["detail"] = str(exc)
            row["devices"] = [vars(d) for d in found]
            row["override_devices"] = [vars(d) for d in entry.info.override_devices]
        report.append(row)
    if as_json:
        click.echo(json.dumps({"backends": report}, indent=2))
        return
    if not report:
        click.echo(INSTALL_HINT)
        return
    for row in report:
        click.echo(f"{row['backend']} ({row['status']})")
        for device in row["devices"]:
            driver = f", driver {device['driver_version']}" if device.get("driver_version") else ""
            click.echo(f"  {device['name']:<10} {device['kind']:<4} {device['description']}{driver}")
        if not row["devices"]:
            click.echo("  no device" + (f": {row['detail']}" if row["detail"] else ""))
        for device in row["override_devices"]:
            click.echo(f"  {device['name']:<10} {device['kind']:<4} only with --device {device['name']}")


@cli.command()
@click.argument("model")
@click.option("-b", "--backend", default="auto", show_default=True, help="Backend name, or auto.")
@click.option("-p", "--precision", default=None, help="Precision, e.g. int4 (default), int8, fp16.")
@click.option(
    "-o",
    "--output",
    default=None,
    metavar="DIR",
    help="Write the artifact to this new folder instead of phi3's cache.",
)
@click.option("--overwrite", is_flag=True, help="Replace DIR if it already holds a phi3 artifact.")
@click.option("-e", "--engine", default=None, help="Engine whose artifact format to build.")
@click.option("-O", "--option", "options", multiple=True, metavar="KEY=VALUE", help="Backend option, repeatable.")
@click.option("--revision", default=None, help="Hugging Face revision of a hub model.")
@click.option("--trust-remote-code", is_flag=True, help="Allow the checkpoint's own Python code.")
@click.option("--json", "as_json", is_flag=True, help="Print the artifact's manifest as JSON.")
@handle_errors
def quantize(
    model: str,
    backend: str,
    precision: str | None,
    output: str | None,
    overwrite: bool,
    engine: str | None,
    options: Sequence[str],
    revision: str | None,
    trust_remote_code: bool,
    as_json: bool,
) -> None:
    """Quantize MODEL for a backend (into the cache, or -o DIR)."""
    progress = CliProgress()
    try:
        artifact = phi3.quantize(
            model,
            backend=backend,
            precision=precision,
            output=output,
            overwrite=overwrite,
            engine=engine,
            revision=revision,
            trust_remote_code=trust_remote_code,
            progress=progress,
            **parse_options(options),
        )
    finally:
        progress.close()
    if as_json:
        click.echo(
            json.dumps(
                {"path": str(artifact.path), "from_cache": artifact.from_cache, "manifest": artifact.manifest},
                indent=2,
                default=str,
            )
        )
        return
    state = "already in the cache" if artifact.from_cache else "built"
    click.echo(f"{artifact.backend} {artifact.precision} artifact {state}: {artifact.path}")
    click.echo(f'key {artifact.key}; load it with: phi3 generate {artifact.path} "Hello"')


@cli.command()
@click.argument("model")
@click.argument("prompt")
@backend_options
@generation_options
@structured_options
@click.option("--system", default=None, help="System message (chat template mode).")
@click.option("--raw", is_flag=True, help="Send PROMPT as is, without the model's chat template.")
@click.option("--no-stream", is_flag=True, help="Print the answer only when it is complete.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (implies --no-stream).")
@adapter_options
@handle_errors
def generate(
    model: str,
    prompt: str,
    backend: str,
    device: str,
    precision: str | None,
    engine: str | None,
    options: Sequence[str],
    revision: str | None,
    trust_remote_code: bool,
    system: str | None,
    raw: bool,
    no_stream: bool,
    as_json: bool,
    json_schema_file: str | None,
    adapters: Sequence[str],
    use_adapter: str | None,
    **generation: Any,
) -> None:
    """Generate an answer to PROMPT ('-' reads it from stdin); streams by default.

    --json-schema / --json-object / --regex constrain decoding so the answer matches; a backend that
    cannot enforce it is refused before decoding (`phi3 list-backends` shows who can).
    """
    if prompt == "-" and json_schema_file == "-":
        raise ConfigError("PROMPT and --json-schema cannot both read stdin", hint="give one of them as a file or text")
    if prompt == "-":
        prompt = _read_stdin()
    if not prompt.strip():
        raise ConfigError("the prompt is empty", hint="pass some text, or '-' to read it from stdin")
    if json_schema_file is not None:
        generation["json_schema"] = _read_json_schema(json_schema_file)
    lora, active = parse_adapter_args(adapters, use_adapter)
    config = _generation_config(**generation, adapter=active)
    if raw and system:
        raise ConfigError("--system needs the chat template; drop --raw")
    with _load(
        model, backend, device, precision, engine, options, revision, trust_remote_code, quiet=as_json, adapters=lora
    ) as loaded:
        loaded.check_supported(config)  # before the chat template and any decoding
        if raw:
            text_prompt = prompt
        else:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
            text_prompt = loaded.apply_chat_template(messages)
        if as_json:
            click.echo(json.dumps(loaded.generate(text_prompt, config).as_dict(), indent=2, ensure_ascii=False))
            return
        if no_stream:
            result = loaded.generate(text_prompt, config)
            click.echo(result.text)
        else:
            result = _print_stream(loaded.stream(text_prompt, config))
        click.echo(_stats_line(result), err=True)


CHAT_HELP = """Commands (a line starting with / is never sent to the model):
  /help    this list
  /reset   forget the conversation (the --system message stays)
  /exit    quit (also /quit, or Ctrl-D)
Start a message with // to send one that begins with /."""
"""What ``/help`` prints in ``phi3 chat``."""


@cli.command()
@click.argument("model")
@backend_options
@generation_options
@click.option("--system", default=None, help="System message for the conversation.")
@click.option("--stats/--no-stats", default=True, help="Print timings after each answer (stderr).")
@adapter_options
@handle_errors
def chat(
    model: str,
    backend: str,
    device: str,
    precision: str | None,
    engine: str | None,
    options: Sequence[str],
    revision: str | None,
    trust_remote_code: bool,
    system: str | None,
    stats: bool,
    adapters: Sequence[str],
    use_adapter: str | None,
    **generation: Any,
) -> None:
    """Chat with MODEL; keeps the conversation. Type /help for the commands (/reset, /exit; Ctrl-D quits).

    Works with a pipe too: each line of stdin is one user message. A line starting with / is a
    command, never sent to the model; start a message with // to send one that begins with /.
    """
    lora, active = parse_adapter_args(adapters, use_adapter)
    config = _generation_config(**generation, adapter=active)
    interactive = sys.stdin is not None and sys.stdin.isatty()
    start: list[Mapping[str, str]] = [{"role": "system", "content": system}] if system else []
    history = list(start)
    with _load(
        model, backend, device, precision, engine, options, revision, trust_remote_code, adapters=lora
    ) as loaded:
        if interactive:
            click.echo("Chatting; /help lists the commands, /exit or Ctrl-D quits.", err=True)
        while True:
            if interactive:
                click.echo(">>> ", nl=False, err=True)
            line = sys.stdin.readline() if sys.stdin is not None else ""  # closed stdin: nothing to say
            if not line:
                break
            message = line.rstrip("\n")
            if not message.strip():
                continue
            command = message.strip()
            if command.startswith("//"):
                message = message.replace("//", "/", 1)
            elif command.startswith("/"):
                name = command.split()[0].lower()
                if name in ("/exit", "/quit"):
                    break
                if name == "/reset":
                    history = list(start)
                    click.echo("(conversation reset)", err=True)
                elif name in ("/help", "/?"):
                    click.echo(CHAT_HELP, err=True)
                else:
                    click.echo(f"unknown command {name}; /help lists the commands", err=True)
                continue
            history.append({"role": "user", "content": message})
            result = _print_stream(loaded.chat_stream(history, config))
            history.append({"role": "assistant", "content": result.text})
            if stats:
                click.echo(_stats_line(result), err=True)


@cli.group()
def cache() -> None:
    """Inspect and clean phi3's artifact cache."""


@cache.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def cache_list(as_json: bool) -> None:
    """List cached artifacts."""
    store = ArtifactCache()
    rows = []
    for artifact in store.artifacts():
        m = artifact.manifest
        rows.append(
            {
                "key": artifact.key,
                "backend": artifact.backend,
                "precision": artifact.precision,
                "format": artifact.artifact_format,
                "model": m.get("source", {}).get("model_id"),
                "size_bytes": store.size_of(artifact.path),
                "created": m.get("created"),
                "path": str(artifact.path),
            }
        )
    if as_json:
        click.echo(json.dumps({"root": str(store.root), "artifacts": rows}, indent=2))
        return
    if not rows:
        click.echo(f"No artifacts in {store.root}")
        return
    listing = [
        [
            r["key"][:12],
            r["backend"],
            r["precision"],
            r["model"] or "?",
            f"{r['size_bytes'] / 1e6:.1f} MB",
            r["created"] or "?",
        ]
        for r in rows
    ]
    click.echo(table(["KEY", "BACKEND", "PRECISION", "MODEL", "SIZE", "CREATED"], listing))
    click.echo(f"({store.root})")


@cache.command("rm")
@click.argument("keys", nargs=-1)
@click.option("--all", "remove_all", is_flag=True, help="Remove every artifact.")
@handle_errors
def cache_rm(keys: Sequence[str], remove_all: bool) -> None:
    """Remove artifacts by KEY, as `phi3 cache list` prints it (or its first 4+ characters).

    Keys are matched as text against the cache's own artifacts, never as a path or a pattern, and
    every key is checked before anything is removed.
    """
    store = ArtifactCache()
    if remove_all:
        if keys:
            raise click.UsageError("give KEYs or --all, not both")
        targets = [a.path for a in store.artifacts()]
    elif not keys:
        raise click.UsageError("name at least one KEY, or pass --all")
    else:
        targets = []
        for key in keys:
            found = store.find(key)
            if not found:
                raise Phi3Error(f"no cached artifact has a key starting with {key!r}", hint="see phi3 cache list")
            if len(found) > 1:
                raise Phi3Error(f"key prefix {key!r} matches {len(found)} artifacts", hint="give more characters")
            targets.extend(p for p in found if p not in targets)
    if not targets:
        click.echo(f"No artifacts in {store.root}")
        return
    click.echo(f"removing {len(targets)} artifact(s) from {store.artifacts_dir}:")
    for path in targets:
        click.echo(f"  {path.parent.name}/{path.name}")
    for path in targets:
        store.remove(path)
    click.echo(f"removed {len(targets)} artifact(s)")


@cache.command("prune")
@click.option("--older-than", type=float, default=None, metavar="DAYS", help="Also remove artifacts older than DAYS.")
@handle_errors
def cache_prune(older_than: float | None) -> None:
    """Remove leftovers of interrupted builds and corrupt artifacts (and old ones with --older-than)."""
    removed = ArtifactCache().prune(older_than_days=older_than)
    for path in removed:
        click.echo(f"removed {path}")
    click.echo(f"{len(removed)} item(s) removed")


@cache.command("path")
def cache_path() -> None:
    """Print the cache folder (PHI3_HOME)."""
    click.echo(str(ArtifactCache().root))


cli.add_command(bench)
cli.add_command(serve)


def _reopen_closed_std_streams() -> None:
    """A stdout or stderr the caller closed (``>&-``, ``2>&-``) is ``None`` in Python, and the first write
    raised AttributeError. Each becomes the null device instead: what would be shown is discarded, the
    exit status stays the documented one (0, or 1 with the error line nobody can read). A closed stdin
    stays ``None``: ``phi3 generate -`` says so, ``phi3 chat`` ends at once."""
    for name, mode in (("stdout", "w"), ("stderr", "w")):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, mode, encoding="utf-8"))  # noqa: SIM115 - lives as long as the process


def main() -> None:
    _reopen_closed_std_streams()
    silence_vendor_progress_bars()
    try:
        cli(prog_name="phi3")
    finally:
        flush_stdout()


__all__ = ["cli", "main"]
