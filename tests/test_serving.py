"""The HTTP server: every endpoint, every limit's error, batching, streaming and disconnects, auth, the CLI.

In-process through FastAPI's TestClient; the streaming-disconnect and `openai` client tests drive a real uvicorn
server on a free loopback port.
"""

import base64
import contextlib
import io
import json
import socket
import threading
import time

import pytest
import soundfile as sf

fastapi = pytest.importorskip("fastapi", reason="serving needs fastapi (pip install -e '.[dev]')")
uvicorn = pytest.importorskip("uvicorn")
from fastapi.testclient import TestClient  # noqa: E402

from speechllm import cli  # noqa: E402
from speechllm.serving import ServerConfig, create_app  # noqa: E402
from speechllm.testing import tiny_model  # noqa: E402
from tests.conftest import packaged_at, tone  # noqa: E402


def wav_bytes(seconds: float = 1.0, seed: int = 0, fmt: str = "WAV") -> bytes:
    samples, rate = tone(seconds, freq=180 + 40 * seed, seed=seed)
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def audio_part(data: bytes, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": b64(data), "format": fmt}}


def chat_body(*parts, **options) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": list(parts)}], **options}


def check_metadata(schema, values: dict, fields: list[str]) -> None:
    """`values` is valid against the model's JSON Schema for `fields` (keys in order, labels, types)."""
    expected = schema.json_schema(fields)
    assert list(values) == fields == expected["required"]
    for name, value in values.items():
        prop = expected["properties"][name]
        if value is None:  # a speaker label with no speaker: the schema lets it be null
            assert "null" in prop["type"]
            continue
        assert isinstance(value, {"string": str, "boolean": bool}[prop["type"] if isinstance(prop["type"], str)
                                                                 else prop["type"][0]])
        assert "enum" not in prop or value in prop["enum"]


@contextlib.contextmanager
def running_server(app):
    """Serve `app` with uvicorn on a free loopback port in a thread; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def wait_idle(app, seconds: float = 10.0) -> float:
    """Seconds until the model worker has nothing running or queued; fails after `seconds`."""
    batcher, start = app.state.speechllm.batcher, time.monotonic()
    while batcher.busy or batcher.queued:
        assert time.monotonic() - start < seconds, "the model worker is still busy"
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def client(model, tmp_path_factory):
    """One app with small limits, shared by the endpoint and error tests."""
    allowed = tmp_path_factory.mktemp("allowed")
    (allowed / "clip.wav").write_bytes(wav_bytes(0.5))
    config = ServerConfig(model_name="tiny", max_body_bytes=200_000, max_audio_seconds=3, max_clips_per_request=2,
                          max_tokens_limit=64, default_max_tokens=8, local_audio_dir=str(allowed))
    with TestClient(create_app(model, config)) as c:
        c.allowed = allowed
        yield c


# -- endpoints -------------------------------------------------------------------------------------------
def test_health_models_schema_and_openapi(client, model):
    assert client.get("/health").json() == {"status": "ok", "model": "tiny", "auth_required": False, "busy": False,
                                            "queued": 0}
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny"
    schema = client.get("/v1/schema").json()
    assert [f["name"] for f in schema["fields"]] == model.metadata_schema.names
    assert schema["json_schema"] == model.metadata_schema.json_schema()
    spec = client.get("/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/audio/transcriptions", "/v1/metadata", "/v1/schema"} <= set(spec["paths"])
    metadata_body = spec["paths"]["/v1/metadata"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} == set(metadata_body)
    assert "input_audio" in json.dumps(spec["components"]["schemas"]["InputAudioPart"])


def test_chat_with_two_clips_and_turns_matches_the_library(client, model):
    a, b = wav_bytes(0.8, 1), wav_bytes(1.2, 2)
    body = {"messages": [
        {"role": "system", "content": "You answer about audio."},
        {"role": "user", "content": [{"type": "text", "text": "Compare "}, audio_part(a),
                                     {"type": "text", "text": " and "}, audio_part(b)]},
        {"role": "assistant", "content": "They differ."},
        {"role": "user", "content": "How?"}], "max_tokens": 6}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "chat.completion" and out["model"] == "tiny"
    assert out["choices"][0]["finish_reason"] in ("stop", "length")
    usage = out["usage"]
    assert usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    expected = model.chat([[
        {"role": "system", "content": "You answer about audio."},
        {"role": "user", "content": [{"type": "text", "text": "Compare "}, {"type": "audio", "audio": a},
                                     {"type": "text", "text": " and "}, {"type": "audio", "audio": b}]},
        {"role": "assistant", "content": "They differ."}, {"role": "user", "content": "How?"}]], max_new_tokens=6)[0]
    assert out["choices"][0]["message"]["content"] == expected


@pytest.mark.parametrize("request_format", ["json_schema", "extension"])
def test_chat_metadata_is_schema_valid_with_confidences(client, model, request_format):
    fields = ["Gender", "SpeechActivity", "Accent"]
    if request_format == "json_schema":
        schema = {"type": "object", "properties": {f: {} for f in fields}}
        options = {"response_format": {"type": "json_schema", "json_schema": {"name": "meta", "schema": schema}}}
    else:
        options = {"speechllm": {"fields": fields}}
    clip = wav_bytes(1.0, 3)
    r = client.post("/v1/chat/completions", json=chat_body(audio_part(clip), **options))
    assert r.status_code == 200, r.text
    out = r.json()
    values = json.loads(out["choices"][0]["message"]["content"])
    check_metadata(model.metadata_schema, values, fields)
    ext = out["speechllm"]
    assert ext["valid"] and ext["metadata"] == values
    assert set(ext["confidences"]) == set(fields) and all(0 < c <= 1 for c in ext["confidences"].values())
    assert values == model.generate_meta(clip, fields=fields).values


def test_stream_yields_chunks_then_done(client, model):
    body = chat_body({"type": "text", "text": "Transcribe "}, audio_part(wav_bytes(0.7)), max_tokens=6)
    plain = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
    r = client.post("/v1/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: "):] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == plain
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] <= 6


def test_sampling_with_a_seed_repeats(client):
    body = chat_body({"type": "text", "text": "Say "}, audio_part(wav_bytes(0.5)), max_tokens=8, temperature=1.5,
                     top_p=0.95, seed=7)
    answers = {client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
               for _ in range(2)}
    other = client.post("/v1/chat/completions", json={**body, "seed": 8}).json()["choices"][0]["message"]["content"]
    assert len(answers) == 1 and other not in answers


def test_transcriptions_in_every_response_format(client, model):
    clip = wav_bytes(1.0, 4)
    expected = model.transcribe(clip, max_new_tokens=8)
    upload = {"file": ("speech.wav", clip, "audio/wav")}
    r = client.post("/v1/audio/transcriptions", files=upload, data={"model": "tiny"})
    assert r.status_code == 200, r.text
    assert r.json() == {"text": expected}
    r = client.post("/v1/audio/transcriptions", files=upload, data={"response_format": "text"})
    assert r.headers["content-type"].startswith("text/plain") and r.text == expected
    verbose = client.post("/v1/audio/transcriptions", files=upload, data={"response_format": "verbose_json"}).json()
    assert verbose["text"] == expected and verbose["duration"] == 1.0 and verbose["task"] == "transcribe"
    flac = client.post("/v1/audio/transcriptions", files={"file": ("speech.flac", wav_bytes(1.0, 4, "FLAC"))})
    assert flac.status_code == 200 and flac.json()["text"] == expected  # lossless: the same samples


def test_metadata_endpoint_multipart_and_json(client, model):
    clip, schema = wav_bytes(1.0, 5), model.metadata_schema
    r = client.post("/v1/metadata", files={"file": ("a.wav", clip)}, data={"fields": "Emotion,Gender"})
    assert r.status_code == 200, r.text
    out = r.json()
    check_metadata(schema, out["metadata"], ["Emotion", "Gender"])
    assert out["valid"] and json.loads(out["text"]) == out["metadata"]
    assert set(out["confidences"]) == {"Emotion", "Gender"}
    assert out["usage"]["completion_tokens"] > 0
    r = client.post("/v1/metadata", json={"audio": b64(clip), "fields": ["Emotion", "Gender"]})
    assert r.status_code == 200 and r.json()["metadata"] == out["metadata"]
    everything = client.post("/v1/metadata", json={"audio": b64(clip)}).json()
    check_metadata(schema, everything["metadata"], schema.names)


def test_audio_url_data_and_allowed_file(client):
    data_url = "data:audio/wav;base64," + b64(wav_bytes(0.5))
    r = client.post("/v1/chat/completions", json=chat_body({"type": "audio_url", "audio_url": {"url": data_url}}))
    assert r.status_code == 200, r.text
    inside = (client.allowed / "clip.wav").as_uri()
    r = client.post("/v1/chat/completions", json=chat_body({"type": "audio_url", "audio_url": {"url": inside}}))
    assert r.status_code == 200, r.text


# -- errors: status, OpenAI's shape, a clear message, and the server keeps serving --------------------------------
def _upload(name, data):
    return {"files": {"file": (name, data)}}


ERRORS = {
    "malformed json": ("/v1/chat/completions",
                       {"content": b'{"messages": [', "headers": {"content-type": "application/json"}},
                       400, "not valid JSON"),
    "missing messages": ("/v1/chat/completions", {"json": {"model": "tiny"}}, 422, "messages"),
    "bad temperature": ("/v1/chat/completions", {"json": chat_body({"type": "text", "text": "hi"}, temperature=5)},
                        422, "temperature"),
    "audio part without data": ("/v1/chat/completions", {"json": chat_body({"type": "input_audio", "input_audio": {
        "format": "wav"}})}, 422, "messages.0.content.0.input_audio.data: Field required"),
    "bad base64": ("/v1/chat/completions", {"json": chat_body({"type": "input_audio", "input_audio": {
        "data": "not base64!!", "format": "wav"}})}, 400, "not valid base64"),
    "undecodable audio": ("/v1/chat/completions", {"json": chat_body(audio_part(b"RIFF0000WAVEjunk" * 10))},
                          400, "cannot decode"),
    "unsupported format": ("/v1/chat/completions",
                           {"json": chat_body(audio_part(b"\x1aE\xdf\xa3" + bytes(100), "webm"))},
                           415, "'webm' is not supported"),
    "webm upload": ("/v1/audio/transcriptions", _upload("rec.webm", b"\x1aE\xdf\xa3" + bytes(100)), 415, "webm"),
    "unknown bytes": ("/v1/metadata", _upload("blob", bytes(300)), 415, "not supported"),
    "body too large": ("/v1/metadata", _upload("a.wav", bytes(250_000)), 413, "max_body_bytes"),
    "audio too long": ("/v1/metadata", _upload("a.wav", wav_bytes(4.0)), 413, "at most 3 s"),
    "too many clips": ("/v1/chat/completions", {"json": chat_body(*[audio_part(wav_bytes(0.3, i)) for i in range(3)])},
                       400, "max_clips_per_request"),
    "unknown field": ("/v1/metadata", {"json": {"audio": b64(wav_bytes(0.5)), "fields": ["Height"]}}, 400,
                      "unknown metadata field 'Height'"),
    "json_schema not of fields": ("/v1/chat/completions", {"json": chat_body(
        audio_part(wav_bytes(0.5)),
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}})},
        400, "properties"),
    "metadata needs one clip": ("/v1/chat/completions", {"json": chat_body({"type": "text", "text": "hi"},
                                                                           speechllm={"fields": ["Gender"]})},
                                400, "one clip"),
    "max_tokens above limit": ("/v1/chat/completions",
                               {"json": chat_body({"type": "text", "text": "hi"}, max_tokens=65)},
                               400, "max_tokens_limit"),
    "http audio_url": ("/v1/chat/completions", {"json": chat_body({"type": "audio_url", "audio_url": {
        "url": "http://127.0.0.1:9/a.wav"}})}, 400, "http(s) audio URLs are disabled"),
    "file url outside": ("/v1/chat/completions", {"json": chat_body({"type": "audio_url", "audio_url": {
        "url": "file:///etc/passwd"}})}, 400, "inside the allowed folder"),
    "multipart without file": ("/v1/metadata", {"data": {"fields": "Gender"}, "files": {"other": ("x", b"1")}}, 400,
                               "`file` part"),
    "wrong content type": ("/v1/metadata", {"content": b"x", "headers": {"content-type": "text/plain"}}, 415,
                           "multipart/form-data"),
    "unknown route": ("/v1/nothing", {"json": {}}, 404, "Not Found"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_clear_and_the_server_keeps_serving(client, case):
    path, kwargs, status, message = ERRORS[case]
    r = client.post(path, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error["message"] and error["type"] and error["code"]
    ok = client.post("/v1/chat/completions", json=chat_body({"type": "text", "text": "hi "},
                                                            audio_part(wav_bytes(0.4)), max_tokens=2))
    assert ok.status_code == 200


def test_file_url_traversal_is_refused(client):
    sneaky = (client.allowed / ".." / ".." / "etc" / "passwd").as_posix()
    r = client.post("/v1/chat/completions",
                    json=chat_body({"type": "audio_url", "audio_url": {"url": "file://" + sneaky}}))
    assert r.status_code == 400 and "inside the allowed folder" in r.json()["error"]["message"]
    outside = client.allowed.parent / "outside.wav"
    outside.write_bytes(wav_bytes(0.5))
    link = client.allowed / "link.wav"
    link.symlink_to(outside)  # a link out of the folder is outside it too
    r = client.post("/v1/chat/completions", json=chat_body({"type": "audio_url", "audio_url": {"url": link.as_uri()}}))
    assert r.status_code == 400


def test_file_urls_refused_unless_configured(model):
    with TestClient(create_app(model, ServerConfig())) as c:
        r = c.post("/v1/chat/completions", json=chat_body({"type": "audio_url", "audio_url": {"url": "file:///tmp/a.wav"}}))
    assert r.status_code == 400 and "local_audio_dir" in r.json()["error"]["message"]


def test_timeout_gives_504_and_stops_generation(model):
    config = ServerConfig(request_timeout_s=0.5, max_tokens_limit=4000)
    app = create_app(model, config)
    with TestClient(app) as c:
        start = time.monotonic()
        r = c.post("/v1/chat/completions", json=chat_body(audio_part(wav_bytes(0.5)), max_tokens=4000, min_tokens=4000))
        assert r.status_code == 504 and "request_timeout_s" in r.json()["error"]["message"]
        wait_idle(app, 5)  # 4000 tokens would take minutes: the cancel stopped generate
        assert time.monotonic() - start < 8
        after = c.post("/v1/chat/completions", json=chat_body(audio_part(wav_bytes(0.5)), max_tokens=2))
        assert after.status_code == 200


def test_api_key_required_when_set(model, monkeypatch):
    import speechllm.serving.limits as limits

    compared = []
    real = limits.hmac.compare_digest
    monkeypatch.setattr(limits.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    with TestClient(create_app(model, ServerConfig(api_key="s3cret"))) as c:
        assert c.get("/health").json()["auth_required"] is True  # open: load balancers and the page use it
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = c.get("/v1/models", headers=headers)
            assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
        r = c.post("/v1/metadata", json={"audio": b64(wav_bytes(0.5))})
        assert r.status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert compared  # constant-time comparison


# -- batching --------------------------------------------------------------------------------------------------
def _concurrently(client, bodies):
    results = [None] * len(bodies)

    def call(i):
        results[i] = client.post("/v1/chat/completions", json=bodies[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_requests_are_batched_and_answer_as_alone(model):
    bodies = [chat_body({"type": "text", "text": "Transcribe "}, audio_part(wav_bytes(0.5 + i / 5, i)),
                        max_tokens=4 if i % 2 else 5) for i in range(6)]
    app = create_app(model, ServerConfig(batch_window_ms=300, max_batch_size=8))
    with TestClient(app) as c:
        alone = [c.post("/v1/chat/completions", json=b).json()["choices"][0]["message"]["content"] for b in bodies]
        app.state.speechllm.batcher.batch_sizes.clear()
        results = _concurrently(c, bodies)
    assert [r.json()["choices"][0]["message"]["content"] for r in results] == alone
    sizes = app.state.speechllm.batcher.batch_sizes
    assert max(sizes) > 1  # a batch of several requests ran
    assert max(sizes) <= 3  # ... but max_tokens 4 and 5 never share one: only compatible requests batch


def test_metadata_requests_batch_too(model):
    app = create_app(model, ServerConfig(batch_window_ms=300))
    with TestClient(app) as c:
        results = [None] * 3

        def call(i):
            results[i] = c.post("/v1/metadata", json={"audio": b64(wav_bytes(0.6, i)), "fields": ["Gender", "Age"]})

        threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
        [t.start() for t in threads]
        [t.join(60) for t in threads]
    assert all(r.status_code == 200 and r.json()["valid"] for r in results)
    assert max(app.state.speechllm.batcher.batch_sizes) > 1


def test_batching_off_runs_one_at_a_time(model):
    app = create_app(model, ServerConfig(batching=False))
    with TestClient(app) as c:
        bodies = [chat_body(audio_part(wav_bytes(0.5, i)), max_tokens=3) for i in range(3)]
        assert all(r.status_code == 200 for r in _concurrently(c, bodies))
    assert set(app.state.speechllm.batcher.batch_sizes) == {1}


# -- a real server: disconnects and the official openai client ------------------------------------------------
@pytest.fixture(scope="module")
def live():
    app = create_app(tiny_model(), ServerConfig(model_name="tiny", max_tokens_limit=5000))
    with running_server(app) as url:
        yield url, app


def test_client_disconnect_mid_stream_stops_generation(live):
    import httpx

    url, app = live
    body = chat_body(audio_part(wav_bytes(0.5)), max_tokens=5000, min_tokens=5000, stream=True)
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]
            assert any('"content"' in line for line in got)
            assert app.state.speechllm.batcher.busy  # generating when the client leaves
        # leaving the block closes the connection mid-stream
    assert wait_idle(app, 8) < 8  # 5000 tokens would take minutes
    with httpx.Client(timeout=30) as http:
        assert http.get(url + "/health").json()["busy"] is False


def test_openai_client_chat_stream_and_transcription(live, tmp_path):
    openai = pytest.importorskip("openai")
    url, _ = live
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    clip = wav_bytes(1.0, 6)
    reply = client.chat.completions.create(model="tiny", max_tokens=5, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is said?"},
        {"type": "input_audio", "input_audio": {"data": b64(clip), "format": "wav"}}]}])
    assert reply.choices[0].message.content and reply.usage.completion_tokens <= 5
    stream = client.chat.completions.create(model="tiny", max_tokens=5, stream=True, messages=[
        {"role": "user", "content": [{"type": "text", "text": "What is said?"},
        {"type": "input_audio", "input_audio": {"data": b64(clip), "format": "wav"}}]}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == reply.choices[0].message.content
    meta = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": b64(clip), "format": "wav"}}]}],
        response_format={"type": "json_schema", "json_schema": {"name": "m", "schema": {
            "type": "object", "properties": {"Gender": {"type": "string"}}}}})
    assert set(json.loads(meta.choices[0].message.content)) == {"Gender"}
    path = tmp_path / "speech.wav"
    path.write_bytes(clip)
    with open(path, "rb") as f:
        text = client.audio.transcriptions.create(model="tiny", file=f)
    assert isinstance(text.text, str) and text.text
    assert [m.id for m in client.models.list()] == ["tiny"]


# -- CLI -------------------------------------------------------------------------------------------------------
def test_cli_serve_loads_the_model_and_passes_settings(model, tmp_path, monkeypatch):
    model.save_pretrained(tmp_path / "my-model")
    (tmp_path / "limits.yaml").write_text("max_audio_seconds: 12\nbatch_window_ms: 5\n")
    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    code = cli.main(["serve", str(tmp_path / "my-model"), "--port", "8123", "--api-key", "k",
                     "--config", str(tmp_path / "limits.yaml")])
    assert code == 0 and started["host"] == "127.0.0.1" and started["port"] == 8123
    config = started["app"].state.speechllm.config
    assert (config.api_key, config.max_audio_seconds, config.batch_window_ms, config.model_name) == (
        "k", 12, 5, "my-model")


def test_cli_serve_errors_are_clear(tmp_path, monkeypatch, capsys):
    packaged_at(monkeypatch, "default", tmp_path / "no-default-model-here")
    assert cli.main(["serve"]) == 1
    assert "pass a model path" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("max_batch: 3\n")
    assert cli.main(["serve", str(tmp_path), "--config", str(tmp_path / "bad.yaml")]) == 1
    assert "unknown key(s) ['max_batch']" in capsys.readouterr().err
    (tmp_path / "typo.yaml").write_text("max_body_bytes: 25MB\n")
    assert cli.main(["serve", str(tmp_path), "--config", str(tmp_path / "typo.yaml")]) == 1
    assert "max_body_bytes: expected a whole number, got '25MB'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # checked by argparse, before the model loads
        cli.main(["serve", "--port", "99999"])
    assert "a port is 0-65535, got 99999" in capsys.readouterr().err
