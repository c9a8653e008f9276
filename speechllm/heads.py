"""Attribute heads: small classifiers that decide label and bool fields of the metadata answer.

Why: speaker attributes learned by the LLM from a few thousand synthetic clips do not carry over to real speech
(the default model guessed gender at chance on real recordings). A field's head reads a few clip-level features
chosen for that field, features that mean the same thing on real and synthetic audio: a speaker embedding trained on
real voices for gender, a pretrained voice-activity detector for speech activity, the encoder's layers, pooled, for
accent. The head
picks the value; `MetadataConstraint` then makes the LLM write exactly that value in its JSON, so the rest of the
answer (the transcript above all) is conditioned on it, and the value's confidence is the head's probability.

Features (one registry; each maps 16 kHz clips and the encoder's frames to a (clips, k) array):
- `pitch`:   voiced fraction and the 20/50/80th percentiles of log2 F0 (autocorrelation tracker, 60-400 Hz)
- `formants`: log2 of the median first three formants (LPC at 11 kHz): vocal-tract length, which pitch alone misses
             (a shouting man can reach 260 Hz, a low female voice sits at 150 Hz)
- `vad`:     Silero VAD (its ONNX weights ship inside the faster-whisper package): mean and max speech
             probability, fraction of 32 ms windows above 0.5
- `voice`:   a 256-d speaker embedding from resemblyzer's voice encoder (weights in the resemblyzer package,
             trained on real speakers): who is speaking, which carries gender and accent
- `encoder`: mean and standard deviation of the model's encoder frames over the clip's own frames
- `encoder_layers`: the same for every layer of the encoder: middle layers keep the phonetic detail that tells
             accents apart and the last layer (tuned for Whisper's decoder) partly loses (synthetic accent: 0.88
             from the last layer, 0.98 from all five of Whisper tiny.en's)

A head is a logistic regression on standardised features, fitted with L-BFGS (`fit_heads`); its weights are a few
thousand numbers, saved beside the model as heads.safetensors + heads.json. When a head rules a clip has no speech,
the transcript is left empty (inference.metadata_batch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .audio import SAMPLE_RATE as RATE, load_audio
from .errors import ConfigError
from .metadata import Field, MetadataSchema

HEADS_CONFIG, HEADS_WEIGHTS = "heads.json", "heads.safetensors"

FEATURES: dict[str, Callable] = {}


def register_feature(name: str):
    def register(fn):
        FEATURES[name] = fn
        return fn
    return register


# -- features ----------------------------------------------------------------------------------------------------

def f0_track(audio: np.ndarray, *, fmin: float = 60.0, fmax: float = 400.0, hop: int = 160,
             frame: int = 1024, threshold: float = 0.5) -> np.ndarray:
    """F0 in Hz of each voiced 64 ms frame (10 ms hop); unvoiced and quiet frames are left out.

    Normalised autocorrelation of a Hann-windowed frame, divided by the window's own autocorrelation so that long
    lags are not penalised; a frame is voiced when its best peak in the lag range reaches `threshold` and its energy
    is within 40 dB of the loudest frame. The peak is refined by parabolic interpolation."""
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) < frame:
        audio = np.pad(audio, (0, frame - len(audio)))
    starts = np.arange(0, len(audio) - frame + 1, hop)
    window = np.hanning(frame).astype(np.float32)
    frames = audio[starts[:, None] + np.arange(frame)] * window
    frames -= frames.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(frames, n=2 * frame)
    ac = np.fft.irfft(np.abs(spectrum) ** 2)[:, :frame]
    window_ac = np.fft.irfft(np.abs(np.fft.rfft(window, n=2 * frame)) ** 2)[:frame]
    energy = ac[:, 0]
    norm = ac / np.maximum(energy[:, None], 1e-12) / np.maximum(window_ac / window_ac[0], 1e-3)
    low, high = int(RATE / fmax), int(RATE / fmin)
    lags = norm[:, low:high + 1]
    peak = lags.max(axis=1)
    # The shortest lag whose local peak nearly reaches the best one: multiples of the period score as high as the
    # period itself, and picking them would halve or third the pitch.
    local_max = np.zeros_like(lags, dtype=bool)
    local_max[:, 1:-1] = (lags[:, 1:-1] >= lags[:, :-2]) & (lags[:, 1:-1] >= lags[:, 2:])
    near_best = local_max & (lags >= 0.9 * peak[:, None])
    best = np.where(near_best.any(axis=1), near_best.argmax(axis=1), lags.argmax(axis=1))
    loud = energy > energy.max() * 1e-4
    voiced = (peak >= threshold) & loud & (energy > 1e-8)
    lag = (best + low).astype(np.float64)
    # parabolic interpolation around the peak for sub-sample lag precision
    inner = (best > 0) & (best < lags.shape[1] - 1)
    i = np.arange(len(lags))[inner]
    a, b, c = lags[i, best[inner] - 1], lags[i, best[inner]], lags[i, best[inner] + 1]
    denom = a - 2 * b + c
    lag[inner] += np.where(np.abs(denom) > 1e-9, 0.5 * (a - c) / np.where(denom == 0, 1, denom), 0.0)
    return RATE / lag[voiced]


@register_feature("pitch")
def pitch_features(clips: Sequence[np.ndarray], encoder_frames=None) -> np.ndarray:
    rows = []
    for audio in clips:
        hops = max(1, (max(len(audio), 1024) - 1024) // 160 + 1)
        f0 = f0_track(audio)
        if len(f0) == 0:
            rows.append([0.0, np.log2(150.0), np.log2(150.0), np.log2(150.0)])  # no voice: a neutral pitch
            continue
        rows.append([len(f0) / hops, *np.log2(np.percentile(f0, [20, 50, 80]))])
    return np.asarray(rows, dtype=np.float32)


def _levinson(r: np.ndarray, order: int) -> np.ndarray:
    """LPC polynomials (frames, order + 1), 1 + a1 z^-1 + ..., from autocorrelations (frames, order + 1)."""
    a = np.zeros((len(r), order + 1))
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    for i in range(1, order + 1):
        k = -(r[:, i] + np.sum(a[:, 1:i] * r[:, i - 1:0:-1], axis=1)) / np.maximum(err, 1e-12)
        a[:, 1:i] = a[:, 1:i] + k[:, None] * a[:, i - 1:0:-1]
        a[:, i] = k
        err = err * (1 - k ** 2)
    return a


def formant_track(audio: np.ndarray, *, order: int = 14, rate: int = 11025) -> np.ndarray:
    """The three lowest formants (Hz) of each loud 25 ms frame (10 ms hop), from the roots of an LPC fit at 11 kHz:
    resonances with a bandwidth under 400 Hz between 200 and 4500 Hz. Frames with fewer than three are left out."""
    import soxr

    audio = soxr.resample(np.asarray(audio, dtype=np.float64), RATE, rate)
    audio = np.append(audio[:1], audio[1:] - 0.97 * audio[:-1])  # pre-emphasis: flattens the glottal tilt
    frame, hop = int(rate * 0.03), rate // 100
    if len(audio) < frame:
        return np.zeros((0, 3))
    starts = np.arange(0, len(audio) - frame + 1, hop)
    frames = audio[starts[:, None] + np.arange(frame)] * np.hamming(frame)
    energy = (frames ** 2).sum(1)
    frames = frames[energy > max(energy.max() * 1e-2, 1e-10)]
    spectrum = np.fft.rfft(frames, n=2 * frame)
    r = np.fft.irfft(np.abs(spectrum) ** 2)[:, :order + 1]
    polys = _levinson(r, order)
    companion = np.zeros((len(polys), order, order))  # the roots of each polynomial, all frames in one call
    companion[:, 0, :] = -polys[:, 1:]
    companion[:, np.arange(1, order), np.arange(order - 1)] = 1.0
    out = []
    for roots in np.linalg.eigvals(companion):
        roots = roots[roots.imag > 0]
        freq = np.angle(roots) * rate / (2 * np.pi)
        bandwidth = -np.log(np.maximum(np.abs(roots), 1e-9)) * rate / np.pi
        freq = np.sort(freq[(bandwidth < 400) & (freq > 200) & (freq < 4500)])
        if len(freq) >= 3:
            out.append(freq[:3])
    return np.asarray(out).reshape(-1, 3)


@register_feature("formants")
def formant_features(clips: Sequence[np.ndarray], encoder_frames=None) -> np.ndarray:
    """log2 of the median F1, F2, F3: the vocal tract's length shows in them whatever the pitch."""
    rows = []
    for audio in clips:
        track = formant_track(audio)
        median = np.median(track, axis=0) if len(track) else np.array([500.0, 1500.0, 2500.0])
        rows.append(np.log2(median))
    return np.asarray(rows, dtype=np.float32)


