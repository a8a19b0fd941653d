"""Written for a future plugin API version."""

from phi3 import hookimpl
from phi3_broken_example import _common
from phi3_broken_example.load_raises import phi3_apply_chat_template, phi3_generate, phi3_load, phi3_quantize  # noqa: F401


@hookimpl
def phi3_backend_info():  # type: ignore[no-untyped-def]
    return _common.info("future_api", api_version=99)
