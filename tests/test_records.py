"""The record layer: every reader of JSONL manifests (training, evaluation, `speechllm infer`, self-generated
targets) reports a bad line the same way, `file:line: reason`, through the one reader `speechllm.records`."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from speechllm.data.manifest import read_manifest
from speechllm.data.targets import generate_targets
from speechllm.errors import DataError
from speechllm.evaluation.data import read_eval_manifests
from speechllm.inference import collect_inputs
from speechllm.metadata import SPEECHLLM_SCHEMA
from speechllm.records import BadRow, read_jsonl, row_segment
from speechllm.testing import tiny_llm_config, tiny_tokenizer

RATE = 16000
GOOD = {"audio": "a.wav", "transcript": "hello there"}

# A bad third line (after a good row and a blank line) and the reason every reader must give for it.
BAD_LINES = {
    "not JSON": (b"{broken", "invalid JSON (Expecting property name enclosed in double quotes at column 2)"),
    "not UTF-8": (b'{"audio": "a.wav", "transcript": "caf\xe9"}',
                  "not UTF-8 text (byte 37 of the line); save the manifest as UTF-8"),
    "not an object": (b"[1, 2]", "a row must be a JSON object, got list"),
    "negative offset": (json.dumps({**GOOD, "offset_s": -1}).encode(),
                        "need offset_s >= 0 and duration_s > 0, got offset_s=-1, duration_s=None"),
    "duration as text": (json.dumps({**GOOD, "duration_s": "2"}).encode(),
                         "duration_s must be a number of seconds, got '2'"),
    "infinite offset": (b'{"audio": "a.wav", "transcript": "hi", "offset_s": Infinity}',
                        "offset_s must be a number of seconds, got inf"),
}


@pytest.fixture(scope="module")
def llm():
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    config = {k: v for k, v in tiny_llm_config(len(tokenizer) + 8).items() if k != "model_type"}
    return LlamaForCausalLM(LlamaConfig(**config)).eval(), tokenizer


def reported_by_each_reader(path, llm) -> dict[str, tuple[str, str]]:
    """reader -> (where, reason) of the one bad row of `path`."""
    out = {}
    skipped = read_manifest(path, on_bad_row="skip").skipped
    assert len(skipped) == 1
    out["training"] = (f"{path}:{skipped[0][0]}", skipped[0][1])
    with pytest.raises(DataError) as caught:
        read_manifest(path)
    message = str(caught.value).removesuffix(" (on_bad_row='skip' leaves bad rows out)")
    out["training, on_bad_row=error"] = tuple(message.split(": ", 1))

    (row,) = read_eval_manifests([path], SPEECHLLM_SCHEMA).skipped[str(path)]
    out["evaluation"] = (f"{path}:{row['line']}", row["reason"])

    clips = [c for c in collect_inputs([str(path)]) if c.error]
    assert len(clips) == 1
    out["infer"] = (clips[0].name, clips[0].error.removeprefix(f"{clips[0].name}: "))

    with pytest.raises(DataError) as caught:
        generate_targets(path, path.with_name("targets.jsonl"), llm=llm, resume=False)
    out["targets"] = tuple(str(caught.value).split(": ", 1))
    return out


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_the_four_readers_report_a_bad_row_identically(tmp_path, llm, case):
    sf.write(tmp_path / "a.wav", 0.1 * np.random.default_rng(0).standard_normal(RATE).astype(np.float32), RATE)
    line, reason = BAD_LINES[case]
    path = tmp_path / "m.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n\n" + line + b"\n")
    reports = reported_by_each_reader(path, llm)
    assert reports == dict.fromkeys(reports, (f"{path}:3", reason))


def test_the_reader_numbers_lines_as_an_editor_does_and_parses_lazily(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"a": 1}\n\n   \n{broken\n[2]\n')
    lines = list(read_jsonl(path))  # reading alone never fails on a bad line
    assert [line.number for line in lines] == [1, 4, 5] and lines[0].row() == {"a": 1}
    with pytest.raises(BadRow) as caught:
        lines[1].row()
    assert caught.value.where == f"{path}:4" and str(caught.value).startswith(f"{path}:4: invalid JSON")
    with pytest.raises(DataError, match="manifest .*gone.jsonl not found"):
        read_jsonl(tmp_path / "gone.jsonl")  # at the call, before any iteration


def test_segments_are_numbers_of_seconds_inside_the_clip():
    assert row_segment({}) == (0.0, None)
    assert row_segment({"offset_s": 1, "duration_s": 2.5}) == (1.0, 2.5)
    for row in ({"offset_s": True}, {"duration_s": 0}, {"duration_s": float("nan")}, {"offset_s": -0.5}):
        with pytest.raises(BadRow):
            row_segment(row)
