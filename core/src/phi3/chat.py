"""Chat orchestration: a conversation becomes one stream, plain or with tools.

:meth:`phi3.Model.chat_stream` (and ``chat``) come here. A plain chat (no ``tools``, no
``tool_choice``, no tool turns in the history) is the model's chat template over the checked
messages, decoded as one raw stream. Anything touching tools goes through :mod:`phi3.tools`: the
request is checked, the tool rules are applied (:func:`phi3.tools.check_supported`), the messages are
rendered in the model's tool format, and the calls are decoded in one generation slot
(:meth:`phi3.decoding.ModelCore.stream_passes`).

This module sits above :mod:`phi3.decoding` (the model's primitives) and :mod:`phi3.tools`; only
:mod:`phi3.model` imports it.
"""

from __future__ import annotations

from collections.abc import Sequence

from phi3 import tools as tool_calling
from phi3.decoding import ModelCore, TextStream
from phi3.generation_config import GenerationConfig
from phi3.messages import check_messages, has_tool_turns
from phi3.types import ChatMessage


def chat_stream(
    model: ModelCore,
    messages: Sequence[ChatMessage],
    config: GenerationConfig,
    *,
    tools: object = None,
    tool_choice: object = None,
    parallel_tool_calls: object = True,
) -> TextStream:
    """The stream answering the last turn of ``messages`` (see :meth:`phi3.Model.chat`)."""
    if tools is None and tool_choice is None and not has_tool_turns(messages):
        model.check_supported(config)
        return model.stream(model.apply_chat_template(messages), config)
    request = tool_calling.check_request(tools, tool_choice, parallel_tool_calls)
    checked = check_messages(messages)
    tool_calling.check_supported(model, request, config)
    native = tool_calling.native_format(model)
    rendered = (
        tool_calling.native_messages(checked, request) if native else tool_calling.generic_messages(checked, request)
    )
    prompt = model.apply_chat_template(rendered)
    if request.choice == "none":
        return model.stream(prompt, config)
    return model.stream_passes(tool_calling.decode_calls(prompt, config, request, native))


__all__ = ["chat_stream"]
