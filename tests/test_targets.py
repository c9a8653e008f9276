"""Self-generated targets: fields, filters, determinism, crash-safe resume, sharding."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList

from speechllm.data.target_runs import merge_shards, shard_path
from speechllm.data.targets import (
    FAMILIES,
    build_prompt,
    generate_targets,
    greedy_generate,
    load_templates,
    pick_templates,
)
from speechllm.errors import ConfigError, DataError
from speechllm.testing import tiny_llm_config, tiny_tokenizer

TRANSCRIPTS = [
    "the quick brown fox jumps over the lazy dog",
    "transcribe the audio please",
    "what did the speaker say",
    "summarize the following passage in one sentence",
    "hello world",
    "give me the following information about the audio",
    "the lazy dog sleeps",
    "one two three four five",
    "happy sad anger",
    "the fox and the dog",
    "please say hello",
]
DOCUMENTED = {"audio", "transcript", "instruction", "response", "ends_with_eos", "task", "family", "source_line"}


@pytest.fixture(scope="module")
def llm():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-wide model only loses time to thread hand-offs
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    config = {k: v for k, v in tiny_llm_config(len(tokenizer) + 8).items() if k != "model_type"}
    yield LlamaForCausalLM(LlamaConfig(**config)).eval(), tokenizer
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    path = tmp_path_factory.mktemp("targets") / "in.jsonl"
    rows = [{"audio": f"clips/{i}.wav", "transcript": t, "speaker": f"s{i % 3}"} for i, t in enumerate(TRANSCRIPTS)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def reference(manifest, llm):
    """An uninterrupted, unsharded run: (its output bytes, its stats)."""
    out = manifest.with_name("reference.jsonl")
    stats = run(manifest, out, llm)
    return out.read_bytes(), stats


class EndsOnCue(LogitsProcessor):
    """Forces each row to stop after a length set by its prompt: '.', then EOS; every 4th prompt never stops."""

    def __init__(self, prompt_width, prompt_sums, period_id, eos_id):
        self.prompt_width, self.sums, self.period, self.eos = prompt_width, prompt_sums, period_id, eos_id

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_width
        for row, total in enumerate(self.sums):
            stop_at = 6 + total % 5
            scores[row, self.eos] = -float("inf")
            if total % 4 == 0:
                continue
            if step == stop_at:
                scores[row] = -float("inf")
                scores[row, self.period] = 0.0
            elif step == stop_at + 1:
                scores[row] = -float("inf")
                scores[row, self.eos] = 0.0
        return scores


def cued_generate(model, input_ids, attention_mask, max_new_tokens, stop_ids, tokenizer=tiny_tokenizer()):
    """Greedy decoding whose stopping depends only on each row's own prompt (so batching cannot change it)."""
    sums = (input_ids * attention_mask).sum(dim=1).tolist()
    cue = EndsOnCue(input_ids.shape[1], sums, tokenizer.convert_tokens_to_ids("."), stop_ids[0])
    out = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, do_sample=False, max_new_tokens=max_new_tokens,
        eos_token_id=stop_ids, pad_token_id=stop_ids[0], logits_processor=LogitsProcessorList([cue]),
    )
    return out[:, input_ids.shape[1]:]


def run(manifest, out, llm, **options):
    settings = dict(llm=llm, templates_per_record=2, batch_size=3, max_new_tokens=12, generate_fn=cued_generate)
    return generate_targets(manifest, out, **{**settings, **options})


def test_template_files_hold_five_paraphrases_per_family():
    templates = load_templates()
    assert list(templates) == list(FAMILIES)
    for family, lines in templates.items():
        assert len(lines) == (1 if family == "answer" else 5) == len(set(lines))
        assert all(line.endswith("{transcript}") for line in lines)
    assert templates["answer"] == ["{transcript}"]


def test_template_choice_is_deterministic_and_distinct():
    templates = load_templates()
    picks = pick_templates(templates, 7, seed=0, count=10)
    assert picks == pick_templates(templates, 7, seed=0, count=10) != pick_templates(templates, 7, seed=1, count=10)
    assert len(set(picks)) == 10 and len({family for family, _ in picks[:8]}) == 8
    with pytest.raises(ConfigError, match="unknown target family"):
        load_templates(["poetry"])


