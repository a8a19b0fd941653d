"""The ``npu-library`` engine, parent side: a worker process per loaded model.

intel-npu-acceleration-library writes its kernel cache relative to the *current directory* during
every generation, aborts the process on some model switches, and loads its own OpenVINO 2024.4
next to whatever OpenVINO the process already has (see :mod:`phi3_npu.library_state`). A worker
process (:mod:`phi3_npu.library_worker`) whose cwd is phi3's state folder contains all of that:

- nothing is ever written to the user's working directory, and the user's process never changes
  its cwd (a ``chdir`` around generation would be process-wide and would race with every other
  thread of the application for the whole length of a stream);
- a native abort kills the worker, not the user's program: phi3 reports a one-line error with the
  end of the worker's log;
- each model has its own runtime, so int4 and int8 models can be used side by side;
- the parent never imports torch, transformers or the library.

The price is the worker's start-up (importing torch, transformers and the library: ~3-10 s here)
on every load, small next to the library's own quantization at load time.

Streams follow phi3's contract: :meth:`LibraryEngine.generate` checks the prompt with the worker
*before* returning (``PromptTooLongError`` is raised by the call), the returned iterator yields a
Chunk per token with the text decoded incrementally in the worker, and closing it early cancels
the generation at the next token.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from phi3.errors import ArtifactError, BackendError, Phi3Error
from phi3.generation_config import GenerationConfig
from phi3.types import Artifact, ChatMessage, Chunk
from phi3_npu import library_state, protocol
from phi3_npu.export import RECIPE_FILE

STATE_FOLDER = "npu-library"
CLOSE_TIMEOUT_S = 20.0
LOG_TAIL_LINES = 12
_EOF: dict[str, Any] = {"event": "eof"}


def _read_recipe(artifact: Artifact) -> dict[str, Any]:
    path = artifact.path / RECIPE_FILE
    hint = f"delete it (phi3 cache rm {artifact.path.name}) and run again to rebuild"
    try:
        recipe = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{artifact.path} is not an npu-library artifact (no {RECIPE_FILE})", hint=hint) from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"artifact file {path} is unreadable: {exc}", hint=hint) from None
    if not isinstance(recipe, dict) or recipe.get("dtype") not in ("int4", "int8", "float16"):
        raise ArtifactError(f"artifact file {path} names no known dtype", hint=hint)
    if not (artifact.path / "config.json").is_file():
        raise ArtifactError(f"npu-library artifact {artifact.path} is missing config.json", hint=hint)
    return recipe


def _worker_command(artifact: Artifact, recipe: dict[str, Any], device: str, run_dir: Path) -> list[str]:
    isolate = ["-P"] if sys.version_info >= (3, 11) else []  # do not put the cwd on sys.path
    command = [
        sys.executable,
        *isolate,
        "-m",
        "phi3_npu.library_worker",
        "--artifact",
        str(artifact.path),
        "--dtype",
        str(recipe["dtype"]),
        "--device",
        device,
        "--run-dir",
        str(run_dir),
    ]
    if recipe.get("trust_remote_code"):
        command.append("--trust-remote-code")
    return command


def _stop(
    process: subprocess.Popen[str], stdin: IO[str] | None, log: IO[bytes], run_dir: Path, keep: dict[str, bool]
) -> None:
    """Ask the worker to exit, then make sure it has; remove its run folder unless it crashed."""
    if process.poll() is None and stdin is not None:
        with contextlib.suppress(OSError, ValueError):
            protocol.send(stdin, {"op": "close"})
    if stdin is not None:
        with contextlib.suppress(OSError, ValueError):
            stdin.close()
    try:
        process.wait(timeout=CLOSE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()
    if not keep["log"]:  # a crashed worker's log stays for a day (library_state.prune removes it)
        shutil.rmtree(run_dir, ignore_errors=True)


def _pump(stdout: IO[str] | None, events: queue.Queue[dict[str, Any]]) -> None:
    """Reader thread: the worker's events into ``events``, then ``_EOF`` when it exits."""
    assert stdout is not None
    for line in stdout:
        if line.strip():
            try:
                events.put(protocol.decode(line))
            except ValueError as exc:
                events.put(protocol.error_event("internal", f"npu-library worker protocol error: {exc}"))
    events.put(_EOF)


