"""What every route needs: the server state, the API-key check, decoding clips, and waiting for the model."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import ConfigError
from ..metadata import MetadataSchema
from .batcher import Batcher
from .config import ServerConfig
from .engine import Answer, Job
from .errors import APIError
from .limits import audio_format, check_api_key, decode_clip

_bearer = HTTPBearer(auto_error=False, description="needed when the server has an API key")


@dataclass
class ServerState:
    model: object
    config: ServerConfig
    batcher: Batcher
    created: int

    @property
    def schema(self) -> MetadataSchema:
        return self.model.metadata_schema


def state(request: Request) -> ServerState:
    return request.app.state.speechllm


def authorized(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    """Dependency of every /v1 route: 401 unless the bearer token matches the configured key."""
    given = f"Bearer {credentials.credentials}" if credentials else request.headers.get("authorization")
    check_api_key(state(request).config, given)


async def clip_from_bytes(server: ServerState, raw: bytes, where: str, declared: str | None = None,
                          filename: str | None = None) -> np.ndarray:
    """16 kHz samples of an uploaded clip, checked against the limits (415, 413, 400). Decodes off the event loop."""
    fmt = audio_format(raw, declared, filename)
    processor = server.model.processor
    return await asyncio.to_thread(decode_clip, raw, fmt, server.config, max_seconds=processor.max_audio_seconds,
                                   min_samples=processor.min_samples, label=where)


async def answer(request: Request, job: Job) -> Answer:
    """Queue `job` and wait for its answer; stop its generation if the client disconnects meanwhile."""
    server = state(request)
    task = asyncio.ensure_future(server.batcher.submit(job, server.config.request_timeout_s))
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.5)
        if done:
            return task.result()
        if await request.is_disconnected():
            job.cancel.set()
            task.cancel()
            raise APIError(499, "the client disconnected", "client_disconnected")


def parse_fields(server: ServerState, fields: list[str] | None, where: str) -> tuple[str, ...] | None:
    """Requested metadata fields checked against the model's schema (400 naming the valid ones)."""
    if fields is None:
        return None
    names = [n.strip() for f in fields for n in f.split(",") if n.strip()]  # form fields may be "A,B"
    try:
        server.schema.subset(names)
    except ConfigError as e:
        raise APIError(400, f"{where}: {e}", "invalid_fields", where) from None
    if not names:
        raise APIError(400, f"{where}: name at least one field; valid fields are {server.schema.names}",
                       "invalid_fields", where)
    return tuple(names)