def test_prompt_uses_the_chat_template_or_the_plain_fallback(llm):
    _, tokenizer = llm
    assert tokenizer.decode(build_prompt(tokenizer, "hi")) == "<s>### User:\nhi\n\n### Assistant:\n"
    tokenizer.chat_template = (
        "{% for m in messages %}[{{ m['content'] }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    )
    try:
        assert tokenizer.decode(build_prompt(tokenizer, "hi")) == "[hi]>"
    finally:
        tokenizer.chat_template = None


def test_rows_have_documented_fields_and_drops_are_counted(reference):
    output, stats = reference
    rows = [json.loads(line) for line in output.decode().splitlines()]
    assert rows and stats.kept == len(rows)
    assert stats.kept + sum(stats.dropped.values()) == 2 * len(TRANSCRIPTS)
    assert stats.dropped["no_eos"] > 0  # the prompts whose cue never stops
    assert stats.generated_tokens > 0 and stats.tokens_per_second > 0
    templates = load_templates()
    for row in rows:
        assert DOCUMENTED | {"speaker"} == set(row)
        assert row["ends_with_eos"] is True and row["task"] == "instruction"
        assert row["transcript"] == TRANSCRIPTS[row["source_line"] - 1]
        assert row["instruction"] + " {transcript}" in templates[row["family"]] or row["family"] == "answer"
        assert row["transcript"] not in row["instruction"]
        assert row["response"].endswith(".") and "</s>" not in row["response"]
    assert [r["source_line"] for r in rows] == sorted(r["source_line"] for r in rows)


def test_generations_without_eos_are_dropped(manifest, tmp_path, llm):
    # The real greedy path: a random model almost never says EOS within 4 tokens.
    stats = generate_targets(manifest, tmp_path / "out.jsonl", llm=llm, max_new_tokens=4, min_tokens=0,
                             require_final_punctuation=False, generate_fn=greedy_generate)
    kept = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(kept) == stats.kept and stats.dropped.get("no_eos", 0) == len(TRANSCRIPTS) - stats.kept > 0


def test_filters_drop_short_and_unpunctuated(manifest, tmp_path, llm):
    stats = run(manifest, tmp_path / "a.jsonl", llm, min_tokens=9)
    assert stats.dropped["too_short"] > 0
    stats = run(manifest, tmp_path / "b.jsonl", llm, max_tokens=7)
    assert stats.dropped["too_long"] > 0


def test_same_inputs_give_byte_identical_output(manifest, tmp_path, llm, reference):
    run(manifest, tmp_path / "a.jsonl", llm)
    run(manifest, tmp_path / "b.jsonl", llm, batch_size=4)  # other batches, other padding: same answers
    assert (tmp_path / "a.jsonl").read_bytes() == reference[0] == (tmp_path / "b.jsonl").read_bytes()


def test_resume_after_a_crash_matches_an_uninterrupted_run(manifest, tmp_path, llm, reference):
    full = reference[0]

    calls = []

    def crashing(*args):
        if len(calls) == 2:
            raise RuntimeError("power cut")
        calls.append(1)
        return cued_generate(*args)

    out = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        run(manifest, out, llm, generate_fn=crashing)
    written = out.read_bytes()
    assert 0 < len(written) < len(full) and full.startswith(written)
    # The crash came in the middle of the third batch's write: one whole line, then a cut-off one.
    cut = full.index(b"\n", len(written)) + 1
    out.write_bytes(full[:cut] + full[cut: cut + 25])
    stats = run(manifest, out, llm)
    assert out.read_bytes() == full
    assert stats.already_done > 2 * 3 * 2  # two finished batches of 3 rows x 2 templates, and some more
    assert stats.kept == len(full[cut:].splitlines())  # counts only what this run wrote
    assert run(manifest, out, llm).kept == 0 and out.read_bytes() == full  # finished: nothing to do

    with pytest.raises(ConfigError, match="other settings"):
        run(manifest, out, llm, seed=1)
    run(manifest, out, llm, seed=1, resume=False)
    assert out.read_bytes() != full


def test_two_shards_merge_into_the_unsharded_output(manifest, tmp_path, llm, reference):
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError, match="unfinished"):
        merge_shards(out, 2)
    a, b = run(manifest, out, llm, shard=(0, 2)), run(manifest, out, llm, shard=(1, 2))
    assert shard_path(out, 1, 2) == tmp_path / "out.shard-1-of-2.jsonl"
    assert a.records + b.records == len(TRANSCRIPTS)
    assert merge_shards(out, 2) == a.kept + b.kept
    assert out.read_bytes() == reference[0]


def test_bad_manifest_rows_name_the_line(tmp_path, llm):
    path = tmp_path / "in.jsonl"
    path.write_text('{"audio": "a.wav", "transcript": "hi"}\n\n{"audio": "b.wav"}\n')
    with pytest.raises(DataError, match=r"in.jsonl:3: .*transcript"):
        run(path, tmp_path / "out.jsonl", llm)


def test_empty_transcripts_are_dropped_and_counted(tmp_path, llm):
    path = tmp_path / "in.jsonl"
    path.write_text('{"audio": "a.wav", "transcript": "  "}\n{"audio": "b.wav", "transcript": "hello world"}\n')
    stats = run(path, tmp_path / "out.jsonl", llm, batch_size=1)
    assert stats.dropped["empty_transcript"] == 2 and stats.records == 2