class VoiceEncoder(nn.Module):
    """Resemblyzer's speaker encoder (GE2E d-vectors: 3-layer LSTM over 40 mel bands, trained on thousands of real
    speakers). Its weights ship inside the PyPI package `resemblyzer`; this is our own reimplementation of its
    forward pass and mel front end (numpy, no librosa), checked against the package's own code."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        self.mel_filters = None

    @classmethod
    def packaged(cls) -> "VoiceEncoder":
        import importlib.util

        spec = importlib.util.find_spec("resemblyzer")
        path = Path(spec.origin).parent / "pretrained.pt" if spec and spec.origin else None
        if path is None or not path.exists():
            raise ConfigError("the 'voice' head feature needs the weights of the PyPI package resemblyzer "
                              "(pip install resemblyzer)")
        state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
        encoder = cls()
        encoder.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity")})
        return encoder.eval()

    def mel(self, audio: np.ndarray) -> np.ndarray:
        """Power mel spectrogram (frames, 40): 25 ms Hann windows every 10 ms, centred, Slaney mel bands."""
        if self.mel_filters is None:
            from transformers.audio_utils import mel_filter_bank

            self.mel_filters = mel_filter_bank(num_frequency_bins=201, num_mel_filters=40, min_frequency=0.0,
                                               max_frequency=8000.0, sampling_rate=RATE, norm="slaney",
                                               mel_scale="slaney")
        padded = np.pad(np.asarray(audio, dtype=np.float64), (200, 200))
        frames = np.lib.stride_tricks.sliding_window_view(padded, 400)[::160]
        power = np.abs(np.fft.rfft(frames * np.hanning(401)[:-1], n=400)) ** 2
        return (power @ self.mel_filters).astype(np.float32)

    def windows(self, audio: np.ndarray) -> np.ndarray:
        """The clip's 1.6 s mel windows (every 0.77 s, the last one zero-padded), raised to -30 dBFS first as
        resemblyzer does: (windows, 160, 40)."""
        audio = np.asarray(audio, dtype=np.float32)
        level = 20 * np.log10(np.sqrt(np.mean(audio ** 2)) + 1e-9)
        if level < -30:
            audio = audio * 10 ** ((-30 - level) / 20)
        mel = self.mel(audio)
        starts = list(range(0, max(len(mel) - 160, 0) + 1, 77))
        if starts[-1] + 160 < len(mel):
            starts.append(starts[-1] + 77)
        mel = np.pad(mel, ((0, max(0, starts[-1] + 160 - len(mel))), (0, 0)))
        return np.stack([mel[s:s + 160] for s in starts])

    @torch.no_grad()
    def embed(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """One L2-normalised 256-d voice embedding per clip: the normalised mean of its windows' embeddings.
        All windows of all clips go through the LSTM as one batch."""
        windows = [self.windows(audio) for audio in clips]
        _, (hidden, _) = self.lstm(torch.from_numpy(np.concatenate(windows)))
        parts = torch.relu(self.linear(hidden[-1]))
        parts = parts / parts.norm(dim=1, keepdim=True).clamp_min(1e-9)
        out = []
        for part in parts.split([len(w) for w in windows]):
            mean = part.mean(0)
            out.append((mean / mean.norm().clamp_min(1e-9)).numpy())
        return np.stack(out)


_VOICE = {}


@register_feature("voice")
def voice_features(clips: Sequence[np.ndarray], encoder_frames=None) -> np.ndarray:
    """Speaker embedding of a voice encoder trained on real speakers (see VoiceEncoder)."""
    if "model" not in _VOICE:
        _VOICE["model"] = VoiceEncoder.packaged()
    return _VOICE["model"].embed(clips).astype(np.float32)


_VAD = {}


def _silero():
    if "model" not in _VAD:
        try:
            from faster_whisper.vad import get_vad_model
        except ImportError as e:
            raise ConfigError("the 'vad' head feature needs faster-whisper (pip install faster-whisper)") from e
        _VAD["model"] = get_vad_model()
    return _VAD["model"]


def speech_probabilities(audio: np.ndarray) -> np.ndarray:
    """Silero VAD's speech probability for each 32 ms window (512 samples) of a 16 kHz clip."""
    audio = np.asarray(audio, dtype=np.float32)
    window = 512
    padded = np.pad(audio, (0, (-len(audio)) % window or 0))
    if len(padded) == 0:
        padded = np.zeros(window, dtype=np.float32)
    return np.asarray(_silero()(padded), dtype=np.float32).reshape(-1)


