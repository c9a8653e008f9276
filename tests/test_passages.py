"""Spoken passages: deterministic, answers are spans, test values held out of train, long ones last 1-3 minutes."""

import json
import re
import shutil

import numpy as np
import pytest

from speechllm.data.manifest import read_manifest
from speechllm.data.synth.passage_kinds import KINDS
from speechllm.data.synth.passage_text import make_long_passage, make_passage
from speechllm.data.synth.passage_values import NAME_POOLS, SHARED_POOLS, split_pool, value_pools
from speechllm.data.synth.passages import build_passages
from speechllm.errors import ConfigError

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
VOICES = ["espeak:en-us+m3", "espeak:en-gb+f2"]


def _passages(split, count, seed=0):
    kinds = sorted(KINDS)
    return [make_passage(kinds[i % len(kinds)], split, np.random.default_rng([seed, i])) for i in range(count)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    root = tmp_path_factory.mktemp("passages")
    build_passages(root, 4, long_count=1, seed=5, workers=1, voices=VOICES, splits=(1.0, 0.0, 0.0), progress=False)
    return root


def test_passages_are_deterministic_for_a_seed():
    for kind in KINDS:
        first = make_passage(kind, "train", np.random.default_rng([3, 1]))
        assert first == make_passage(kind, "train", np.random.default_rng([3, 1]))
        assert first != make_passage(kind, "train", np.random.default_rng([3, 2]))
    assert make_long_passage("news", "dev", np.random.default_rng(7)) == make_long_passage(
        "news", "dev", np.random.default_rng(7))


def test_every_answer_is_a_span_of_its_passage_and_questions_are_two_to_four():
    passages = _passages("train", 120) + [make_long_passage(k, "test", np.random.default_rng(i))
                                          for i, k in enumerate(sorted(KINDS))]
    for passage in passages:
        assert 2 <= len(passage.questions) <= 4
        assert len({q["question"] for q in passage.questions}) == len(passage.questions)
        for q in passage.questions:
            assert q["answer"] and q["answer"] in passage.text
        assert passage.summary


def test_test_split_values_never_appear_in_train():
    shared = {v for pool in SHARED_POOLS for v in value_pools()[pool]}
    train, test = _passages("train", 400), _passages("test", 150, seed=1)
    train_values = {v for p in train for v in p.values}
    test_values = {v for p in test for v in p.values} - shared
    assert test_values and not test_values & train_values
    # Names and cities of the test split are not even words of any training transcript.
    train_words = set(re.findall(r"[A-Za-z]+", " ".join(p.text for p in train)))
    test_names = {v.split()[0] for v in test_values if any(v in split_pool(pool, "test") for pool in NAME_POOLS)}
    assert test_names and not test_names & train_words
    for pool in value_pools():
        assert all(split_pool(pool, split) for split in ("train", "dev", "test")), pool
        if pool not in SHARED_POOLS:
            assert not set(split_pool(pool, "test")) & set(split_pool(pool, "train")), pool


def test_unknown_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown passage kind"):
        make_passage("poem", "train", np.random.default_rng(0))


@needs_espeak
def test_built_passages_are_manifests_with_questions_and_long_ones_last_one_to_three_minutes(built):
    rows = [json.loads(line) for line in (built / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and sum(r["length"] == "long" for r in rows) == 1
    for row in rows:
        assert all(q["answer"] in row["transcript"] for q in row["questions"])
        low, high = (60, 180) if row["length"] == "long" else (1, 45)
        assert low <= row["duration_s"] <= high
    assert len(read_manifest(built / "train.jsonl")) == 5  # the training reader accepts the passage keys
    tasks = read_manifest(built / "train-tasks.jsonl")
    assert len(tasks) == sum(len(r["questions"]) + 1 for r in rows)
    assert {r.task for r in tasks} == {"spoken_qa", "summarization"}


@needs_espeak
def test_same_seed_gives_the_same_passages_and_audio(built, tmp_path):
    build_passages(tmp_path, 4, long_count=1, seed=5, workers=2, voices=VOICES, splits=(1.0, 0.0, 0.0),
                   progress=False)
    assert (tmp_path / "train.jsonl").read_text() == (built / "train.jsonl").read_text()
    first = json.loads((built / "train.jsonl").read_text().splitlines()[0])["audio"]
    assert (tmp_path / first).read_bytes() == (built / first).read_bytes()
