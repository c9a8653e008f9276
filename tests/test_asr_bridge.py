"""The ASR bridge (whisper_transcriber encoder + token_bridge connector) on tiny random Whisper and Llama models:
token budgets known from the spec, unused budget positions that change nothing, batch invariance, and the table."""

import numpy as np
import pytest
import torch

from speechllm.asr_bridge import TokenBridge
from speechllm.audio import load_conversation_audio
from speechllm.models.coupling import audio_token_count
from speechllm.testing import TINY_ENCODERS, tiny_model, tiny_tokenizer

RATE = 16000
WHISPER = {**TINY_ENCODERS["whisper"], "init_std": 0.5}


def bridge_model(**options):
    return tiny_model("whisper", "token_bridge", encoder={"family": "whisper_transcriber", "hf_config": WHISPER,
                                                          "options": options})


def clip(seconds, seed):
    return (np.random.default_rng(seed).standard_normal(int(seconds * RATE)) * 0.1).astype(np.float32)


def ask(model, clips, text="Transcribe: "):
    conversations = [[{"role": "user", "content": [{"type": "text", "text": text},
                                                   {"type": "audio", "audio": (c, RATE)}]}]
                     for c in clips]
    return model.processor(load_conversation_audio(conversations))


def test_budget_comes_from_the_spec_and_bounds_what_the_transcriber_gives():
    model = bridge_model(tokens_per_second=4.0, min_tokens=3)
    spec = model.config.model_spec
    for seconds in (0.5, 2.0, 31.0):
        samples = int(seconds * RATE)
        windows = [min(RATE * 30, samples - start) for start in range(0, samples, RATE * 30)]
        assert audio_token_count(spec, samples) == sum(3 + int(np.ceil(4.0 * w / RATE)) for w in windows)
    waves = [clip(2.0, 0), clip(0.7, 1)]
    lengths = torch.tensor([len(w) for w in waves])
    values = torch.zeros(2, int(lengths.max()))
    for row, w in enumerate(waves):
        values[row, : len(w)] = torch.from_numpy(w)
    states, counts = model.encoder(values, lengths)
    budgets = [audio_token_count(spec, len(w)) for w in waves]
    assert all(0 <= n <= b for n, b in zip(counts.tolist(), budgets)) and states.shape[-1] == WHISPER["d_model"]


def test_unused_budget_positions_change_nothing():
    """The LLM reads the prompt with the clip's real tokens only: the same logits and answer as a prompt built
    without the unused positions at all."""
    model = bridge_model(tokens_per_second=8.0, min_tokens=6)
    batch = ask(model, [clip(1.5, 2)])
    states, _ = model.encoder(batch.pop("audio_values"), batch.pop("audio_lengths"))
    heard = (states, torch.tensor([3]))  # as if Whisper had stopped after 3 tokens of the budget
    embeds, unused = model.embed_audio(batch["input_ids"], audio_features=heard)
    budget = int((batch["input_ids"] == model.processor.audio_token_id).sum())
    assert unused is not None and int(unused.sum()) == budget - 3
    kept = ~unused[0]
    direct = model.language_model(inputs_embeds=embeds[:, kept]).logits[0, -1]
    through = model(**batch, audio_features=heard).logits[0, -1]
    torch.testing.assert_close(through, direct, atol=1e-5, rtol=1e-5)
    answer = model.generate(**batch, audio_features=heard, max_new_tokens=6, do_sample=False)
    plain = model.language_model.generate(
        inputs_embeds=embeds[:, kept], attention_mask=torch.ones_like(kept[None]).long(), max_new_tokens=6,
        do_sample=False, pad_token_id=model.processor.tokenizer.pad_token_id,
        eos_token_id=model.processor.end_of_turn_ids)
    assert answer.tolist() == plain.tolist()


@pytest.mark.slow
def test_batched_answers_equal_one_at_a_time_for_mixed_lengths():
    model = bridge_model(tokens_per_second=3.0, min_tokens=4)
    # Batch 8: one clip over Whisper's 30 s (two windows), the others from under a second to a few seconds.
    clips = [clip(1.0, 3), clip(31.0, 4), clip(0.4, 5), clip(2.5, 6), clip(1.7, 7), clip(0.9, 8), clip(3.2, 9),
             clip(1.2, 10)]
    together = model.generate(**ask(model, clips), max_new_tokens=5, do_sample=False)
    for row, c in enumerate(clips):
        model.encoder._recent.clear()  # decode the clip again alone: the transcript cache would hide a difference
        alone = model.generate(**ask(model, [c]), max_new_tokens=5, do_sample=False)
        assert together[row, : alone.shape[1]].tolist() == alone[0].tolist()