@register_feature("vad")
def vad_features(clips: Sequence[np.ndarray], encoder_frames=None) -> np.ndarray:
    rows = []
    for audio in clips:
        probs = speech_probabilities(audio)
        rows.append([probs.mean(), probs.max(), (probs > 0.5).mean()])
    return np.asarray(rows, dtype=np.float32)


# Features read from the model's encoder, and those among them that need every layer of it (see `encode_for_heads`).
ENCODER_FEATURES, LAYER_FEATURES = {"encoder", "encoder_layers"}, {"encoder_layers"}


def _pooled(features: torch.Tensor, frames: torch.Tensor) -> np.ndarray:
    """Per clip, mean and standard deviation over its own frames of (clips, frames, ...) features, flattened."""
    rows = []
    for f, n in zip(features.float(), frames.tolist()):
        f = f[: max(int(n), 1)]
        rows.append(torch.cat([f.mean(0), f.std(0, unbiased=False)], dim=-1).reshape(-1).numpy())
    return np.asarray(rows, dtype=np.float32)


@register_feature("encoder")
def encoder_features(clips: Sequence[np.ndarray], encoder_frames=None) -> np.ndarray:
    if encoder_frames is None:
        raise ConfigError("the 'encoder' head feature needs the model's encoder frames")
    features, frames = encoder_frames
    if features.dim() == 4:  # every layer was kept: the last is the encoder's output
        features = features[:, :, -1]
    return _pooled(features, frames)


