"""The metadata schema: config, serialise/parse/validate, instructions, and constrained decoding on a tiny random
Llama (untrained, so any valid answer it gives is the constraint's doing)."""

import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from speechllm.constraint import MetadataConstraint, decode_results
from speechllm.errors import ConfigError, InputError
from speechllm.metadata import (
    SPEECHLLM_SCHEMA,
    Field,
    MetadataSchema,
    normalize_label,
    parse,
    serialize,
)
from speechllm.prompting import instruction_for

# The default schema with the transcript capped, so an untrained model is bound to finish its answer.
SCHEMA = MetadataSchema.from_config({"fields": [
    "SpeechActivity", {"name": "Transcript", "kind": "text", "max_chars": 12}, "Gender", "Age", "Accent", "Emotion"]})


@pytest.fixture(scope="module")
def tok():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [instruction_for()]
    for i in range(40):
        values = {f.name: f.labels[i % len(f.labels)] for f in SPEECHLLM_SCHEMA.fields if f.kind == "label"}
        values |= {"SpeechActivity": i % 3 > 0, "Transcript": "the cat sat on the mat near the door"}
        corpus.append(serialize(values))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.padding_side = "left"
    return tok


@pytest.fixture(scope="module")
def model(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return LlamaForCausalLM(config).eval()


PROMPTS = ["hello", "the cat sat on the mat", "a", instruction_for(["Gender", "Age"])]  # 4 different lengths


def generate(model, tok, constraint, prompts=PROMPTS, **kwargs):
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model.generate(**enc, logits_processor=[constraint], max_new_tokens=constraint.max_new_tokens,
                              output_scores=True, return_dict_in_generate=True, pad_token_id=tok.pad_token_id,
                              **kwargs)


def assert_matches_schema(text: str, json_schema: dict):
    """A small JSON Schema check for the shapes json_schema() writes (jsonschema is not a dependency)."""
    obj = json.loads(text)
    assert list(obj) == list(json_schema["properties"]) == json_schema["required"]
    for key, value in obj.items():
        prop = json_schema["properties"][key]
        if value is None:  # null: a label the schema lets be null (a speaker field with no speaker)
            assert "null" in prop["type"]
            continue
        assert isinstance(value, bool) if prop["type"] == "boolean" else isinstance(value, str)
        assert value in prop.get("enum", [value])
        assert len(value) <= prop.get("maxLength", math.inf) if isinstance(value, str) else True


def forced(model, constraint, prompt_ids, tokens):
    """(sequences, scores) as generate would return them had the model chosen `tokens` under the constraint."""
    ids, scores = prompt_ids, []
    with torch.no_grad():
        for token in tokens:
            scores.append(constraint(ids, model(ids).logits[:, -1].clone()))
            assert torch.isfinite(scores[-1][0, token]), f"the constraint forbids token {token}"
            ids = torch.cat([ids, torch.tensor([[token]])], 1)
    return ids, scores


# --- schema, serialise, parse -------------------------------------------------------------------------------------

def test_serialize_writes_one_compact_format_and_parse_reads_it_back():
    text = serialize({"Gender": "Male", "Transcript": "hi", "SpeechActivity": True}, ["Gender", "Transcript"])
    assert text == '{"Gender": "Male", "Transcript": "hi"}'
    values = {"Transcript": 'say "café"\n\t\\ ok', "SpeechActivity": False, "Accent": "South-East-Asia"}
    text = serialize(values)  # no names: the keys given, in schema order
    assert text == ('{"SpeechActivity": false, "Transcript": "say \\"café\\"\\n\\t\\\\ ok", '
                    '"Accent": "South-East-Asia"}')
    assert parse(text) == values and list(parse(text)) == ["SpeechActivity", "Transcript", "Accent"]
    assert parse(text, ["Accent", "SpeechActivity", "Transcript"])["SpeechActivity"] is False


@pytest.mark.parametrize("values, names, words", [
    ({"Gender": "female"}, None, ["Gender", "'female'", "Female", "Male"]),
    ({"Age": "Old"}, ["Age"], ["Age", "'Old'", "Middle-Age"]),
    ({"SpeechActivity": "True"}, None, ["SpeechActivity", "bool"]),
    ({"Gender": "Male"}, ["Gender", "Age"], ["Age"]),  # a requested field without a value
    ({"Sex": "Male"}, None, ["Sex", "Gender"]),  # an unknown key: the message lists the valid ones
])
def test_serialize_rejects_bad_values_naming_them(values, names, words):
    with pytest.raises(InputError) as info:
        serialize(values, names)
    assert all(w in str(info.value) for w in words)


@pytest.mark.parametrize("text, names", [
    ('{"Gender": "Male",}', None),  # trailing comma: no repair
    ('{"Gender": "male"}', None),
    ('{"Gender": "Male"}', ["Gender", "Age"]),
    ('{"Gender": "Male", "Age": "Young"}', ["Gender"]),
    ('{"Gender": "Male", "Gender": "Female"}', None),
    ('{"SpeechActivity": "True"}', None),
    ('["Male"]', None),
    ('{"Transcript": "%s"}' % ("x" * 13), None),  # longer than SCHEMA's max_chars
])
def test_parse_is_strict(text, names):
    with pytest.raises(InputError):
        parse(text, names, SCHEMA)


def test_normalize_label_maps_spelling_variants():
    assert normalize_label("Gender", "female") == "Female"
    assert normalize_label("Age", "middle age") == "Middle-Age"
    assert normalize_label("Accent", " south_east asia ") == "South-East-Asia"
    assert normalize_label("Emotion", "ANGER") == "Anger"
    assert normalize_label("Emotion", "Angry") is None
    assert normalize_label("Gender", None) is None
    assert normalize_label("SpeechActivity", "True") is True and normalize_label("SpeechActivity", "no") is False
    with pytest.raises(ConfigError):
        normalize_label("Transcript", "hi")


def test_schema_extends_by_config_and_round_trips():
    schema = MetadataSchema.from_config({
        "fields": ["Gender", "Emotion", {"name": "Language", "kind": "label", "labels": ["en", "hi"]}],
        "extend": {"Emotion": ["Calm"]}})
    assert schema.names == ["Gender", "Emotion", "Language"]
    assert schema.field("Emotion").labels[-1] == "Calm"
    assert "Calm" not in SPEECHLLM_SCHEMA.field("Emotion").labels
    assert serialize({"Emotion": "Calm", "Language": "hi"}, schema=schema) == '{"Emotion": "Calm", "Language": "hi"}'
    assert MetadataSchema.from_config(schema.to_config()) == schema
    assert MetadataSchema.from_config({"extend": {"Gender": ["Other"]}}).names == SPEECHLLM_SCHEMA.names


@pytest.mark.parametrize("config", [
    {"fields": ["Gender"], "labels": {}},  # unknown top-level key
    {"extend": {"Transcript": ["x"]}},  # extending a text field
    {"extend": {"Gender": ["female"]}},  # clashes with Female once case is ignored
    [{"name": "Mood", "kind": "label"}],  # a label field without labels
    [{"name": "Mood", "kind": "category", "labels": ["a"]}],
    [{"name": "Mood", "kind": "label", "labels": "ab"}],
    [{"name": "Two words", "kind": "text"}],
    ["Gender", "Gender"],
    ["Gendre"],
])
def test_schema_config_errors(config):
    with pytest.raises(ConfigError):
        MetadataSchema.from_config(config)


def test_subset_and_json_schema():
    assert SPEECHLLM_SCHEMA.subset(["Emotion", "SpeechActivity"]).names == ["Emotion", "SpeechActivity"]
    with pytest.raises(ConfigError) as info:
        SPEECHLLM_SCHEMA.subset(["Emotion", "Mood"])
    assert "Mood" in str(info.value) and "SpeechActivity" in str(info.value)
    js = SCHEMA.json_schema(["Transcript", "Age", "SpeechActivity"])
    assert list(js["properties"]) == js["required"] == ["Transcript", "Age", "SpeechActivity"]
    assert js["additionalProperties"] is False
    # Age is a speaker field: null (no speaker) is its one more value, allowed only when SpeechActivity is false
    assert js["properties"]["Age"]["enum"] == ["Young", "Middle-Age", "Senior", None]
    assert js["properties"]["SpeechActivity"]["type"] == "boolean"
    assert js["properties"]["Transcript"] == {"type": "string", "maxLength": 12}
    assert SPEECHLLM_SCHEMA.json_schema(["Transcript"])["properties"]["Transcript"] == {
        "type": "string", "maxLength": 2000, "description": "what is said"}


# --- constrained decoding -----------------------------------------------------------------------------------------

SUBSETS = [["Gender"], ["Emotion", "Accent"], ["Transcript", "SpeechActivity"],
           ["Accent", "Transcript", "Age", "Gender"], None]


@pytest.mark.parametrize("names", SUBSETS)
@pytest.mark.parametrize("seed", [None, 0, 1])  # None: greedy
def test_untrained_model_always_answers_valid_json(model, tok, names, seed):
    constraint = MetadataConstraint(tok, SCHEMA, names)
    if seed is not None:
        torch.manual_seed(seed)
    out = generate(model, tok, constraint, do_sample=seed is not None)
    results = decode_results(out.sequences, out.scores, tok, SCHEMA, names)
    for result in results:
        assert result.valid, result.error
        assert_matches_schema(result.text, SCHEMA.json_schema(names))
        assert parse(result.text, names, SCHEMA) == result.values
        assert serialize(result.values, names, SCHEMA) == result.text  # the exact training-target form
        labelled = [f.name for f in SCHEMA.subset(names).fields if f.kind != "text"]
        assert sorted(result.confidences) == sorted(labelled)
        assert all(0 < p <= 1 for p in result.confidences.values())
    if all(f.kind != "text" for f in SCHEMA.subset(names).fields):  # then the very tokens of a training target
        for row, result in zip(out.sequences[:, -len(out.scores):].tolist(), results):
            target = tok.encode(result.text, add_special_tokens=False) + [tok.eos_token_id]
            assert row[:len(target)] == target


def test_inputs_embeds_generation(model, tok):
    names = ["Age", "Transcript", "Emotion"]
    constraint = MetadataConstraint(tok, SCHEMA, names)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(inputs_embeds=model.get_input_embeddings()(enc.input_ids),
                             attention_mask=enc.attention_mask, logits_processor=[constraint],
                             max_new_tokens=constraint.max_new_tokens, output_scores=True,
                             return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
    assert out.sequences.shape[1] == len(out.scores)  # only new tokens come back
    results = decode_results(out.sequences, out.scores, tok, SCHEMA, names)
    assert all(r.valid for r in results), [r.error for r in results]
    for r in results:
        assert_matches_schema(r.text, SCHEMA.json_schema(names))


def test_batched_answers_match_answers_alone(model, tok):
    names = ["Accent", "Transcript", "Gender"]
    batched = generate(model, tok, MetadataConstraint(tok, SCHEMA, names))
    together = [r.text for r in decode_results(batched.sequences, batched.scores, tok, SCHEMA, names)]
    for prompt, text in zip(PROMPTS, together):
        alone = generate(model, tok, MetadataConstraint(tok, SCHEMA, names), [prompt])
        assert decode_results(alone.sequences, alone.scores, tok, SCHEMA, names)[0].text == text


@pytest.mark.parametrize("name", ["Gender", "Age", "Accent"])  # Accent: South-Asia and South-East-Asia share tokens
def test_label_confidences_are_exact_and_sum_to_one(model, tok, name):
    prompt = tok(["the cat sat"], return_tensors="pt").input_ids
    greedy = generate(model, tok, MetadataConstraint(tok, SCHEMA, [name]), ["the cat sat"])
    chosen = decode_results(greedy.sequences, greedy.scores, tok, SCHEMA, [name])[0]
    total = 0.0
    for label in SCHEMA.field(name).labels:
        target = tok.encode(serialize({name: label}, [name]), add_special_tokens=False) + [tok.eos_token_id]
        ids, scores = forced(model, MetadataConstraint(tok, SCHEMA, [name]), prompt, target)
        result = decode_results(ids, scores, tok, SCHEMA, [name])[0]
        assert result.valid and result.values == {name: label}
        total += result.confidences[name]
        if label == chosen.values[name]:
            assert result.confidences[name] == pytest.approx(chosen.confidences[name], rel=1e-5)
    assert total == pytest.approx(1.0, abs=1e-5)


def test_training_targets_are_allowed_token_by_token(model, tok):
    """The tokenizer's own tokens for any serialized answer pass the constraint: targets and outputs agree."""
    values = {"SpeechActivity": True, "Transcript": 'she said "no" \\ café\n', "Emotion": "Frustrated"}
    names = ["Emotion", "Transcript", "SpeechActivity"]
    target = tok.encode(serialize(values, names), add_special_tokens=False) + [tok.eos_token_id]
    ids, scores = forced(model, MetadataConstraint(tok, SPEECHLLM_SCHEMA, names), tok(["a"], return_tensors="pt")
                         .input_ids, target)
    result = decode_results(ids, scores, tok, SPEECHLLM_SCHEMA, names)[0]
    assert result.valid and result.values == values and result.text == serialize(values, names)


def run_on_logits(tok, constraint, make_logits, batch=4, steps=200):
    """Drive the constraint like generate's sampling loop, with logits from `make_logits(width)`."""
    ids, scores = torch.zeros(batch, 1, dtype=torch.long), []
    for _ in range(steps):
        scores.append(constraint(ids, make_logits(len(tok))))
        token = torch.multinomial(torch.softmax(scores[-1], -1), 1)
        ids = torch.cat([ids, token], 1)
        if (ids == tok.eos_token_id).any(1).all():
            break
    return ids, scores


def test_max_chars_holds_when_the_model_wants_long_tokens(tok):
    """Long and multi-byte tokens near the cap: the text still never passes max_chars, and always closes."""
    schema = MetadataSchema((Field("Transcript", "text", max_chars=5), Field("Gender", "label", ("Female", "Male"))))
    length = torch.tensor([len(tok.convert_tokens_to_string([t])) for t in tok.convert_ids_to_tokens(range(len(tok)))])
    torch.manual_seed(0)
    for _ in range(5):
        constraint = MetadataConstraint(tok, schema)
        ids, scores = run_on_logits(tok, constraint, lambda width: 2.0 * length + torch.randn(4, width))
        assert ids.shape[1] - 1 <= constraint.max_new_tokens
        for result in decode_results(ids, scores, tok, schema):
            assert result.valid and len(result.values["Transcript"]) <= 5, result


@pytest.mark.parametrize("budget", [30, 45, 80])
def test_a_looping_transcript_is_closed_in_time_for_the_token_budget(tok, budget):
    """A model that never wants to end its transcript (Whisper looping on a hallucination) and only as many tokens
    as a decoder has positions left: the text is cut and closed in time, the answer is whole and valid."""
    schema = MetadataSchema((Field("Transcript", "text"), Field("Gender", "label", ("Female", "Male")),
                             Field("Summary", "text")))
    quote = torch.tensor(['"' in tok.convert_tokens_to_string([t]) for t in tok.convert_ids_to_tokens(range(len(tok)))])
    backslash = torch.tensor([tok.convert_tokens_to_string([t]).startswith("\\")
                              for t in tok.convert_ids_to_tokens(range(len(tok)))])

    def endless(width):  # never a quote; escapes often, so the budget also lands inside \u00XX sequences
        return torch.randn(4, width) - 50.0 * quote + 3.0 * backslash

    torch.manual_seed(0)
    for constraint in (MetadataConstraint(tok, schema, budget=budget), MetadataConstraint(tok, schema)):
        ids, scores = run_on_logits(tok, constraint, endless, steps=budget)
        results = decode_results(ids, scores, tok, schema)
        if constraint.budget is None:  # the same model without a budget runs out inside the transcript
            assert not any(r.valid for r in results)
            continue
        assert ids.shape[1] - 1 <= budget
        for result in results:
            assert result.valid, result.error
            if budget >= 80:  # room for words before the later fields (a tight budget may leave none)
                assert len(result.values["Transcript"]) >= 10


def test_sentencepiece_style_tokenizer_writes_training_target_tokens():
    """A Metaspace (SentencePiece-like) tokenizer puts a space before the first token of a text; constrained
    answers keep it, so they are token for token what the tokenizer makes of the serialized answer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    backend = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    backend.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(prepend_scheme="first")])
    corpus = [serialize({"Gender": g, "Age": a}) for g in ("Female", "Male") for a in ("Young", "Middle-Age", "Senior")]
    backend.train_from_iterator(corpus * 5, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"] + bytes_))
    sp = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                 unk_token="<unk>")
    names = ["Age", "Gender"]
    torch.manual_seed(0)
    ids, scores = run_on_logits(sp, MetadataConstraint(sp, SPEECHLLM_SCHEMA, names), lambda w: torch.randn(4, w))
    for row, result in zip(ids[:, 1:].tolist(), decode_results(ids, scores, sp, SPEECHLLM_SCHEMA, names)):
        assert result.valid, result.error
        target = sp(result.text, add_special_tokens=False).input_ids + [sp.eos_token_id]
        assert row[:len(target)] == target and sp.convert_ids_to_tokens(target[0]).startswith("▁")


def test_padded_vocabulary_and_special_tokens_are_masked(tok):
    constraint = MetadataConstraint(tok, SCHEMA, ["Transcript"])
    ids = torch.tensor([[5, 6]])
    for token in tok.encode('{"Transcript": "', add_special_tokens=False):
        scores = constraint(ids, torch.zeros(1, len(tok) + 8))  # the model has 8 padding rows
        ids = torch.cat([ids, torch.tensor([[token]])], 1)
    scores = constraint(ids, torch.zeros(1, len(tok) + 8))  # inside the string: almost any text token
    assert torch.isfinite(scores).sum() > len(tok) // 2
    assert not torch.isfinite(scores[0, len(tok):]).any()
    assert not torch.isfinite(scores[0, [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id]]).any()


def test_cut_off_answer_is_invalid_with_a_reason(model, tok):
    names = ["Gender", "Transcript"]
    uncapped = MetadataSchema((Field("Gender", "label", ("Female", "Male")), Field("Transcript", "text")))
    unbounded = MetadataConstraint(tok, uncapped, names)
    assert unbounded.max_new_tokens is None  # an uncapped transcript: the caller must choose
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    out = model.generate(**enc, logits_processor=[unbounded], max_new_tokens=12, output_scores=True,
                         return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
    for result in decode_results(out.sequences, out.scores, tok, uncapped, names):
        assert not result.valid and "Transcript" in result.error and "max_new_tokens" in result.error
        assert set(result.values) == {"Gender"}  # what was complete before the cut is kept


def test_constraint_follows_one_generate_call(model, tok):
    constraint = MetadataConstraint(tok, SCHEMA, ["Gender"])
    generate(model, tok, constraint)
    with pytest.raises(InputError, match="new one per call"):
        generate(model, tok, constraint)


def test_compiled_grammar_is_cached(tok):
    first = MetadataConstraint(tok, SCHEMA, ["Age", "Gender"])
    second = MetadataConstraint(tok, SCHEMA, ["Age", "Gender"])
    assert first._layout is second._layout
    assert MetadataConstraint(tok, SCHEMA, ["Gender", "Age"])._layout is not first._layout
    assert first.max_new_tokens >= len(tok.encode('{"Age": "Middle-Age", "Gender": "Female"}')) + 1
