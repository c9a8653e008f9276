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
          504: "timeout", 500: "server_error", 503: "server_error"}


class APIError(Exception):
    """An error a client caused or must know about: its HTTP status, a message saying what to change, a code."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def error_body(status: int, message: str, code: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(status: int, message: str, code: str, param: str | None = None, headers=None) -> JSONResponse:
    return JSONResponse(error_body(status, message, code, param), status_code=status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    """Route every failure through error_response, so clients see one shape whatever went wrong."""

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.message, exc.code, exc.param, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):  # a body that is not JSON at all: 400, as OpenAI
            return error_response(400, "the request body is not valid JSON: " + _ctx(errors[0]), "invalid_json")
        first = errors[0] if errors else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
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