@register_feature("encoder_layers")
def encoder_layer_features(clips: Sequence[np.ndarray], encoder_frames=None) -> np.ndarray:
    if encoder_frames is None or encoder_frames[0].dim() != 4:
        raise ConfigError("the 'encoder_layers' head feature needs every layer of the model's encoder")
    return _pooled(*encoder_frames)


def encode_for_heads(model, values: torch.Tensor, lengths: torch.Tensor, features: set) -> tuple:
    """One encoder pass over padded clips for the head features `features` -> (what the features read, what
    the LLM reads: the last layer's frames and lengths), both None when no feature needs the encoder."""
    if not features & ENCODER_FEATURES:
        return None, None
    return model.encode_audio_layers(values, lengths, all_layers=bool(features & LAYER_FEATURES))


def clip_features(names: Sequence[str], clips: Sequence[np.ndarray], encoder_frames=None) -> dict[str, np.ndarray]:
    unknown = sorted(set(names) - set(FEATURES))
    if unknown:
        raise ConfigError(f"unknown head features {unknown}; known: {sorted(FEATURES)}")
    return {name: FEATURES[name](clips, encoder_frames) for name in names}


# -- heads -------------------------------------------------------------------------------------------------------

def field_values(field: Field) -> tuple:
    """The values a head chooses among, in the order of its outputs."""
    if field.choices:
        return field.choices
    raise ConfigError(f"metadata field {field.name!r} is free text; only label and bool fields can have a head")


