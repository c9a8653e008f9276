"""One server, several models: /v1/models lists them, each request's `model` picks one (its own answers, its own
schema, its own batcher), an unknown id is a 404 naming the served ids, and no id means the first model."""

import threading

import pytest

fastapi = pytest.importorskip("fastapi", reason="serving needs fastapi (pip install -e '.[dev]')")
uvicorn = pytest.importorskip("uvicorn")
from fastapi.testclient import TestClient  # noqa: E402

from speechllm import cli  # noqa: E402
from speechllm.serving import ServerConfig, create_app  # noqa: E402
from speechllm.testing import tiny_model  # noqa: E402
from tests.conftest import packaged_at  # noqa: E402
from tests.test_serving import audio_part, b64, wav_bytes  # noqa: E402

BETA_FIELDS = ["Gender", "Accent"]


@pytest.fixture(scope="module")
def alpha():
    return tiny_model(seed=0)


@pytest.fixture(scope="module")
def beta():
    return tiny_model(seed=1, metadata_schema={"fields": BETA_FIELDS})  # other weights, and a smaller schema


@pytest.fixture(scope="module")
def app(alpha, beta):
    return create_app({"alpha": alpha, "beta": beta}, ServerConfig(default_max_tokens=8))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


def chat(client, model=None, clip=None, **options):
    """The answer text (and the echoed model id) of one plain chat request naming `model` (None: no field)."""
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is said? "},
                                                      audio_part(clip or wav_bytes(0.8, 1))]}],
            "max_tokens": 6, **options}
    if model is not None:
        body["model"] = model
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"], r.json()["model"]


def library_chat(model, clip) -> str:
    return model.chat([[{"role": "user", "content": [{"type": "text", "text": "What is said? "},
                                                     {"type": "audio", "audio": clip}]}]], max_new_tokens=6)[0]


def test_models_lists_every_served_model_in_order(client):
    listing = client.get("/v1/models").json()
    assert [card["id"] for card in listing["data"]] == ["alpha", "beta"]
    assert all(card["object"] == "model" for card in listing["data"])
    assert client.get("/health").json()["model"] == "alpha"


def test_each_model_gives_its_own_answer(client, alpha, beta):
    clip = wav_bytes(0.8, 1)
    expected = {"alpha": library_chat(alpha, clip), "beta": library_chat(beta, clip)}
    assert expected["alpha"] != expected["beta"]  # else this test could not tell the models apart
    for model_id in ("alpha", "beta"):
        assert chat(client, model_id, clip) == (expected[model_id], model_id)
    upload = {"file": ("speech.wav", clip, "audio/wav")}
    for model_id, model in (("alpha", alpha), ("beta", beta)):
        r = client.post("/v1/audio/transcriptions", files=upload, data={"model": model_id})
        assert r.status_code == 200 and r.json() == {"text": model.transcribe(clip, max_new_tokens=8)}


def test_metadata_and_schema_follow_the_chosen_model(client, alpha, beta):
    assert [f["name"] for f in client.get("/v1/schema", params={"model": "beta"}).json()["fields"]] == BETA_FIELDS
    assert [f["name"] for f in client.get("/v1/schema").json()["fields"]] == alpha.metadata_schema.names
    clip = wav_bytes(1.0, 2)
    for model_id, model in (("alpha", alpha), ("beta", beta)):
        r = client.post("/v1/metadata", json={"audio": b64(clip), "fields": BETA_FIELDS, "model": model_id})
        assert r.status_code == 200 and r.json()["model"] == model_id
        assert r.json()["metadata"] == model.generate_meta(clip, fields=BETA_FIELDS).values
        multipart = client.post("/v1/metadata", files={"file": ("a.wav", clip)},
                                data={"fields": ",".join(BETA_FIELDS), "model": model_id})
        assert multipart.json()["metadata"] == r.json()["metadata"]
    # Emotion is a field of alpha's schema only
    emotion = {"audio": b64(clip), "fields": ["Emotion"]}
    assert client.post("/v1/metadata", json={**emotion, "model": "alpha"}).status_code == 200
    r = client.post("/v1/metadata", json={**emotion, "model": "beta"})
    assert r.status_code == 400 and "Emotion" in r.json()["error"]["message"]


def test_without_a_model_or_with_the_first_id_the_first_model_answers(client, alpha):
    clip = wav_bytes(0.8, 1)
    assert chat(client, None, clip) == chat(client, "alpha", clip) == (library_chat(alpha, clip), "alpha")
    r = client.post("/v1/audio/transcriptions", files={"file": ("speech.wav", clip)})
    assert r.json() == {"text": alpha.transcribe(clip, max_new_tokens=8)}


