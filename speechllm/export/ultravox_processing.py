"""UltravoxProcessor for models exported by speechllm (`speechllm export MODEL OUT --format ultravox-hf`).

Copied into each exported folder and loaded there by `AutoProcessor.from_pretrained(folder,
trust_remote_code=True)`, which is how vLLM's Ultravox support gets its processor. It needs only numpy, torch
and transformers (the serving machine has no speechllm). Written for speechllm (Apache-2.0); it implements
the interface vLLM's `UltravoxMultiModalProcessor` calls (vllm/model_executor/models/ultravox.py): `audio_processor`
(a WhisperFeatureExtractor), `audio_token_replacement` / `audio_replacement_token_id` (set by vLLM), and a call
that returns `input_ids`, `audio_values` (chunks, mel bins, frames), `audio_lens` (mel frames per chunk),
`audio_token_len` (LLM positions per chunk) and `audio_num_chunks` (chunks per clip).

The mel frames are computed as speechllm's Whisper encoder computes them with `pad_to_window: false`: the clip is
cut into 30 s windows, and each window's own samples, padded with zeros to a whole number of 160-sample hops (at
least two), give ceil(samples / 160) frames; so vLLM's encoder sees exactly what speechllm's saw.
"""

import math

import numpy as np
import torch
from transformers import AutoTokenizer, BatchFeature, ProcessorMixin, WhisperFeatureExtractor

HOP = 160
SAMPLE_RATE = 16000


class UltravoxProcessor(ProcessorMixin):
    attributes = ["feature_extractor", "tokenizer"]
    feature_extractor_class = "WhisperFeatureExtractor"
    tokenizer_class = "AutoTokenizer"

    def __init__(self, feature_extractor=None, tokenizer=None, stack_factor=8, encoder_ds_factor=2,
                 audio_placeholder="<|audio|>", window_samples=30 * SAMPLE_RATE, **kwargs):
        super().__init__(feature_extractor, tokenizer)
        self.audio_processor = feature_extractor  # the name vLLM reads
        self.stack_factor = stack_factor
        self.encoder_ds_factor = encoder_ds_factor
        self.audio_placeholder = audio_placeholder
        self.window_samples = window_samples
        self.audio_token_replacement = audio_placeholder
        self.audio_replacement_token_id = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        import json
        import os

        folder = str(pretrained_model_name_or_path)
        with open(os.path.join(folder, "processor_config.json")) as f:
            options = {k: v for k, v in json.load(f).items() if k not in ("processor_class", "auto_map")}
        return cls(WhisperFeatureExtractor.from_pretrained(folder), AutoTokenizer.from_pretrained(folder), **options)

    def window_mels(self, wave) -> list:
        """(mel bins, frames) arrays of one clip's 30 s windows."""
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        mels = []
        for start in range(0, max(len(wave), 1), self.window_samples):
            piece = wave[start:start + self.window_samples]
            target = max(-(-len(piece) // HOP) * HOP, 2 * HOP)
            piece = np.pad(piece, (0, target - len(piece)))
            mel = self.feature_extractor(piece, sampling_rate=SAMPLE_RATE, padding="longest", truncation=False,
                                         return_tensors="np").input_features[0]
            mels.append(mel[:, :target // HOP])
        return mels

    def __call__(self, text=None, audios=None, audio=None, sampling_rate=None, include_audio_num_chunks=False,
                 return_tensors="pt", **kwargs):
        if audio is not None:
            audios = audio
        if audios is None:
            audios = []
        elif isinstance(audios, (np.ndarray, torch.Tensor)) and np.ndim(audios) == 1:
            audios = [audios]
        if sampling_rate not in (None, SAMPLE_RATE):
            raise ValueError(f"this processor takes {SAMPLE_RATE} Hz audio, got {sampling_rate}")
        data, chunks, lens, token_len, num_chunks = {}, [], [], [], []
        for wave in audios:
            wave = wave.detach().cpu().float().numpy() if isinstance(wave, torch.Tensor) else wave
            mels = self.window_mels(wave)
            num_chunks.append(len(mels))
            for mel in mels:
                chunks.append(mel)
                lens.append(mel.shape[1])
                token_len.append(math.ceil(mel.shape[1] / (self.encoder_ds_factor * self.stack_factor)))
        if chunks:
            width = max(lens)
            values = np.zeros((len(chunks), chunks[0].shape[0], width), dtype=np.float32)
            for row, mel in enumerate(chunks):
                values[row, :, :mel.shape[1]] = mel
            data.update(audio_values=values, audio_lens=np.array(lens), audio_token_len=np.array(token_len))
            if include_audio_num_chunks:
                data["audio_num_chunks"] = np.array(num_chunks)
        if text is not None:
            if not isinstance(text, str):
                raise ValueError("text must be one string")
            parts = text.split(self.audio_placeholder)
            if len(parts) - 1 != len(audios):
                raise ValueError(f"the text has {len(parts) - 1} audio placeholders for {len(audios)} clips")
            replacement = self.audio_replacement_token_id
            if replacement is None:
                replacement = self.tokenizer.convert_tokens_to_ids(self.audio_token_replacement)
            ids, chunk = [], 0
            for index, part in enumerate(parts):
                ids += self.tokenizer(part, add_special_tokens=False).input_ids
                if index < len(audios):
                    ids += [replacement] * int(sum(token_len[chunk:chunk + num_chunks[index]]))
                    chunk += num_chunks[index]
            data.update(input_ids=[ids], attention_mask=[[1] * len(ids)])
        return BatchFeature(data=data, tensor_type=return_tensors)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)