class LinearHead(nn.Module):
    """Logistic regression over the concatenation of `features`, standardised by the training set's statistics."""

    def __init__(self, features: Sequence[str], width: int, classes: int):
        super().__init__()
        self.features = list(features)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))
        self.linear = nn.Linear(width, classes)

    def inputs(self, features: dict[str, np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.concatenate([features[n] for n in self.features], axis=1)).float()
        return (x - self.mean) / self.scale

    def forward(self, features: dict[str, np.ndarray]) -> torch.Tensor:
        return self.linear(self.inputs(features)).softmax(-1)


@dataclass
class HeadPrediction:
    value: object
    confidence: float


class AttributeHeads(nn.Module):
    """One `LinearHead` per field; `predict` gives each clip's value and probability for each field."""

    def __init__(self, schema: MetadataSchema, spec: dict[str, dict]):
        super().__init__()
        self.schema = schema
        self.spec = {name: {"features": list(s["features"]), "width": int(s["width"])} for name, s in spec.items()}
        self.heads = nn.ModuleDict({
            name: LinearHead(s["features"], s["width"], len(field_values(schema.field(name))))
            for name, s in self.spec.items()
        })

    @property
    def fields(self) -> list[str]:
        return list(self.spec)

    def features_for(self, names: Sequence[str]) -> set:
        """The features the heads of `names` read."""
        return {f for n in names if n in self.spec for f in self.spec[n]["features"]}

    @torch.no_grad()
    def predict(self, clips: Sequence[np.ndarray], names: Sequence[str], encoder_frames=None) -> list[dict]:
        """Per clip, {field: HeadPrediction} for the fields of `names` that have a head."""
        names = [n for n in names if n in self.spec]
        if not names or not clips:
            return [{} for _ in clips]
        wanted = sorted({f for n in names for f in self.spec[n]["features"]})
        features = clip_features(wanted, clips, encoder_frames)
        out = [{} for _ in clips]
        for name in names:
            values = field_values(self.schema.field(name))
            probs = self.heads[name](features)
            for row, p in enumerate(probs):
                best = int(p.argmax())
                out[row][name] = HeadPrediction(values[best], float(p[best]))
        return out

    def save(self, directory) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / HEADS_CONFIG).write_text(json.dumps(self.spec, indent=1))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / HEADS_WEIGHTS))

    @classmethod
    def load(cls, directory, schema: MetadataSchema) -> "AttributeHeads | None":
        """The heads saved in `directory`, or None when it has none."""
        directory = Path(directory)
        if not (directory / HEADS_CONFIG).exists():
            return None
        try:
            spec = json.loads((directory / HEADS_CONFIG).read_text())
            heads = cls(schema, spec)
            heads.load_state_dict(load_file(str(directory / HEADS_WEIGHTS)))
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise ConfigError(f"{directory}: attribute heads do not load ({e})") from e
        return heads.eval()


