"""Hostile input and load: prompt caps checked before a request is queued, the LLM's positions, batches that one
bad request cannot break, admission control (429 / 503 with Retry-After), bodies freed once parsed, and inputs that
once gave 500 (issue 14: items 2, 3, 4, 5, 8)."""

import io
import json
import threading
import time
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi", reason="serving needs fastapi (pip install -e '.[dev]')")
from fastapi.testclient import TestClient  # noqa: E402

import speechllm.serving.batcher as batcher_module  # noqa: E402
from speechllm.serving import ServerConfig, create_app  # noqa: E402
from speechllm.serving.errors import APIError  # noqa: E402
from speechllm.testing import tiny_model  # noqa: E402
from tests.test_modeling import cross_attention_model  # noqa: E402
from tests.test_serving import audio_part, chat_body, wav_bytes  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def whisper_decoder():
    """Whisper's decoder as the LLM (448 learned positions), as in the default model."""
    return cross_attention_model(crop_to_length=True)


def never_queued(app) -> list:
    """Make the first model's batcher refuse work, recording each job offered: a request must not get this far."""
    offered = []

    async def submit(job, timeout):
        offered.append(job)
        raise APIError(500, "this request reached the model worker", "reached_worker")

    app.state.speechllm.default.batcher.submit = submit
    return offered


def text(words: int) -> str:
    return " ".join(["word"] * words)


