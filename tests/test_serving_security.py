"""What a browser or a careless setting could expose: empty API keys, the key checked before the body, Host checks
(DNS rebinding), cross-site posts to a keyless server, security headers, API docs without a CDN, what stays public
with a key, and a body that stops half-way."""

import json
import socket

import pytest

pytest.importorskip("fastapi", reason="serving needs fastapi (pip install -e '.[dev]')")
uvicorn = pytest.importorskip("uvicorn")
from fastapi.testclient import TestClient  # noqa: E402

from speechllm import cli  # noqa: E402
from speechllm.errors import ConfigError  # noqa: E402
from speechllm.serving import ServerConfig, create_app  # noqa: E402
from speechllm.serving.routes import STATIC  # noqa: E402
from speechllm.testing import tiny_model  # noqa: E402
from tests.test_serving import audio_part, chat_body, running_server, wav_bytes  # noqa: E402

KEY = {"Authorization": "Bearer s3cret"}


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def keyed(model):
    with TestClient(create_app(model, ServerConfig(model_name="tiny", api_key="s3cret"))) as c:
        yield c


@pytest.fixture(scope="module")
def keyless(model):
    app = create_app(model, ServerConfig(model_name="tiny", default_max_tokens=2))
    with TestClient(app) as c:
        c.app_ = app
        yield c


def _metadata_form():
    return {"files": {"file": ("a.wav", wav_bytes(0.5))}, "data": {"fields": "Gender"}}


# -- API keys: never empty, checked first ----------------------------------------------------------------------
@pytest.mark.parametrize("key", ["", "   ", "\t"])
def test_an_empty_api_key_is_refused_not_read_as_no_key(model, key, tmp_path):
    with pytest.raises(ConfigError, match="empty"):
        ServerConfig(api_key=key)
    (tmp_path / "limits.yaml").write_text(f"api_key: {json.dumps(key)}\n")  # YAML reads JSON strings
    with pytest.raises(ConfigError, match="empty"):
        ServerConfig.load(tmp_path / "limits.yaml")
    config = ServerConfig()
    config.api_key = key  # set after it was built: create_app checks again
    with pytest.raises(ConfigError, match="empty"):
        create_app(model, config)


def test_the_cli_refuses_an_empty_key_from_the_flag_or_the_environment(model, tmp_path, monkeypatch, capsys):
    model.save_pretrained(tmp_path / "m")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: pytest.fail("nothing must be served"))
    assert cli.main(["serve", str(tmp_path / "m"), "--api-key", ""]) == 1
    assert "api_key '' is empty" in capsys.readouterr().err
    monkeypatch.setenv("SPEECHLLM_API_KEY", "")
    assert cli.main(["serve", str(tmp_path / "m")]) == 1
    assert "api_key '' is empty" in capsys.readouterr().err


@pytest.mark.parametrize("header", ["Bearer ", "Bearer", "Bearer  ", "", "Basic s3cret"])
def test_an_empty_or_wrong_bearer_token_never_authenticates(keyed, header):
    r = keyed.get("/v1/models", headers={"Authorization": header})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_the_key_is_checked_before_the_body_is_parsed(keyed):
    r = keyed.post("/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"})
    assert r.status_code == 401  # not 400 "not valid JSON": the body was never read


# -- with a key: what stays public -----------------------------------------------------------------------------
def test_with_a_key_only_the_page_and_a_bare_liveness_answer_are_public(keyed):
    assert keyed.get("/health").json() == {"status": "ok", "auth_required": True}
    assert keyed.get("/health", headers=KEY).json() == {"status": "ok", "auth_required": True, "model": "tiny",
                                                         "busy": False, "queued": 0}
    assert keyed.get("/openapi.json").status_code == 401
    assert "/v1/chat/completions" in keyed.get("/openapi.json", headers=KEY).json()["paths"]
    assert keyed.get("/").status_code == 200 and keyed.get("/static/app.js").status_code == 200


