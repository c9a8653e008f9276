"""Serving: an OpenAI-compatible HTTP API (chat with audio, transcriptions), metadata, and a web page.

    from speechllm.serving import create_app, ServerConfig
    app = create_app(model, ServerConfig(api_key="secret"))    # a FastAPI app; `serve(...)` runs uvicorn

Modules: app (factory, serve), routes and chat (endpoints), schemas (request/response bodies), batcher and
engine (batched generation on one model thread), limits (size, format, duration, auth, audio URLs), config.
"""

from speechllm.extras import require_extra

require_extra("serve", "speechllm serve (speechllm.serving)")  # before fastapi is imported below

from .app import create_app, resolve_model, serve  # noqa: E402
from .config import ServerConfig  # noqa: E402

__all__ = ["ServerConfig", "create_app", "resolve_model", "serve"]
