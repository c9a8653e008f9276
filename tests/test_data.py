"""Manifests, datasets, task templates and mixing: what a user's training data goes through."""

import json
import random

import numpy as np
import pytest
import soundfile as sf

from speechllm.audio import load_conversation_audio
from speechllm.data.hf_datasets import load_hf_dataset
from speechllm.data.manifest import read_manifest
from speechllm.data.mixing import DataConfig, MixedDataset, Source, length_buckets
from speechllm.data.tasks import TASKS, build_example
from speechllm.errors import ConfigError, DataError
from speechllm.metadata import SPEECHLLM_SCHEMA, serialize
from speechllm.models.processing import IGNORE_INDEX
from speechllm.prompting import instruction_for, instructions

RATE = 16000


def wav(path, seconds=0.5, seed=0):
    """A short noise clip; returns its path as a string."""
    samples = 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * RATE)).astype(np.float32)
    sf.write(path, samples, RATE)
    return str(path)


def manifest(path, rows):
    """Write rows (dicts, or raw strings for broken lines) as JSONL."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def clips(tmp_path):
    (tmp_path / "clips").mkdir()
    return {name: wav(tmp_path / "clips" / f"{name}.wav", seconds, seed)
            for seed, (name, seconds) in enumerate({"a": 0.5, "b": 1.0, "c": 2.0}.items())}


GOOD = {"audio": "clips/a.wav", "transcript": "hello world"}


def test_good_manifest_reads(tmp_path, clips):
    path = manifest(tmp_path / "train.jsonl", [
        {**GOOD, "gender": "female", "age": "middle age", "speech_activity": "true", "accent": None},
        "",
        {"id": "x", "audio": clips["b"], "instruction": "Who speaks?", "response": "A woman."},
        {"audio": "clips/c.wav", "offset_s": 0.5, "duration_s": 1.0, "task": "summarization", "response": "Short."},
        {"audio": "clips/a.wav", "conversation": [
            {"role": "user", "content": [{"type": "text", "text": "Compare.\n"}, {"type": "audio"},
                                         {"type": "audio", "audio": "clips/b.wav"}]},
            {"role": "assistant", "content": "Same."}]},
    ])
    data = read_manifest(path)
    assert len(data) == 4 and data.skipped == []
    first, second, third, fourth = data
    assert first.audio == clips["a"] and first.id == "train:1" and first.origin == f"{path}:1"
    assert first.labels == {"Gender": "Female", "Age": "Middle-Age", "SpeechActivity": True}  # null = absent
    assert first.metadata(SPEECHLLM_SCHEMA) == {"SpeechActivity": True, "Transcript": "hello world",
                                                "Gender": "Female", "Age": "Middle-Age"}
    assert second.id == "x" and second.seconds == pytest.approx(1.0)
    assert (third.offset_s, third.duration_s, third.seconds) == (0.5, 1.0, 1.0)
    assert fourth.conversation[0]["content"][2]["audio"] == clips["b"]


BAD_ROWS = [
    ('{"audio": "clips/a.wav", "transcript": "hi"', "invalid JSON"),
    ('["clips/a.wav"]', "must be a JSON object"),
    ({"audio": "clips/missing.wav", "transcript": "hi"}, "not found"),
    ({"audio": "notes.txt", "transcript": "hi"}, "cannot read the audio header"),
    ({**GOOD, "offset_s": 0.4, "duration_s": 0.5}, "runs past the end"),
    ({**GOOD, "offset_s": 3.0}, "past the end of the audio"),
    ({**GOOD, "duration_s": -1}, "duration_s > 0"),
    ({**GOOD, "gender": "robot"}, "'robot' is not one of the schema's Gender labels"),
    ({**GOOD, "speech_activity": "maybe"}, "SpeechActivity labels [True, False]"),
    ({**GOOD, "transcript": "  "}, "transcript is empty"),
    ({**GOOD, "spekaer": "s1"}, "unknown key(s) ['spekaer']"),
    ({**GOOD, "task": "translate"}, "unknown task 'translate'"),
    ({"audio": "clips/a.wav", "task": "asr"}, "needs 'transcript'"),
    ({"audio": "clips/a.wav"}, "cannot tell which task"),
    ({"transcript": "hi"}, "missing 'audio'"),
    ({**GOOD, "instruction": "Who?"}, "needs its 'response'"),
    ({**GOOD, "conversation": [{"role": "user", "content": "hi"}]}, "must end with a non-empty assistant"),
    ({**GOOD, "conversation": [{"role": "assistant", "content": [{"type": "text", "text": "x"}]}]},
     "content must be a string"),
    ({"conversation": [{"role": "user", "content": [{"type": "audio"}]}, {"role": "assistant", "content": "x"}]},
     "needs the row's 'audio'"),
    ({**GOOD, "id": "train:1"}, "appears twice"),
]


@pytest.mark.parametrize("row, reason", BAD_ROWS, ids=[reason for _, reason in BAD_ROWS])
def test_bad_row_names_file_line_and_problem(tmp_path, clips, row, reason):
    (tmp_path / "notes.txt").write_text("not audio")
    path = manifest(tmp_path / "train.jsonl", [GOOD, row])
    with pytest.raises(DataError) as error:
        read_manifest(path)
    assert f"{path}:2: " in str(error.value) and reason in str(error.value)


def test_a_line_that_is_not_utf8_is_a_bad_row(tmp_path, clips):
    path = tmp_path / "train.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"audio": "clips/a.wav", "transcript": "caf\xe9"}\n')
    with pytest.raises(DataError, match=f"{path}:2: not UTF-8 text"):
        read_manifest(path)
    assert [line for line, _ in read_manifest(path, on_bad_row="skip").skipped] == [2]


def test_skip_mode_collects_bad_rows(tmp_path, clips):
    rows = [GOOD, BAD_ROWS[0][0], {**GOOD, "gender": "robot"}, {"audio": "clips/b.wav", "transcript": "ok"}]
    data = read_manifest(manifest(tmp_path / "m.jsonl", rows), on_bad_row="skip")
    assert [r.id for r in data] == ["m:1", "m:4"]
    assert [line for line, _ in data.skipped] == [2, 3]
    assert "invalid JSON" in data.skipped[0][1] and "Gender" in data.skipped[1][1]


def test_unchecked_audio_is_not_opened(tmp_path):
    data = read_manifest(manifest(tmp_path / "m.jsonl", [{"audio": "nowhere.wav", "transcript": "hi"}]),
                         check_audio=False)
    assert data[0].audio.endswith("nowhere.wav") and data[0].seconds is None


def test_ignore_keys_accepts_documentation_columns(tmp_path, clips):
    data = read_manifest(manifest(tmp_path / "m.jsonl", [{**GOOD, "notes": "s1"}]), ignore_keys=["notes"])
    assert len(data) == 1


def test_segment_rows_load_the_right_samples(tmp_path):
    ramp = np.arange(2 * RATE, dtype=np.float32) / (2 * RATE)  # each sample says where it is
    sf.write(tmp_path / "long.wav", ramp, RATE, subtype="FLOAT")
    rows = [{"audio": "long.wav", "offset_s": 0.5, "duration_s": 0.25, "transcript": "x"},
            {"audio": "long.wav", "offset_s": 1.5, "transcript": "y"},
            {"audio": "long.wav", "duration_s": 2.004, "transcript": "z"}]  # rounded length: the whole file
    first, second, whole = read_manifest(manifest(tmp_path / "m.jsonl", rows))
    audio = build_example(first, "asr", random.Random(0)).conversation[0]["content"][1]["audio"]
    np.testing.assert_array_equal(audio[0], ramp[RATE // 2 : RATE // 2 + RATE // 4])
    assert audio[1] == RATE
    np.testing.assert_array_equal(second.audio_source()[0], ramp[3 * RATE // 2 :])
    assert whole.audio_source() == str(tmp_path / "long.wav") and whole.seconds == pytest.approx(2.0)


def test_hf_dataset_from_local_json(tmp_path, clips):
    rows = [{"path": "clips/a.wav", "sentence": "hello", "gender": "male", "client_id": "c1"},
            {"path": "clips/b.wav", "sentence": "there", "gender": None, "client_id": "c2"}]
    manifest(tmp_path / "cv.jsonl", rows)
    column_map = {"path": "audio", "sentence": "transcript"}
    data = load_hf_dataset(tmp_path / "cv.jsonl", column_map=column_map)
    assert [(r.audio, r.transcript, r.labels) for r in data] == [
        (clips["a"], "hello", {"Gender": "Male"}), (clips["b"], "there", {})]
    stream = load_hf_dataset(tmp_path / "cv.jsonl", column_map=column_map, streaming=True)
    assert [r.transcript for r in stream] == ["hello", "there"]
    with pytest.raises(DataError, match="column_map names column"):
        load_hf_dataset(tmp_path / "cv.jsonl", column_map={"file": "audio"})


def test_hf_dataset_from_save_to_disk(tmp_path, clips, tiny):
    datasets = pytest.importorskip("datasets")
    with open(clips["b"], "rb") as f:
        audio = [{"path": clips["a"], "bytes": None}, {"path": None, "bytes": f.read()}]
    ds = datasets.Dataset.from_dict({"audio": audio, "transcript": ["one", "two"], "emotion": ["HAPPY", "sad"]})
    ds.cast_column("audio", datasets.Audio()).save_to_disk(str(tmp_path / "saved"))
    data = load_hf_dataset(tmp_path / "saved", on_bad_row="error")
    assert [r.labels["Emotion"] for r in data] == ["Happy", "Sad"]
    assert data[1].audio["bytes"] and data[1].seconds == pytest.approx(1.0)
    encoded = _encode(tiny.processor, build_example(data[1], "asr", random.Random(0)).conversation)
    assert len(encoded.audio[0]) == RATE  # decoded from the stored bytes by our load_audio


def _encode(processor, conversation):
    """As training does: the audio sources loaded (the processor takes waveforms), then encoded."""
    loaded = load_conversation_audio(conversation, **processor.audio_limits)
    return processor.encode(loaded, add_generation_prompt=False)


def _answer(processor, conversation) -> str:
    encoded = _encode(processor, conversation)
    return processor.tokenizer.decode([t for t in encoded.labels if t != IGNORE_INDEX])


@pytest.mark.parametrize("task", sorted(TASKS))
def test_each_task_builds_a_conversation_the_processor_trains_on(tmp_path, clips, tiny, task):
    record = read_manifest(manifest(tmp_path / "m.jsonl", [{
        "audio": "clips/a.wav", "transcript": "hello world", "gender": "Male", "response": "the answer",
        "instruction": "What is said?" if task == "instruction" else None,
        "conversation": [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Again?"}]},
                         {"role": "assistant", "content": "the answer"}] if task == "conversation" else None,
    }]), task=task)[0]
    example = build_example(record, task, random.Random(0))
    target = example.conversation[-1]["content"]
    assert example.conversation[-1]["role"] == "assistant" and example.task == task and example.record_id == "m:1"
    assert _answer(tiny.processor, example.conversation) == target + tiny.processor.tokenizer.eos_token
    assert example.transcripts == ["hello world"]
    if task == "metadata":
        assert target == serialize({"Transcript": "hello world", "Gender": "Male"}, ["Transcript", "Gender"])
    if task == "asr":
        user = example.conversation[0]["content"]
        assert user[0]["text"].strip() in instructions("asr") and user[1]["type"] == "audio"


def test_conversation_with_two_clips_has_no_single_transcript(tmp_path, clips, tiny):
    record = read_manifest(manifest(tmp_path / "m.jsonl", [{"audio": "clips/a.wav", "transcript": "hi",
        "conversation": [{"role": "user", "content": [{"type": "audio"}, {"type": "audio", "audio": "clips/c.wav"}]},
                         {"role": "assistant", "content": "Two clips."}]}]))[0]
    example = build_example(record, None, random.Random(0))
    assert example.task == "conversation" and example.transcripts is None
    assert [len(a) for a in _encode(tiny.processor, example.conversation).audio] == [RATE // 2, 2 * RATE]


def test_metadata_subsets_follow_the_probability_and_the_schema(tmp_path, clips):
    row = {**GOOD, "speech_activity": True, "gender": "Male", "age": "Senior", "accent": "Celtic", "emotion": "Sad"}
    record = read_manifest(manifest(tmp_path / "m.jsonl", [row]))[0]
    rng, full, draws = random.Random(1), 0, 2000
    for _ in range(draws):
        example = build_example(record, "metadata", rng, subset_prob=0.2)
        names = list(json.loads(example.conversation[-1]["content"]))
        assert names and len(set(names)) == len(names) and set(names) <= set(SPEECHLLM_SCHEMA.names)
        assert example.conversation[0]["content"][0]["text"] == instruction_for(names) + "\n"
        full += names == SPEECHLLM_SCHEMA.names
    assert abs(full / draws - 0.8) < 0.04
    always = build_example(record, "metadata", random.Random(0), subset_prob=0.0)
    assert list(json.loads(always.conversation[-1]["content"])) == SPEECHLLM_SCHEMA.names


def _records(tmp_path, clips, name, count):
    rows = [{"audio": clips["a" if i % 2 else "c"], "transcript": f"{name} {i}"} for i in range(count)]
    return read_manifest(manifest(tmp_path / f"{name}.jsonl", rows)).records


def test_mixing_respects_weights_and_is_deterministic(tmp_path, clips):
    small, large = _records(tmp_path, clips, "small", 5), _records(tmp_path, clips, "large", 40)
    sources = [(small, "asr", 3.0), (large, "asr", 1.0)]
    one, two = MixedDataset(sources, 4000, seed=7), MixedDataset(sources, 4000, seed=7)
    share = np.mean([one.record(i)[1].transcript.startswith("small") for i in range(len(one))])
    assert abs(share - 0.75) < 0.03
    for i in (0, 1, 2999):
        assert one[i] == two[i]  # same paraphrase, same clip, same target
    other = MixedDataset(sources, 4000, seed=8)
    assert [one.record(i)[1].id for i in range(50)] != [other.record(i)[1].id for i in range(50)]


def test_each_pass_over_a_source_visits_every_record_once(tmp_path, clips):
    records = _records(tmp_path, clips, "s", 10)
    dataset = MixedDataset([Source(records, "asr")], num_samples=30, seed=0)
    counts = np.bincount([int(dataset.record(i)[1].id.split(":")[1]) for i in range(30)])
    assert counts[1:].tolist() == [3] * 10
    with pytest.raises(IndexError):
        dataset[30]


def test_data_config_reads_sources_and_reports_skipped_rows(tmp_path, clips):
    path = manifest(tmp_path / "m.jsonl",
                    [GOOD, {**GOOD, "gender": "robot"}, {"audio": "clips/c.wav", "gender": "male"}])
    config = DataConfig.from_dict({"sources": [{"manifest": str(path), "task": "metadata", "weight": 2,
                                                "options": {"subset_prob": 0.5}, "on_bad_row": "skip"}]})
    dataset = MixedDataset(config, num_samples=6, seed=0)
    assert dataset.skipped[0][:2] == (str(path), 2)
    assert dataset[0].task == "metadata"
    assert sorted(set(dataset.durations())) == pytest.approx([0.5, 2.0])
    with pytest.raises(ConfigError, match="unknown key"):
        DataConfig.from_dict({"sources": [{"manifest": str(path), "weigth": 2}]})
    with pytest.raises(ConfigError, match="not options of its task"):
        MixedDataset(DataConfig.from_dict({"sources": [{"manifest": str(path), "task": "metadata",
                                                        "options": {"subset_pro": 0.5}, "on_bad_row": "skip"}]}))


def test_a_record_is_checked_for_its_task_once_and_again_for_another(tmp_path, clips, monkeypatch):
    from speechllm.data import tasks

    checks = []
    original = tasks.missing_for
    monkeypatch.setattr(tasks, "missing_for", lambda *args: checks.append(args[0]) or original(*args))
    path = manifest(tmp_path / "m.jsonl", [GOOD, {**GOOD, "id": "two"}])
    dataset = MixedDataset(DataConfig.from_dict({"sources": [{"manifest": str(path), "task": "asr"}]}), 8)
    assert [dataset[i].task for i in range(8)] == ["asr"] * 8
    assert checks == ["asr", "asr"]  # by the manifest reader; the mixer and the example builder trust it
    with pytest.raises(DataError, match=r"m.jsonl:1: task 'metadata' needs a transcript or labels"):
        build_example(dataset.sources[0].records[0], "metadata", random.Random(0),
                      SPEECHLLM_SCHEMA.subset(["Gender"]))


def test_length_buckets_group_similar_lengths_deterministically():
    lengths = np.random.default_rng(0).uniform(0.5, 30.0, size=1000)
    batches = length_buckets(lengths, batch_size=8, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    shuffled = np.mean([np.ptp(lengths[np.random.default_rng(1).permutation(1000)[i : i + 8]])
                        for i in range(0, 1000, 8)])
    assert spread < shuffled / 10
    assert batches == length_buckets(lengths, batch_size=8, seed=3)
    assert batches != length_buckets(lengths, batch_size=8, seed=4)
