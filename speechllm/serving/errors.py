"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, with the HTTP status that fits."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import AudioError, SpeechLLMError

log = logging.getLogger("speechllm.serving")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          413: "request_too_large", 415: "unsupported_media_type", 422: "invalid_request_error",
          429: "rate_limit_error", 504: "timeout", 500: "server_error", 503: "server_error"}


class APIError(Exception):
    """An error a client caused or must know about: its HTTP status, a message saying what to change, a code."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers


def error_body(status: int, message: str, code: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(status: int, message: str, code: str, param: str | None = None, headers=None) -> JSONResponse:
    return JSONResponse(error_body(status, message, code, param), status_code=status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    """Route every failure through error_response, so clients see one shape whatever went wrong."""

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else exc.headers
        return error_response(exc.status, exc.message, exc.code, exc.param, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):  # a body that is not JSON at all: 400, as OpenAI
            return error_response(400, "the request body is not valid JSON: " + _ctx(errors[0]), "invalid_json")
        # The deepest problem is the most specific: a union (message content: a string or a list of parts) reports
        # one error per branch it tried, and the branch the client meant is the one that got further.
        first = max(errors, key=lambda e: len(e.get("loc", ())), default={})
        path = _field_path(first.get("loc", ()))
        others = sum(path[:len(p)] != p for p in (_field_path(e.get("loc", ())) for e in errors))  # not this field
        where = ".".join(str(x) for x in path)
        more = f" (and {others} more problem(s))" if others else ""
        return error_response(422, f"{where or 'body'}: {first.get('msg', 'invalid')}{more}", "invalid_request",
                              where or None)

    @app.exception_handler(AudioError)
    async def _audio(request: Request, exc: AudioError):
        return error_response(400, str(exc), "invalid_audio")

    @app.exception_handler(SpeechLLMError)
    async def _library(request: Request, exc: SpeechLLMError):
        return error_response(400, str(exc), "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), {404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log", "internal_error")


def _ctx(error: dict) -> str:
    ctx = error.get("ctx") or {}
    return str(ctx.get("error") or error.get("msg") or "")


_BRANCH_LABELS = {"str", "int", "float", "bool", "list", "dict"}


def _field_path(loc) -> tuple:
    """A pydantic error location as the client's field names: `body.messages.0.content.list[tagged-union[...]].0.
    input_audio.input_audio.data` -> `messages.0.content.0.input_audio.data`, without the labels pydantic adds for the
    union branch it tried (`str`, `list[...]`) and a tagged union's tag (which repeats the part's field name)."""
    path = []
    for x in loc:
        if isinstance(x, str) and (x == "body" or x in _BRANCH_LABELS or "[" in x or (path and x == path[-1])):
            continue
        path.append(x)
    return tuple(path)