class LibraryEngine:
    """One intel-npu-acceleration-library model, living in its own worker process."""

    name = "npu-library"

    def __init__(self, artifact: Artifact, device: str, cache_dir: Path) -> None:
        recipe = _read_recipe(artifact)
        state_root = cache_dir / STATE_FOLDER
        (state_root / "run").mkdir(parents=True, exist_ok=True)
        library_state.prune(state_root)
        self._run_dir = Path(tempfile.mkdtemp(prefix="worker-", dir=state_root / "run"))
        self._log_path = self._run_dir / "worker.log"
        log = open(self._log_path, "wb")  # noqa: SIM115 - closed by _stop
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONIOENCODING": "utf-8"}
        self._process = subprocess.Popen(
            _worker_command(artifact, recipe, device.upper(), self._run_dir),
            cwd=state_root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            text=True,
            encoding="utf-8",
        )
        self._keep = {"log": False}
        self._finalizer = weakref.finalize(
            self, _stop, self._process, self._process.stdin, log, self._run_dir, self._keep
        )
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        # The reader holds the pipe and the queue, not the engine, so a forgotten engine can be collected.
        threading.Thread(
            target=_pump, args=(self._process.stdout, self._events), name="phi3-npu-library-events", daemon=True
        ).start()
        self._busy = threading.Lock()
        self._ids = itertools.count(1)
        self._dead: Phi3Error | None = None
        ready = self._next_event()
        if ready.get("event") != "ready":
            error = protocol.to_exception(ready) if ready.get("event") == "error" else self._died()
            self.close()
            raise error
        self.device = str(ready["device"])
        self.context_length: int | None = ready.get("context_length")
        self.details: dict[str, Any] = {
            "library_version": ready.get("library_version"),
            "dtype": ready.get("dtype"),
            "npu_available": ready.get("npu_available"),
            "driver_version": ready.get("driver_version"),
            "quantize_and_compile_s": ready.get("load_s"),
            "worker_pid": ready.get("pid"),
            "state_dir": str(state_root),
        }

    # -- the worker's event stream -------------------------------------------------------------

    def _next_event(self) -> dict[str, Any]:
        if self._dead is not None:
            raise self._dead
        event = self._events.get()
        if event is _EOF:
            self._dead = self._died()
            raise self._dead
        return event

    def _log_tail(self) -> str:
        try:
            lines = self._log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            return ""
        useful = [line for line in lines if line.strip() and "warn" not in line.lower()]
        return " | ".join(useful[-LOG_TAIL_LINES:])[-1500:]

    def _died(self) -> BackendError:
        try:
            code = self._process.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
        tail = self._log_tail()
        self._keep["log"] = True
        return BackendError(
            f"the intel-npu-acceleration-library worker exited unexpectedly (exit code {code})"
            + (f": {tail}" if tail else ""),
            hint=f"load the model again; the worker's full log is {self._log_path}",
        )

    def _request(self, message: dict[str, Any]) -> None:
        if self._dead is not None:
            raise self._dead
        stdin = self._process.stdin
        try:
            assert stdin is not None
            protocol.send(stdin, message)
        except (OSError, ValueError):
            self._dead = self._died()
            raise self._dead from None

    # -- engine API ----------------------------------------------------------------------------

    def generate(self, prompt: str, config: GenerationConfig) -> Iterator[Chunk]:
        """Send the prompt; raise now if the worker refuses it; return the lazy chunk stream."""
        if not self._busy.acquire(blocking=False):
            raise Phi3Error("this model is already generating; finish or close the other stream first")
        try:
            gen_id = next(self._ids)
            self._request({"op": "generate", "id": gen_id, "prompt": prompt, "config": config.as_dict()})
            start = self._next_event()
            while start.get("event") in ("tokens", "end") and start.get("id") != gen_id:
                start = self._next_event()  # the tail of an interrupted stream (its cancel is on the way)
            if start.get("event") == "error":
                raise protocol.to_exception(start)
            if start.get("event") != "start" or start.get("id") != gen_id:
                raise BackendError(f"npu-library worker answered {start.get('event')!r} to a generate request")
        except BaseException:
            self._busy.release()
            raise
        return _ChunkStream(self, gen_id, int(start["prompt_tokens"]), int(start["max_new_tokens"]))

    def apply_chat_template(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> str:
        """The tokenizer's own ``apply_chat_template``, run in the worker (``tools`` in the
        template's ``tools`` variable)."""
        request: dict[str, Any] = {"op": "chat_template", "messages": [dict(m) for m in messages]}
        if tools is not None:
            request["tools"] = [dict(tool) for tool in tools]
        with self._busy_or_refuse():
            self._request(request)
            event = self._next_event()
        if event.get("event") == "error":
            raise protocol.to_exception(event)
        return str(event["text"])

    def next_token_logits(self, ids: Sequence[int]) -> list[float]:
        """The model's logits for the token after ``ids`` (no sampling): for parity checks and scoring."""
        with self._busy_or_refuse():
            self._request({"op": "logits", "ids": [int(i) for i in ids]})
            event = self._next_event()
        if event.get("event") == "error":
            raise protocol.to_exception(event)
        return [float(v) for v in event["values"]]

    @contextlib.contextmanager
    def _busy_or_refuse(self) -> Iterator[None]:
        if not self._busy.acquire(blocking=False):
            raise Phi3Error("this model is generating; finish or close the stream first")
        try:
            yield
        finally:
            self._busy.release()

    def close(self) -> None:
        """Stop the worker (its memory and kernels go with it) and remove its run folder."""
        self._finalizer()

    @property
    def worker_pid(self) -> int:
        return self._process.pid


class _ChunkStream:
    """The iterator ``generate`` returns: one Chunk per ``tokens`` event; ``close`` cancels."""

    def __init__(self, engine: LibraryEngine, gen_id: int, prompt_tokens: int, max_new_tokens: int) -> None:
        self._engine = engine
        self._id = gen_id
        self._prompt_tokens: int | None = prompt_tokens
        self._left = max_new_tokens
        self._open = True

    def __iter__(self) -> _ChunkStream:
        return self

    def __next__(self) -> Chunk:
        while self._open:
            try:
                event = self._engine._next_event()
            except BaseException:  # Ctrl-C, or the worker died: stop the generation, free the model
                with contextlib.suppress(Exception):
                    self._engine._request({"op": "cancel", "id": self._id})
                self._finish()
                raise
            kind = event.get("event")
            if kind == "tokens" and event.get("id") == self._id:
                ids = tuple(int(i) for i in event["ids"])[: self._left]
                self._left -= len(ids)
                return self._chunk(str(event.get("text", "")), ids)
            if kind == "end" and event.get("id") == self._id:
                self._finish()
                if self._prompt_tokens is not None:  # nothing was generated: still report the prompt
                    return self._chunk("", ())
                break
            if kind == "error":
                self._finish()
                raise protocol.to_exception(event)
        raise StopIteration

    def _chunk(self, text: str, ids: tuple[int, ...]) -> Chunk:
        chunk = Chunk(text, ids, self._prompt_tokens)
        self._prompt_tokens = None
        return chunk

    def _finish(self) -> None:
        if self._open:
            self._open = False
            self._engine._busy.release()

    def close(self) -> None:
        """Cancel the generation (it stops at the next token) and wait until the worker is idle."""
        if not self._open:
            return
        try:
            self._engine._request({"op": "cancel", "id": self._id})
            while True:
                event = self._engine._next_event()
                if event.get("event") in ("end", "error") and event.get("id", self._id) == self._id:
                    break
        except Phi3Error:
            pass  # the worker died: the next call reports it
        finally:
            self._finish()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


__all__ = ["LibraryEngine"]
