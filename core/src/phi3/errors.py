"""Errors phi3 raises on purpose.

Every failure a user can cause or fix is a :class:`Phi3Error`: the CLI prints its one-line message
(plus the ``hint`` that names the fix) and exits 1, without a traceback. Anything else escaping a
backend is a bug, and :meth:`phi3.plugins.PluginRegistry.guard` wraps it in :class:`BackendError`
so that the user still sees one line that names the backend, while ``--debug`` keeps the original
traceback. File-system failures the user can fix (a full disk, permissions) become
:class:`phi3.fs_errors.FileSystemError` instead, wherever they happen.

Backends raise these classes too (they are part of the plugin contract), so a corrupt artifact or a
too-long prompt reads the same whichever vendor library sits underneath.
"""

from __future__ import annotations


class Phi3Error(Exception):
    """Base class of every error phi3 raises deliberately.

    ``hint`` says what to do about it; the CLI prints it after the message.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ConfigError(Phi3Error, ValueError):
    """An invalid generation or backend option, caught before any backend runs."""


class AdapterError(ConfigError):
    """A LoRA adapter phi3 cannot apply: not a LoRA peft folder (DoRA, IA3 ...), made for another base
    (shapes, layer count, ``base_model_name_or_path``), a target module phi3 cannot adapt, damaged
    files, or a request naming an adapter the model has not loaded. The server answers 400."""


class PluginError(Phi3Error):
    """A plugin failed to import, register, or answered outside the contract."""


class BackendNotFoundError(Phi3Error):
    """No installed backend has the requested name."""


class BackendUnavailableError(Phi3Error):
    """The backend is installed but cannot run here (missing dependency, no device, broken)."""


class DeviceNotFoundError(Phi3Error, ValueError):
    """The requested device is not present for this backend."""


class PrecisionNotSupportedError(Phi3Error, ValueError):
    """The backend does not offer the requested precision."""


class ModelNotFoundError(Phi3Error):
    """The model id or folder cannot be resolved to a Phi-3 checkpoint."""


class ArtifactError(Phi3Error):
    """A cached or named artifact is missing files, truncated or unreadable."""


class PromptTooLongError(Phi3Error, ValueError):
    """The prompt does not fit the model's (or the device's) context window."""


class BackendError(Phi3Error):
    """A backend failed in a way it did not translate into a phi3 error itself."""


class ModelBusyError(Phi3Error):
    """The model is already running as many generations as its backend allows at once."""


class UnsupportedError(Phi3Error, ValueError):
    """The request needs a capability the chosen backend/engine/device does not declare
    (e.g. structured output it cannot enforce). The message names the capability and who has it."""


__all__ = [
    "AdapterError",
    "ArtifactError",
    "BackendError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "ConfigError",
    "DeviceNotFoundError",
    "ModelBusyError",
    "ModelNotFoundError",
    "Phi3Error",
    "PluginError",
    "PrecisionNotSupportedError",
    "PromptTooLongError",
    "UnsupportedError",
]