def test_table_holds_the_mean_llm_embedding_of_each_whisper_tokens_text():
    model = bridge_model()
    tokenizer = model.processor.tokenizer
    whisper_tokenizer = tiny_tokenizer()
    bridge = TokenBridge(WHISPER["d_model"], model.language_model.config.hidden_size, temperature=1e-3)
    bridge.bind(model.encoder, model.language_model, tokenizer, whisper_tokenizer=whisper_tokenizer)
    word = whisper_tokenizer.convert_tokens_to_ids("the")
    ids = tokenizer("the", add_special_tokens=False).input_ids
    expected = model.language_model.get_input_embeddings()(torch.tensor(ids)).mean(0)
    torch.testing.assert_close(bridge.table[word], expected)
    # A decoder state whose Whisper logits pick that token, at a near-zero temperature, reaches the LLM as its row.
    state = bridge.vocab_out[word] * 50.0
    out, lengths = bridge(state[None, None], torch.tensor([1]))
    torch.testing.assert_close(out[0, 0], expected, atol=1e-4, rtol=1e-4)


def test_gradients_reach_the_temperature_and_residual_finite():
    """Whisper tokens without a table row are masked to -inf; their gradient must not poison the temperature."""
    model = bridge_model()
    bridge = TokenBridge(WHISPER["d_model"], model.language_model.config.hidden_size)
    bridge.bind(model.encoder, model.language_model, model.processor.tokenizer, whisper_tokenizer=tiny_tokenizer())
    assert not bool(bridge.allowed.all())  # special and unknown tokens are masked
    states = torch.randn(2, 5, WHISPER["d_model"])
    out, _ = bridge(states, torch.tensor([5, 3]))
    out.pow(2).sum().backward()
    grads = [p.grad for p in bridge.parameters() if p.requires_grad]
    assert bridge.log_temperature.grad is not None and all(torch.isfinite(g).all() for g in grads if g is not None)
    assert "vocab_out" not in dict(bridge.named_parameters())


def test_a_clip_asked_again_is_not_decoded_again_and_gives_the_same_states():
    model = bridge_model(tokens_per_second=3.0, min_tokens=4)
    wave = torch.from_numpy(clip(1.2, 8))[None]
    first, counts = model.encoder(wave, torch.tensor([wave.shape[1]]))
    model.encoder._decode = None  # a second decode would fail
    again, counts_again = model.encoder(wave, torch.tensor([wave.shape[1]]))
    torch.testing.assert_close(again, first)
    assert counts_again.tolist() == counts.tolist()


class SpellingTokenizer:
    """The LLM's tokenizer, but spelling `spelled` letter by letter, as Gemma spells " 1987" digit by digit."""

    def __init__(self, inner, spelled: str):
        self.inner, self.spelled = inner, spelled

    def __call__(self, texts, add_special_tokens=False):
        pieces = lambda text: list(text) if text == self.spelled else [text]  # noqa: E731
        ids = [[i for p in pieces(t) for i in self.inner(p, add_special_tokens=False).input_ids] for t in texts]
        return type("Encoded", (), {"input_ids": ids})()


def test_expanded_bridge_gives_each_whisper_token_its_llm_pieces_in_order():
    """A Whisper token the LLM spells in three pieces takes three positions, each exactly the LLM's embedding of its
    piece (the mean of the three reads as none of them), followed by the next token's position."""
    model = bridge_model()
    llm_tokenizer = SpellingTokenizer(model.processor.tokenizer, "the")
    whisper_tokenizer = tiny_tokenizer()
    bridge = TokenBridge(WHISPER["d_model"], model.language_model.config.hidden_size, temperature=1e-3, expand=4,
                         positions_per_token=1.5)
    bridge.bind(model.encoder, model.language_model, llm_tokenizer, whisper_tokenizer=whisper_tokenizer)
    (spelled,), (other,) = (whisper_tokenizer(t, add_special_tokens=False).input_ids for t in ("the", " the"))
    embed = model.language_model.get_input_embeddings()
    letters = [model.processor.tokenizer(c, add_special_tokens=False).input_ids for c in "the"]
    expected = torch.cat([embed(torch.tensor(ids)) for ids in letters]
                         + [embed(torch.tensor(model.processor.tokenizer(" the", add_special_tokens=False).input_ids))])
    states = torch.stack([bridge.vocab_out[spelled], bridge.vocab_out[other], bridge.vocab_out[other]]) * 50.0
    out, lengths = bridge(states[None], torch.tensor([2]))  # the third state is padding
    assert lengths.tolist() == [len(expected)]
    torch.testing.assert_close(out[0, : len(expected)], expected, atol=1e-4, rtol=1e-4)
    assert bridge.output_length(10) == 15