# -- item 2: caps checked in the handler ----------------------------------------------------------------------
def test_oversized_prompts_are_refused_before_the_model_worker(model, whisper_decoder):
    app = create_app(model, ServerConfig())
    with TestClient(app) as c:
        offered = never_queued(app)
        huge = json.dumps(chat_body({"type": "text", "text": "a" * 24_000_000})).encode()  # 24 MB, no audio
        start = time.monotonic()
        r = c.post("/v1/chat/completions", content=huge, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "max_prompt_chars" in r.json()["error"]["message"]
        assert time.monotonic() - start < 30  # not the minutes a model would take over 24 MB of text
        turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": "hi"} for i in range(3000)]
        r = c.post("/v1/chat/completions", json={"messages": turns})
        assert r.status_code == 400 and "max_turns" in r.json()["error"]["message"]
        r = c.post("/v1/chat/completions", json=chat_body({"type": "text", "text": text(50)}))
        assert r.json()["error"]["code"] == "reached_worker"  # the spy works: a fine prompt reaches it
    assert len(offered) == 1
    app = create_app(model, ServerConfig(max_prompt_tokens=40))
    with TestClient(app) as c:
        offered = never_queued(app)
        r = c.post("/v1/chat/completions", json=chat_body({"type": "text", "text": text(50)}))
        assert r.status_code == 400 and "max_prompt_tokens" in r.json()["error"]["message"]
    assert not offered
    app = create_app(whisper_decoder, ServerConfig())
    with TestClient(app) as c:  # a cross-attention model reads exactly one clip: text alone is refused at once
        offered = never_queued(app)
        r = c.post("/v1/chat/completions", json=chat_body({"type": "text", "text": "hi"}))
        assert r.status_code == 400 and "exactly 1 audio clip" in r.json()["error"]["message"]
    assert not offered


# -- item 3: the LLM's positions -----------------------------------------------------------------------------
def test_prompts_are_held_against_the_llm_positions(whisper_decoder):
    app = create_app(whisper_decoder, ServerConfig(max_tokens_limit=1000))
    clip = audio_part(wav_bytes(0.5))
    with TestClient(app) as c:
        r = c.post("/v1/chat/completions", json=chat_body({"type": "text", "text": text(300)}, clip, max_tokens=500))
        assert r.status_code == 400 and "448" in r.json()["error"]["message"], r.text
        turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": "hi"} for i in range(255)]
        turns.append({"role": "user", "content": [clip]})  # 256 short turns: within max_turns, past 448 positions
        r = c.post("/v1/chat/completions", json={"messages": turns})
        assert r.status_code == 400 and "448" in r.json()["error"]["message"], r.text
        # a prompt that leaves a few positions: max_tokens 500 is cut to them, the answer is whole
        r = c.post("/v1/chat/completions", json=chat_body({"type": "text", "text": text(138)}, clip, max_tokens=500,
                                                          min_tokens=500))
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        assert 0 < usage["completion_tokens"] and usage["total_tokens"] <= 448
        assert r.json()["choices"][0]["finish_reason"] == "length"
        meta = c.post("/v1/chat/completions", json=chat_body(clip, speechllm={"fields": ["Gender"]}))
        assert meta.status_code == 200 and meta.json()["speechllm"]["valid"]


# -- item 4: one bad job never unbatches the others ------------------------------------------------------------
def test_a_bad_request_does_not_break_the_batch_of_good_ones(model):
    from tests.test_serving import _concurrently

    # the window is long and a batch of five would be full at once: the bad request, had it been queued, would
    # sit in the good ones' batch
    app = create_app(model, ServerConfig(batch_window_ms=2000, max_batch_size=5))
    good = [chat_body({"type": "text", "text": "Transcribe "}, audio_part(wav_bytes(0.4 + i / 10, i)), max_tokens=3)
            for i in range(4)]
    bad = chat_body({"type": "text", "text": "the placeholder <|audio|> in text "}, audio_part(wav_bytes(0.5)),
                    max_tokens=3)
    with TestClient(app) as c:
        results = _concurrently(c, [*good[:2], bad, *good[2:]])
    assert [r.status_code for r in results] == [200, 200, 400, 200, 200]
    assert "placeholder" in results[2].json()["error"]["message"]
    assert dict(app.state.speechllm.batcher.batch_sizes) == {4: 1}  # one batch of the four good ones


# -- item 5: admission control and memory -------------------------------------------------------------------------
@pytest.fixture
def held_worker(monkeypatch):
    """The model worker blocks in each batch until `release` is set; `running` is set when a batch starts."""
    running, release = threading.Event(), threading.Event()
    real = batcher_module.run_batch

    def blocked(model, jobs):
        running.set()
        assert release.wait(60)
        return real(model, jobs)

    monkeypatch.setattr(batcher_module, "run_batch", blocked)
    yield running, release
    release.set()


def _in_thread(c, body, results):
    thread = threading.Thread(target=lambda: results.append(c.post("/v1/chat/completions", json=body)))
    thread.start()
    return thread


def test_a_full_queue_answers_429_and_too_many_requests_503_with_retry_after(model, held_worker):
    running, release = held_worker
    body = chat_body(audio_part(wav_bytes(0.4)), max_tokens=2)
    app = create_app(model, ServerConfig(max_queued=1, max_concurrent=3, batch_window_ms=0))
    batcher, results = app.state.speechllm.batcher, []
    with TestClient(app) as c:
        first = _in_thread(c, body, results)
        assert running.wait(30)  # the worker holds the first request
        second = _in_thread(c, {**body, "max_tokens": 3}, results)
        deadline = time.monotonic() + 30
        while batcher.queued < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        full = c.post("/v1/chat/completions", json=body)  # the queue holds max_queued=1 already
        assert full.status_code == 429 and "max_queued" in full.json()["error"]["message"]
        assert int(full.headers["retry-after"]) >= 1
        third = _in_thread(c, body, results)  # ... refused too, but counts as in progress while it runs
        third.join(30)
        assert results.pop().status_code == 429
        assert c.get("/health").status_code == 200  # never refused
        release.set()
        first.join(60), second.join(60)
    assert [r.status_code for r in results] == [200, 200]


def test_more_requests_than_max_concurrent_answer_503_before_the_body_is_read(model, held_worker):
    running, release = held_worker
    app = create_app(model, ServerConfig(max_concurrent=1, batch_window_ms=0))
    results = []
    with TestClient(app) as c:
        first = _in_thread(c, chat_body(audio_part(wav_bytes(0.4)), max_tokens=2), results)
        assert running.wait(30)
        busy = c.post("/v1/metadata", content=b"x" * 1000, headers={"content-type": "application/json"})
        assert busy.status_code == 503 and "max_concurrent" in busy.json()["error"]["message"]
        assert busy.headers["retry-after"] == "1"
        assert c.get("/health").json()["status"] == "ok"
        release.set()
        first.join(60)
    assert results[0].status_code == 200


def test_a_waiting_request_holds_its_decoded_clip_not_its_body(model, monkeypatch):
    samples = np.random.default_rng(0).uniform(-0.5, 0.5, (480_000, 2))  # 10 s, 48 kHz stereo, float64: 7.7 MB
    buf = io.BytesIO()
    sf.write(buf, samples, 48_000, format="WAV", subtype="DOUBLE")
    body = json.dumps(chat_body(audio_part(buf.getvalue()), max_tokens=1)).encode()  # built before tracing starts
    real, held = batcher_module.run_batch, []

    def measure(model_, jobs):  # on the worker, while the request waits for its answer
        if tracemalloc.is_tracing():
            held.append(tracemalloc.get_traced_memory()[0])
        return real(model_, jobs)

    monkeypatch.setattr(batcher_module, "run_batch", measure)
    with TestClient(create_app(model, ServerConfig(max_audio_seconds=30))) as c:
        c.post("/v1/chat/completions", json=chat_body(audio_part(wav_bytes(0.3)), max_tokens=1))  # warm up
        tracemalloc.start()
        try:
            r = c.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        finally:
            tracemalloc.stop()
    assert r.status_code == 200, r.text
    # the decoded clip (10 s at 16 kHz, float32) is 0.64 MB; the body, its base64 text or the parsed JSON is 10 MB
    assert held and held[0] < 0.25 * len(body), (held, len(body))  # before the fix: 20.5 MB (twice the body)


# -- item 8: inputs that gave 500 -------------------------------------------------------------------------------
def test_odd_inputs_are_client_errors(model, tmp_path):
    (tmp_path / "a.wav").write_bytes(wav_bytes(0.5))
    app = create_app(model, ServerConfig(local_audio_dir=str(tmp_path)))
    clip = audio_part(wav_bytes(0.4))
    with TestClient(app) as c:
        for seed in (2**70, -1, 1e20, 1.5):  # a number that is no int64 is refused by the schema (422) or here (400)
            r = c.post("/v1/chat/completions", json=chat_body(clip, max_tokens=2, temperature=1.0, seed=seed))
            assert r.status_code in (400, 422) and "seed" in r.json()["error"]["message"], (seed, r.text)
        r = c.post("/v1/chat/completions", json=chat_body(clip, max_tokens=2, temperature=1.0, seed=2**70))
        assert r.status_code == 400 and r.json()["error"]["param"] == "seed"
        raw = json.dumps(chat_body(clip, max_tokens=2)).replace('"messages": [', '"messages": [{"role": "user", '
                                                                '"content": "lone \\ud800 half"}, ', 1)
        r = c.post("/v1/chat/completions", content=raw.encode(), headers={"content-type": "application/json"})
        assert r.status_code == 400 and "hex escape" in r.json()["error"]["message"], r.text  # not valid JSON
        r = c.post("/v1/metadata", files={"file": ("a.wav", wav_bytes(0.5)), "fields": ("f.txt", b"Gender")})
        assert r.status_code == 400 and "fields" in r.json()["error"]["message"], r.text
        url = (tmp_path / "a.wav").as_uri() + "%00.txt"
        r = c.post("/v1/chat/completions", json=chat_body({"type": "audio_url", "audio_url": {"url": url}}))
        assert r.status_code == 400 and "NUL" in r.json()["error"]["message"], r.text
        assert c.post("/v1/chat/completions", json=chat_body(clip, max_tokens=2, temperature=1.0,
                                                             seed=2**63 - 1)).status_code == 200
