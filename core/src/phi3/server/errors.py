"""OpenAI's error object, and which HTTP status each failure gets.

Every error response is ``{"error": {"message", "type", "param", "code"}}`` with a one-line message
that names the fix; a traceback never reaches a client (unexpected exceptions are logged, and the
client gets phi3's one-line ``unexpected ...`` message with status 500).
"""

from __future__ import annotations

from phi3.errors import (
    BackendNotFoundError,
    BackendUnavailableError,
    ConfigError,
    DeviceNotFoundError,
    ModelNotFoundError,
    Phi3Error,
    PrecisionNotSupportedError,
    PromptTooLongError,
    UnsupportedError,
)


class APIError(Exception):
    """An error answer: status, OpenAI error type, the parameter at fault and a short code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = " ".join(message.split())
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def from_phi3(exc: Phi3Error, *, param: str | None = None) -> APIError:
    """The answer for a phi3 error: the user's fault is 4xx, the backend's is 500."""
    message = str(exc)
    if isinstance(exc, ModelNotFoundError):
        return APIError(404, message, param="model", code="model_not_found")
    if isinstance(exc, PromptTooLongError):
        return APIError(400, message, param="messages" if param is None else param, code="context_length_exceeded")
    user_fixable = (
        ConfigError,
        BackendNotFoundError,
        BackendUnavailableError,
        DeviceNotFoundError,
        PrecisionNotSupportedError,
        UnsupportedError,
    )
    if isinstance(exc, user_fixable):
        return APIError(400, message, param=param, code="invalid_value")
    return APIError(500, message, type="server_error", code="backend_error")


def unexpected(exc: BaseException) -> APIError:
    """The answer for a bug: one line, like the CLI's, never the traceback (which is logged)."""
    detail = " ".join(str(exc).split())[:300]
    return APIError(
        500,
        f"unexpected {type(exc).__name__}: {detail} (this is a bug in phi3; the server log has the traceback)",
        type="server_error",
        code="internal_error",
    )
