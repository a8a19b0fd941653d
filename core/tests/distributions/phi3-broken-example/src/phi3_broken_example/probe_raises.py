"""Its probe raises, like a plugin whose device query crashes."""

from phi3 import hookimpl
from phi3_broken_example.load_raises import phi3_apply_chat_template, phi3_generate, phi3_load, phi3_quantize  # noqa: F401


@hookimpl
def phi3_backend_info():  # type: ignore[no-untyped-def]
    raise RuntimeError("device query exploded")