def test_a_transcript_longer_than_its_budget_is_cut_at_the_budget():
    model = bridge_model(tokens_per_second=4.0, min_tokens=3)
    batch = ask(model, [clip(1.0, 9)])
    budget = int((batch["input_ids"] == model.processor.audio_token_id).sum())
    width = model.language_model.config.hidden_size
    too_long = [torch.randn(budget + 5, width)]
    embeds, unused = model.embed_audio(batch["input_ids"], audio_embeds=too_long)
    is_audio = batch["input_ids"] == model.processor.audio_token_id
    torch.testing.assert_close(embeds[is_audio], too_long[0][:budget])
    assert not bool(unused.any())


def _windows(seconds_and_seeds):
    waves = [torch.from_numpy(clip(s, seed)) for s, seed in seconds_and_seeds]
    return waves, [8 + int(np.ceil(3.0 * len(w) / RATE)) for w in waves]


def test_beam_states_are_the_states_that_predicted_the_chosen_tokens():
    """The beam path decodes by transformers' beam search, then reads the decoder's states in one teacher-forced
    pass: with one beam it must give greedy decoding's states exactly (an off-by-one position fails this)."""
    model = bridge_model(tokens_per_second=3.0, min_tokens=8)
    waves, budgets = _windows([(1.0, 11), (2.0, 12)])
    mel = model.encoder.feature_extractor([w.numpy() for w in waves], sampling_rate=RATE,
                                          return_tensors="pt").input_features
    with torch.no_grad():
        encoded = model.encoder.model.model.encoder(mel).last_hidden_state
        greedy, greedy_counts = model.encoder._greedy_states(encoded, budgets)
        model.encoder._favouring = lambda states, chosen: states  # alignment only; favouring is tested below
        forced, forced_counts = model.encoder._beam_states(encoded, budgets)
    assert forced_counts == greedy_counts and min(greedy_counts) > 0
    torch.testing.assert_close(forced, greedy, atol=1e-4, rtol=1e-4)


def test_beam_decoding_gives_each_clip_the_same_states_batched_or_alone():
    model = bridge_model(tokens_per_second=3.0, min_tokens=8, beams=3)
    # The random tiny Whisper has near-ties between beams' last tokens; the states (which do not depend on the
    # token they predict) must agree, and favouring follows whichever token was kept (tested above).
    model.encoder._favouring = lambda states, chosen: states
    waves, budgets = _windows([(1.0, 13), (2.5, 14), (0.5, 15)])
    together, counts = model.encoder._decode(waves, budgets)
    for row, (wave, budget) in enumerate(zip(waves, budgets)):
        alone, (count,) = model.encoder._decode([wave], [budget])
        assert count == counts[row]
        torch.testing.assert_close(together[row, :count], alone[0, :count], atol=1e-4, rtol=1e-4)


def test_beam_states_make_the_chosen_token_the_most_likely_and_leave_agreeing_states_alone():
    """Beam search may keep tokens that are not a step's argmax; the bridge reads the argmax, so each such state is
    moved until the beam's token leads (by the margin), and a state that already agrees is not touched."""
    model = bridge_model()
    encoder = model.encoder
    weight = encoder.model.proj_out.weight.detach()[: encoder.end_of_text]
    states = torch.randn(6, weight.shape[1])
    top = (states @ weight.T).argmax(-1)
    chosen = top.clone()
    chosen[::2] = (top[::2] + 7) % encoder.end_of_text  # half the steps chose another token
    moved = encoder._favouring(states, chosen)
    logits = moved @ weight.T
    assert (logits.argmax(-1) == chosen).all()
    lead = logits.gather(1, chosen[:, None])[:, 0] - logits.scatter(1, chosen[:, None], -1e9).max(-1).values
    assert (lead[::2] > 0.4).all()  # by about the margin (0.5)
    leading = (states @ weight.T).topk(2).values
    agreeing = [i for i in range(1, 6, 2) if float(leading[i, 0] - leading[i, 1]) >= 0.5]
    torch.testing.assert_close(moved[agreeing], states[agreeing])
    assert ((moved[::2] - states[::2]).norm(dim=-1) > 0).all()