@pytest.mark.parametrize("route", ["chat", "transcriptions", "metadata", "schema"])
def test_an_unknown_model_is_404_listing_the_served_ids(client, route):
    clip = wav_bytes(0.5)
    if route == "chat":
        r = client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": [
            {"role": "user", "content": [audio_part(clip)]}]})
    elif route == "transcriptions":
        r = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", clip)}, data={"model": "gpt-4o"})
    elif route == "metadata":
        r = client.post("/v1/metadata", json={"audio": b64(clip), "model": "gpt-4o"})
    else:
        r = client.get("/v1/schema", params={"model": "gpt-4o"})
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "'gpt-4o'" in error["message"] and "['alpha', 'beta']" in error["message"]


def test_each_model_runs_on_its_own_batcher(app, client):
    batchers = {model_id: served.batcher for model_id, served in app.state.speechllm.models.items()}
    assert batchers["alpha"] is not batchers["beta"]
    for batcher in batchers.values():
        batcher.batch_sizes.clear()
    chat(client, "beta")
    chat(client, "beta", stream=False, temperature=0)
    assert sum(batchers["beta"].batch_sizes.values()) == 2 and not batchers["alpha"].batch_sizes


def test_a_seeded_sample_repeats_while_another_model_samples(app, client):
    """The models' threads share torch's random generator: a seeded answer must not depend on the other model."""
    seeded = {"temperature": 1.5, "top_p": 0.95, "seed": 7}
    alone = chat(client, "beta", **seeded)
    busy = threading.Thread(target=chat, args=(client, "alpha"), kwargs={"temperature": 1.0, "max_tokens": 400,
                                                                         "min_tokens": 400})
    busy.start()
    answers = []
    while busy.is_alive() or not answers:
        answers.append(chat(client, "beta", **seeded))
    busy.join()
    assert set(answers) == {alone}


def test_a_server_of_one_model_answers_whatever_model_is_named(alpha):
    """As before several models could be served: OpenAI clients must send some `model`, and it was ignored."""
    with TestClient(create_app(alpha, ServerConfig(model_name="only"))) as c:
        assert chat(c, "gpt-4o") == chat(c, None) == chat(c, "only")
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["only"]


# -- the CLI: several models by folder, ID=PATH and packaged name ------------------------------------------------
def test_cli_serves_several_models_by_path_name_and_packaged_name(alpha, beta, tmp_path, monkeypatch):
    alpha.save_pretrained(tmp_path / "runs" / "final")
    beta.save_pretrained(tmp_path / "beta-model")
    packaged_at(monkeypatch, "gemma-bridge", tmp_path / "beta-model")
    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    code = cli.main(["serve", str(tmp_path / "runs" / "final"), f"mine={tmp_path / 'beta-model'}", "gemma-bridge"])
    assert code == 0
    served = started["app"].state.speechllm.models
    assert list(served) == ["final", "mine", "gemma-bridge"]
    clip = wav_bytes(0.8, 1)
    with TestClient(started["app"], base_url="http://localhost") as c:  # served on loopback: it answers to localhost
        assert chat(c, "gemma-bridge", clip) == (library_chat(beta, clip), "gemma-bridge")
        assert chat(c, None, clip) == (library_chat(alpha, clip), "final")


def test_cli_serve_refuses_clashing_ids_and_missing_packaged_models(alpha, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: pytest.fail("nothing must be served"))
    assert cli.main(["serve", str(tmp_path / "a" / "final"), str(tmp_path / "b" / "final")]) == 1
    assert "two models would both be served as ['final']" in capsys.readouterr().err
    packaged_at(monkeypatch, "gemma-bridge", tmp_path / "not-built-yet")
    assert cli.main(["serve", "gemma-bridge"]) == 1
    assert "packaged model 'gemma-bridge'" in (err := capsys.readouterr().err) and "is not installed" in err


def test_model_ids_come_from_names_folders_and_the_config():
    from speechllm.serving.app import model_ids

    assert model_ids(["runs/a/final", "mine=runs/b/final", "gemma-bridge"], ServerConfig()) == {
        "final": "runs/a/final", "mine": "runs/b/final", "gemma-bridge": "gemma-bridge"}
    assert list(model_ids(None, ServerConfig())) == ["speechllm"]  # the default model, as one model was always named
    assert list(model_ids(["runs/a/final", "b"], ServerConfig(model_name="named"))) == ["named", "b"]
    assert list(model_ids(["first=runs/a/final", "b"], ServerConfig(model_name="named"))) == ["first", "b"]