def fit_head(x: np.ndarray, y: np.ndarray, classes: int, *, l2: float = 1e-3, steps: int = 200) -> tuple:
    """Logistic regression by L-BFGS on standardised inputs, classes weighted by inverse frequency so that a
    rare class (a few non-speech clips among many speech ones) is not ignored. Returns (mean, scale, weight, bias)."""
    x = torch.from_numpy(x).double()
    mean, scale = x.mean(0), x.std(0)
    scale = torch.where(scale > 1e-6, scale, torch.ones_like(scale))  # a constant feature: leave it unscaled
    z = (x - mean) / scale
    target = torch.from_numpy(y).long()
    counts = torch.bincount(target, minlength=classes).double()
    class_weight = torch.where(counts > 0, len(target) / (classes * counts.clamp_min(1)), torch.zeros_like(counts))
    weight = torch.zeros(classes, z.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(z @ weight.T + bias, target, weight=class_weight) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return mean.float(), scale.float(), weight.detach().float(), bias.detach().float()


def fit_heads(schema: MetadataSchema, head_features: dict[str, list[str]], features: dict[str, np.ndarray],
              labels: dict[str, list], *, l2: float = 1e-3) -> AttributeHeads:
    """Heads for the fields of `head_features` ({field: [feature names]}), fitted on `features` ({feature name:
    (clips, k) array}) and `labels` ({field: per-clip value or None}); clips whose label is None are left out."""
    spec, fitted = {}, {}
    for name, names in head_features.items():
        values = field_values(schema.field(name))
        keep = [i for i, v in enumerate(labels[name]) if v is not None]
        if len({labels[name][i] for i in keep}) < 2:
            raise ConfigError(f"head for {name!r}: the training clips need at least two different values")
        x = np.concatenate([features[f] for f in names], axis=1)[keep]
        y = np.array([values.index(labels[name][i]) for i in keep])
        fitted[name] = fit_head(x, y, len(values), l2=l2)
        spec[name] = {"features": list(names), "width": x.shape[1]}
    heads = AttributeHeads(schema, spec)
    for name, (mean, scale, weight, bias) in fitted.items():
        head = heads.heads[name]
        head.mean.copy_(mean)
        head.scale.copy_(scale)
        head.linear.weight.data.copy_(weight)
        head.linear.bias.data.copy_(bias)
    return heads.eval()


def check_head_features(name, features, where: str) -> None:
    """ConfigError naming `where` unless `features` is a non-empty list of known feature names for field `name`."""
    if not (isinstance(name, str) and name and isinstance(features, list) and features
            and set(features) <= set(FEATURES)):
        raise ConfigError(f"{where}: give a field and a list of features from {sorted(FEATURES)}, "
                          f"got {name!r}: {features!r}")


def parse_head_features(items: Sequence[str]) -> dict[str, list[str]]:
    """["Gender=pitch,formants", ...] -> {"Gender": ["pitch", "formants"]}, checking the feature names."""
    out = {}
    for item in items:
        name, _, features = item.partition("=")
        out[name.strip()] = [f.strip() for f in features.split(",") if f.strip()]
        check_head_features(name.strip(), out[name.strip()], f"head {item!r} (write FIELD=FEATURE,...)")
    return out


def model_clip_features(model, clips: Sequence[np.ndarray], names: Sequence[str], *, batch_size: int = 16,
                        progress: bool = False) -> dict[str, np.ndarray]:
    """The features `names` of 16 kHz clips, with the model's encoder where a feature needs it (batched)."""
    from tqdm import tqdm

    from .audio import pad_batch

    out: dict[str, list] = {n: [] for n in names}
    starts = range(0, len(clips), batch_size)
    for start in tqdm(starts, desc=f"head features ({', '.join(names)})", unit="batch", disable=not progress):
        group = list(clips[start:start + batch_size])
        values, lengths = pad_batch([torch.from_numpy(np.asarray(c, dtype=np.float32)) for c in group])
        frames, _ = encode_for_heads(model, values, lengths, set(names))
        for name, value in clip_features(names, group, frames).items():
            out[name].append(value)
    return {n: np.concatenate(v) for n, v in out.items()}


def fit_model_heads(model, manifests: Sequence, head_features: dict[str, list[str]], *, batch_size: int = 16,
                    progress: bool = True) -> AttributeHeads:
    """Fit `model`'s attribute heads ({field: [features]}) on labelled training manifests and attach them."""
    from tqdm import tqdm

    from .data.manifest import read_manifest

    schema = model.metadata_schema
    for name in head_features:
        field_values(schema.field(name))  # a text or unknown field fails here, by name
    records = [r for m in manifests for r in read_manifest(m, schema)]
    wanted = sorted({f for names in head_features.values() for f in names})
    clips, labels = [], {name: [] for name in head_features}
    for record in tqdm(records, desc="head features: audio", disable=not progress, leave=False):
        clips.append(load_audio(record.audio_source(), **model.processor.audio_limits))
        values = record.metadata(schema)
        for name in head_features:
            labels[name].append(values.get(name))
    features = model_clip_features(model, clips, wanted, batch_size=batch_size, progress=progress)
    model.attribute_heads = fit_heads(schema, head_features, features, labels)
    return model.attribute_heads
