"""The HTTP server: `create_app(model, config)` builds the FastAPI app (tests use it in-process), `serve` runs it."""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .. import __version__, load
from . import chat, routes
from .batcher import Batcher
from .config import ServerConfig
from .context import ServerState
from .errors import install_handlers
from .limits import BodySizeLimit

log = logging.getLogger("speechllm.serving")


def create_app(model, config: ServerConfig | None = None) -> FastAPI:
    """A FastAPI app serving `model` (a SpeechLLMForConditionalGeneration with its processor).

    The model runs on one worker thread started by the app's lifespan: use the app under uvicorn, or as
    `with TestClient(app) as client:` so the lifespan runs."""
    config = config or ServerConfig()
    batcher = Batcher(model, enabled=config.batching, window_ms=config.batch_window_ms,
                      max_batch_size=config.max_batch_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="speechllm", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible chat and transcription for a speech LLM, plus speaker metadata.")
    app.state.speechllm = ServerState(model, config, batcher, int(time.time()))
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    install_handlers(app)
    app.include_router(routes.public)
    app.include_router(routes.router)
    app.include_router(chat.router)
    app.mount("/static", StaticFiles(directory=routes.STATIC), name="static")
    return app


def serve(model=None, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          config: str | Path | ServerConfig | None = None, log_level: str = "info") -> None:
    """Load the model (a path, None for the default, or a model object) and serve it with uvicorn until stopped.
    The API key comes from `api_key`, else the config file, else $SPEECHLLM_API_KEY."""
    import uvicorn

    if not isinstance(config, ServerConfig):
        config = ServerConfig.load(config, api_key=api_key)
    elif api_key is not None:
        config.api_key = api_key
    config.api_key = config.api_key or os.environ.get("SPEECHLLM_API_KEY") or None
    if config.api_key is None and not _loopback(host):
        log.warning("serving on %s without an API key: anyone who can reach it can use the model", host)
    if isinstance(model, (str, Path)) and config.model_name == ServerConfig.model_name:
        config.model_name = Path(model).name or config.model_name  # what /v1/models reports
    model = load(model) if model is None or isinstance(model, (str, Path)) else model
    uvicorn.run(create_app(model, config), host=host, port=port, log_level=log_level)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
