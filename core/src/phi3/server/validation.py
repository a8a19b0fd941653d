"""Request bodies checked against their schemas, and pydantic's errors as OpenAI's one-line 400s."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from phi3.server.errors import APIError, bad_request

RequestT = TypeVar("RequestT", bound=BaseModel)


async def parse_body(http: Request, schema: type[RequestT]) -> RequestT:
    """The body as ``schema``, whatever the Content-Type says (curl -d sends a form type), or a 400."""
    body = await http.body()
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise bad_request(
            f"the request body is not valid JSON ({exc}); send a JSON object", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


UNION_BRANCHES = ("list[", "function-after[", "constrained-")
"""How pydantic names the branch of a union in an error's location (not a parameter name)."""


def validation_error(errors: Sequence[Any]) -> APIError:
    """One line naming the first bad parameter, as OpenAI's 400s do."""
    if not errors:
        return bad_request("the request body is not valid")
    # a union (a string or a list of parts) fails once per branch: report the deepest, most specific one
    first = max(errors, key=lambda error: (len(error.get("loc", ())), error.get("type") == "value_error"))
    if first.get("type") == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        return bad_request(f"the request body is not valid JSON ({detail}); send a JSON object", code="invalid_json")
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    # a union (str | list of parts) reports each branch: name the field, not the branch
    loc = [part for part in loc if part not in ("str", "int", "float", "bool") and not part.startswith(UNION_BRANCHES)]
    param = ".".join(loc) or None
    if first.get("type") == "extra_forbidden":
        return bad_request(
            f"unrecognized request argument: {param}; phi3 does not know it",
            param=param,
            code="unknown_parameter",
        )
    if first.get("type") == "missing" and param:
        return bad_request(f"missing required parameter: {param}", param=param, code="missing_required_parameter")
    where = f"{param}: " if param else ""
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return bad_request(f"invalid request: {where}{message}", param=param)