# -- browsers: Host, cross-site posts, headers, docs -------------------------------------------------------------
def test_the_host_header_must_name_the_server(model):
    config = ServerConfig(model_name="tiny", allowed_hosts=["localhost", "127.0.0.1", "::1"])
    with TestClient(create_app(model, config), base_url="http://localhost:8000") as c:
        assert c.get("/health").status_code == 200
        for host in ("127.0.0.1:8000", "[::1]:8000", "LOCALHOST", "localhost."):
            assert c.get("/health", headers={"host": host}).status_code == 200, host
        for host in ("attacker.example", "attacker.example:8000", "localhost.attacker.example", "[::2]:8000"):
            r = c.get("/v1/models", headers={"host": host})
            assert r.status_code == 400 and "allowed_hosts" in r.json()["error"]["message"], host


def test_serve_answers_only_to_the_names_of_its_bound_address(model, tmp_path, monkeypatch):
    model.save_pretrained(tmp_path / "m")
    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    assert cli.main(["serve", str(tmp_path / "m")]) == 0
    with TestClient(started["app"], base_url="http://localhost:8000") as c:
        assert c.get("/v1/models").status_code == 200
        assert c.get("/v1/models", headers={"host": "rebound.attacker.example:8000"}).status_code == 400


@pytest.mark.parametrize("headers", [{"origin": "http://attacker.example"}, {"origin": "null"},
                                     {"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"}])
def test_a_keyless_server_refuses_cross_site_posts(keyless, headers):
    sizes = keyless.app_.state.speechllm.batcher.batch_sizes
    before = len(sizes)
    r = keyless.post("/v1/metadata", headers=headers, **_metadata_form())
    assert r.status_code == 403 and "cross-site" in r.json()["error"]["message"]
    assert len(sizes) == before  # the model never ran
    assert keyless.get("/health", headers=headers).status_code == 200  # reading is not refused


def test_same_origin_and_non_browser_posts_are_served(keyless, keyed):
    for headers in ({}, {"origin": "http://testserver", "sec-fetch-site": "same-origin"}):
        assert keyless.post("/v1/metadata", headers=headers, **_metadata_form()).status_code == 200
    cross = {"origin": "http://other.example", "sec-fetch-site": "cross-site", **KEY}
    r = keyed.post("/v1/chat/completions", headers=cross, json=chat_body(audio_part(wav_bytes(0.4)), max_tokens=2))
    assert r.status_code == 200  # a server with a key: the key decides, not the origin


def test_every_response_carries_the_security_headers(keyless, keyed):
    for r in (keyless.get("/"), keyless.get("/static/app.js"), keyless.get("/health"), keyless.get("/nothing"),
              keyed.get("/v1/models"), keyless.post("/v1/metadata", headers={"origin": "http://x.example"})):
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], r.url
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"


def test_api_docs_load_nothing_from_a_cdn(keyless):
    assert keyless.get("/docs").status_code == 404 and keyless.get("/redoc").status_code == 404
    assert keyless.get("/openapi.json").status_code == 200
    for path in STATIC.iterdir():  # the page works under its own CSP: no inline code or styles, nothing remote
        text = path.read_text()
        assert "style=" not in text and "<script>" not in text and "onclick" not in text, path.name
        assert "http://" not in text and "https://" not in text, path.name


# -- a real server: the key before the body, a body that stops half-way ----------------------------------------
@pytest.fixture(scope="module")
def live(model):
    config = ServerConfig(model_name="tiny", api_key="s3cret", body_timeout_s=1)
    with running_server(create_app(model, config)) as url:
        yield int(url.rpartition(":")[2])


def _raw(port: int, request: bytes) -> bytes:
    """What the server answers to `request` before it closes the connection (fails after 20 s of silence)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def test_a_request_without_the_key_is_refused_before_its_body_arrives(live):
    reply = _raw(live, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 100000\r\nConnection: close\r\n\r\n")  # the body never comes
    assert reply.startswith(b"HTTP/1.1 401")


def test_a_body_that_stops_half_way_is_cut_at_the_deadline(live):
    reply = _raw(live, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       b"Authorization: Bearer s3cret\r\nContent-Length: 1000\r\n\r\n" + b"{" * 500)
    assert reply.startswith(b"HTTP/1.1 408") and b"body_timeout_s" in reply  # and the connection was closed
