"""``phi3 serve``: the command line of the OpenAI-compatible server.

Registered with the CLI for every user, so this module imports only click and phi3: FastAPI and
uvicorn are imported when the command runs, and a missing ``serve`` extra is one line naming the
pip command.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.util
import logging
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from phi3.cli_support import handle_errors, parse_options
from phi3.errors import ConfigError

if TYPE_CHECKING:
    from phi3.model import Model
    from phi3.server.model_spec import Defaults

SERVE_MODULES = ("fastapi", "uvicorn", "pydantic", "prometheus_client")
RAY_MODULES = ("ray",)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _parse_options(pairs: Sequence[str]) -> tuple[tuple[str, object], ...]:
    return tuple(parse_options(pairs).items())


@click.command()
@click.argument("models", nargs=-1, metavar="[MODEL]...")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback only by default).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option("-b", "--backend", default="auto", show_default=True, help="Default backend, or auto.")
@click.option("-d", "--device", default="auto", show_default=True, help="Default device, or auto.")
@click.option("-p", "--precision", default=None, help="Default precision, e.g. int4 (default), int8, fp16.")
@click.option("-e", "--engine", default=None, help="Engine of the default backend.")
@click.option(
    "-O", "--option", "options", multiple=True, metavar="KEY=VALUE", help="Option of the default backend, repeatable."
)
@click.option(
    "--api-key",
    envvar="PHI3_API_KEY",
    default=None,
    help="Require 'Authorization: Bearer KEY' on /v1 routes [env PHI3_API_KEY].",
)
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN", help="Allow browser calls from ORIGIN.")
@click.option(
    "--cors-header",
    "cors_headers",
    multiple=True,
    metavar="NAME",
    help="With --cors-origin: a request header browsers may send, repeatable [default: any].",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="A host name clients may address the server by, besides IP addresses and localhost, repeatable.",
)
@click.option(
    "--allow-any-model",
    is_flag=True,
    help="Without MODEL: let clients load any model id, local paths and hub ids included (not only the "
    "catalogue and PHI3_HOME's models). Do not combine with a non-loopback --host without --api-key.",
)
@click.option(
    "--max-loaded", default=1, show_default=True, type=click.IntRange(1), help="Most models loaded at once (LRU)."
)
@click.option(
    "--idle-unload",
    default=None,
    type=click.FloatRange(0, min_open=True),
    metavar="SECONDS",
    help="Unload a model idle this long.",
)
@click.option(
    "--max-queue",
    default=16,
    show_default=True,
    type=click.IntRange(0),
    help="Requests that may wait per model; more get HTTP 429.",
)
@click.option(
    "--adapter",
    "adapters",
    multiple=True,
    metavar="[NAME=]PATH",
    help="A LoRA adapter (peft folder or hub id) of the one MODEL, served as MODEL:NAME; repeatable "
    "(docs/adapters.md). NAME defaults to the folder name.",
)
@click.option("--preload", is_flag=True, help="Load the MODELs at start instead of on first request.")
@click.option("--no-ui", "no_ui", is_flag=True, help="Do not serve the chat page at / (the API only).")
@click.option("--ray", "use_ray", is_flag=True, help="Serve on a Ray cluster with Ray Serve (docs/ray.md).")
@click.option(
    "--ray-address",
    default=None,
    metavar="ADDR",
    help="--ray: the cluster to join (HOST:PORT of its head); default: RAY_ADDRESS, else start a local one.",
)
@click.option("--replicas", default=None, type=click.IntRange(1), help="--ray: replicas per model [default: 1].")
@click.option("--autoscale", default=None, metavar="MIN:MAX", help="--ray: let Ray Serve scale replicas per model.")
@click.option(
    "--replica-cpus", default=None, type=click.FloatRange(0), help="--ray: CPUs each replica reserves [default: 1]."
)
@click.option(
    "--ray-resource",
    "ray_resources",
    multiple=True,
    metavar="NAME=AMOUNT",
    help="--ray: a custom Ray resource each replica needs, e.g. npu=1 (-d NPU implies it), repeatable.",
)
@click.option(
    "--ray-start-timeout",
    default=900.0,
    show_default=True,
    type=click.FloatRange(1),
    metavar="SECONDS",
    help="--ray: give up when the replicas have not loaded by then.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Server log level.",
)
def serve(
    models: Sequence[str],
    host: str,
    port: int,
    backend: str,
    device: str,
    precision: str | None,
    engine: str | None,
    options: Sequence[str],
    api_key: str | None,
    cors_origins: Sequence[str],
    cors_headers: Sequence[str],
    allowed_hosts: Sequence[str],
    allow_any_model: bool,
    max_loaded: int,
    idle_unload: float | None,
    max_queue: int,
    adapters: Sequence[str],
    preload: bool,
    no_ui: bool,
    use_ray: bool,
    ray_address: str | None,
    replicas: int | None,
    autoscale: str | None,
    replica_cpus: float | None,
    ray_resources: Sequence[str],
    ray_start_timeout: float,
    log_level: str,
) -> None:
    """Serve MODELs over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions).

    Without MODEL any phi3 model id is served. A request's "model" may end in
    @BACKEND[:PRECISION[:DEVICE]] to pick how to run it (e.g. smoke@openvino:int8); missing parts
    take the -b/-p/-d defaults. Models load on first request (or at start with --preload).
    With --adapter NAME=PATH a request for MODEL:NAME runs the MODEL with that LoRA adapter.
    With --ray the same server runs on a Ray cluster, one Ray Serve deployment per MODEL.
    """
    handle_errors(_serve)(**locals())


def _serve(**args: Any) -> None:
    from phi3.server.ray_options import options_from_cli

    ray_options = options_from_cli(
        args.pop("use_ray"),
        args.pop("replicas"),
        args.pop("autoscale"),
        args.pop("replica_cpus"),
        args.pop("ray_resources"),
        args["ray_address"],
    )
    needed = SERVE_MODULES + (RAY_MODULES if ray_options else ())
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        extra = "ray" if ray_options else "serve"
        raise ConfigError(
            f"phi3 serve{' --ray' if ray_options else ''} needs {', '.join(missing)} (not installed here)",
            hint=f'pip install "phi3-core[{extra}]"',
        )
    if args["preload"] and not args["models"]:
        raise ConfigError("--preload needs at least one MODEL to load", hint="e.g. phi3 serve smoke --preload")
    import uvicorn

    from phi3.server.app import ServerSettings, create_app

    if args["api_key"] == "":
        args["api_key"] = None
    logging.basicConfig(level=args["log_level"].upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("phi3").setLevel(args["log_level"].upper())
    if args["host"] not in LOOPBACK and not args["api_key"]:
        click.echo(
            f"Warning: serving on {args['host']} without an API key: anyone who can reach this port can use it "
            "(pass --api-key or set PHI3_API_KEY)",
            err=True,
        )
        if args["allow_any_model"] and not args["models"]:
            click.echo(
                "Warning: --allow-any-model without an API key on a non-loopback address lets anyone who reaches "
                "this port load any folder of this machine or download any hub model",
                err=True,
            )
    from phi3.server.adapters import parse_adapter_flags
    from phi3.server.model_spec import Defaults

    # with --ray the (name, path) strings travel in the deployment's settings; each replica loads them
    adapters = parse_adapter_flags(args["adapters"], args["models"])
    defaults = Defaults(
        backend=args["backend"],
        device=args["device"],
        precision=args["precision"],
        engine=args["engine"],
        options=_parse_options(args["options"]),
        adapters=adapters,
        adapter_base=args["models"][0] if adapters else None,
    )
    if ray_options is not None and args["preload"]:
        raise ConfigError("--preload does not apply with --ray", hint="Ray replicas always load their model at start")
    preloaded = _preload(args["models"], defaults) if args["preload"] else {}
    settings = ServerSettings(
        models=tuple(args["models"]),
        defaults=defaults,
        api_key=args["api_key"],
        cors_origins=tuple(args["cors_origins"]),
        cors_headers=tuple(args["cors_headers"]) or ("*",),
        allowed_hosts=(*args["allowed_hosts"], args["host"]),
        allow_any_model=args["allow_any_model"],
        max_loaded=args["max_loaded"],
        idle_unload=args["idle_unload"],
        max_queue=args["max_queue"],
        ui=not args["no_ui"],
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if ray_options is not None:
        from phi3.server.ray_runner import run

        run(
            settings,
            ray_options,
            address=args["ray_address"],
            host=args["host"],
            port=args["port"],
            log_level=args["log_level"],
            start_timeout=args["ray_start_timeout"],
        )
        return
    from phi3.server.uvicorn_runner import CancellingServer

    app = create_app(settings, preloaded=preloaded)
    config = uvicorn.Config(
        app, host=args["host"], port=args["port"], log_level=args["log_level"], timeout_graceful_shutdown=5
    )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it handled (as uvicorn.run)
        CancellingServer(config, app.state.server).run()


def _preload(models: Sequence[str], defaults: Defaults) -> dict[str, Model]:
    """Load every MODEL before the server starts, so a failure is phi3's one-line error (exit 1).

    The loads run in a worker thread, like the server's own loads: OpenVINO then never has a
    pipeline compiled on the main thread and used and closed on others (which crashed at exit).
    """
    from phi3.server.errors import APIError
    from phi3.server.model_spec import parse
    from phi3.server.pool import load_spec

    log = logging.getLogger("phi3.server")
    loaded: dict[str, Model] = {}

    def load_all() -> None:
        for name in dict.fromkeys(models):
            started = time.perf_counter()
            try:
                spec = parse(name, defaults)
            except APIError as exc:
                raise ConfigError(exc.message) from None
            model = load_spec(spec)
            loaded[name] = model
            log.info(
                "loaded %s on %s/%s (%s, %s, %d concurrent) in %.2f s",
                name,
                model.backend,
                model.engine,
                model.device,
                model.precision,
                model.max_concurrent_generations,
                time.perf_counter() - started,
            )

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="phi3-serve-preload") as pool:
        pool.submit(load_all).result()
    return loaded
