"""A differentiable cascade: Whisper transcribes, and each transcript token reaches the LLM as the LLM embedding of
Whisper's token distribution at that step (an ASR-posterior bridge, as in LegoSLM).

Why: a connector learned from nothing on a CPU budget barely reaches a real LLM (4 of 60 spoken questions answered in
a 10-minute experiment), while this bridge answers like the text cascade before any training (40 of 60 against 42)
and is differentiable, so training starts from there and goes beyond: a temperature and a zero-initialised residual
MLP on Whisper's decoder states learn what the one-best transcript loses (REFERENCE.md section 5).

- `WhisperTranscriber` (encoder family `whisper_transcriber`): greedy Whisper decoding of each 30 s window; its
  "frames" are the decoder's final states, one per transcript token. A clip gets a token budget that depends only on
  its length (`tokens_per_second`), so the prompt's size is known before the audio is decoded; unused budget
  positions are masked out of attention by the model.
- `TokenBridge` (connector `token_bridge`): states -> Whisper's logits -> softmax(logits / T) -> times a fixed table
  holding, for each Whisper token, the mean LLM input embedding of that token's text; plus residual(states).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .audio import SAMPLE_RATE
from .config import EncoderSpec
from .connectors import Connector, mask_padding, register_connector
from .encoders import AudioEncoder, FrameCount, register_encoder
from .errors import ConfigError

TRANSCRIBER_OPTIONS = {"tokens_per_second": 6.0, "min_tokens": 8, "beams": 1}


@dataclass(frozen=True)
class TranscriptBudget(FrameCount):
    """A window's token budget: `min_tokens` plus `tokens_per_second` of its audio, within Whisper's positions. Fast
    English speech takes about 4.5 Whisper tokens a second, so 6 leaves room; a longer transcript is cut there."""

    tokens_per_second: float = 6.0
    min_tokens: int = 8
    max_tokens: int = 445
    is_budget = True

    def window_frames(self, num_samples: int) -> int:
        budget = self.min_tokens + math.ceil(self.tokens_per_second * num_samples / SAMPLE_RATE)
        return min(budget, self.max_tokens)


@register_encoder("whisper_transcriber")
class WhisperTranscriber(AudioEncoder):
    """Whisper's encoder and decoder as one feature extractor: greedy transcript tokens and, for each, the decoder
    state that predicted it (batch, tokens, d_model). Options: `tokens_per_second` (default 6: fast English speech
    takes about 4.5 Whisper tokens a second) and `min_tokens` (default 8) set each window's token budget."""

    default_window_seconds = 30.0
    features_version = 2  # 2: beam states favour the chosen token (feature caches of version 1 are not reused)

    def __init__(self, spec: EncoderSpec):
        from transformers import (
            AutoConfig,
            GenerationConfig,
            WhisperConfig,
            WhisperFeatureExtractor,
            WhisperForConditionalGeneration,
        )

        if (spec.window_seconds or 30.0) > 30.0:
            raise ConfigError("whisper_transcriber: window_seconds cannot exceed 30 (Whisper's fixed input)")
        super().__init__(spec)
        if spec.name_or_path is not None:
            from .model_files import reading_model

            with reading_model(spec.name_or_path, "encoder"):
                config = AutoConfig.from_pretrained(spec.name_or_path, trust_remote_code=False)
                if "WhisperForConditionalGeneration" not in (config.architectures or []):
                    raise ConfigError(f"{spec.name_or_path}: whisper_transcriber needs a whole Whisper (encoder and "
                                      "decoder), e.g. packaged:tiny.en")
                self.model = WhisperForConditionalGeneration.from_pretrained(spec.name_or_path,
                                                                             trust_remote_code=False)
                generation = GenerationConfig.from_pretrained(spec.name_or_path)  # plain JSON: runs no code
        else:
            self.model = WhisperForConditionalGeneration(WhisperConfig(**spec.hf_config))
            generation = self.model.generation_config
        config = self.model.config
        self.feature_extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        self.output_dim = config.d_model
        self.frames = self.frame_count(spec, config)
        self.end_of_text = generation.eos_token_id if generation.eos_token_id is not None else config.eos_token_id
        prompt = [generation.decoder_start_token_id or config.decoder_start_token_id]
        if getattr(generation, "no_timestamps_token_id", None) is not None:
            prompt.append(generation.no_timestamps_token_id)
        self.prompt = prompt
        # Transcripts of recent windows: asking several questions about one clip decodes it once. Used only while
        # the weights cannot change (frozen, no gradients); an entry is small (budget x d_model floats).
        self._recent: OrderedDict[tuple, tuple[torch.Tensor, int]] = OrderedDict()
        self.recent_windows = 256
        self.beams = int({**TRANSCRIBER_OPTIONS, **spec.options}["beams"])
        self.suppress = sorted(set(generation.suppress_tokens or []))
        self.begin_suppress = sorted(set(generation.begin_suppress_tokens or []))

    @classmethod
    def frame_count(cls, spec: EncoderSpec, config) -> TranscriptBudget:
        unknown = set(spec.options) - set(TRANSCRIBER_OPTIONS)
        if unknown:
            raise ConfigError(f"whisper_transcriber: unknown option(s) {sorted(unknown)}; valid: "
                              f"{sorted(TRANSCRIBER_OPTIONS)}")
        options = {**TRANSCRIBER_OPTIONS, **spec.options}
        if not (options["tokens_per_second"] > 0 and int(options["min_tokens"]) >= 1 and int(options["beams"]) >= 1):
            raise ConfigError("whisper_transcriber: tokens_per_second must be > 0, min_tokens and beams >= 1")
        # The decoder's positions, less its two prompt tokens and the end of text.
        return TranscriptBudget(cls.window_samples_of(spec), float(options["tokens_per_second"]),
                                float(options["tokens_per_second"]), int(options["min_tokens"]),
                                config.max_target_positions - 3)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor, all_layers: bool = False):
        """(states (batch, tokens, d_model), tokens per clip): every window's transcript tokens, in order."""
        if all_layers:
            raise ConfigError("whisper_transcriber has no frame-level layers; heads need a 'whisper' encoder")
        windows, budgets, owners = [], [], []
        for clip, (wave, length) in enumerate(zip(waveforms, lengths.tolist())):
            start = 0
            for size in self.frames.window_sizes(length):
                windows.append(wave[start: start + min(size, max(length - start, 0))])
                budgets.append(self.window_output_length(size))
                owners.append(clip)
                start += size
        states, counts = self.transcribe_windows(windows, budgets)
        per_clip: list[list[torch.Tensor]] = [[] for _ in range(len(waveforms))]
        for owner, window_states, count in zip(owners, states, counts):
            per_clip[owner].append(window_states[:count])
        joined = [torch.cat(parts) for parts in per_clip]
        token_counts = torch.tensor([len(j) for j in joined], device=waveforms.device)
        features = states.new_zeros(len(joined), max(1, int(token_counts.max())), self.output_dim)
        for row, j in enumerate(joined):
            features[row, : len(j)] = j
        return features, token_counts

    def transcribe_windows(self, windows: list[torch.Tensor], budgets: list[int]):
        """Greedy decoding of windows as one batch: (states (windows, max budget, d_model), tokens per window). Each
        row's decoding depends on its own audio only (same prompt length, no padding), so batching changes nothing,
        and a window decoded recently is taken from `_recent` (same result)."""
        frozen = not self.training and not any(p.requires_grad for p in self.model.parameters())
        keys = [(hashlib.sha1(w.detach().float().cpu().numpy().tobytes()).hexdigest(), b)
                for w, b in zip(windows, budgets)]
        missing = [i for i, k in enumerate(keys) if not (frozen and k in self._recent)]
        if missing:
            states, counts = self._decode([windows[i] for i in missing], [budgets[i] for i in missing])
            for row, i in enumerate(missing):
                self._recent[keys[i]] = (states[row, : counts[row]].clone(), counts[row])
        found = [self._recent[k] for k in keys]
        for k in keys:
            self._recent.move_to_end(k)
        while len(self._recent) > (self.recent_windows if frozen else 0):
            self._recent.popitem(last=False)
        out = found[0][0].new_zeros(len(windows), max(budgets), self.output_dim)
        for row, (window_states, count) in enumerate(found):
            out[row, :count] = window_states
        return out, [count for _, count in found]

    @torch.no_grad()
    def _decode(self, windows: list[torch.Tensor], budgets: list[int]):
        with torch.autocast(device_type="cpu", enabled=False):
            mel = self.feature_extractor([w.float().cpu().numpy() for w in windows], sampling_rate=SAMPLE_RATE,
                                         return_tensors="pt").input_features
        param = next(self.model.parameters())
        encoded = self.model.model.encoder(mel.to(param.device, param.dtype)).last_hidden_state
        if self.beams > 1:
            return self._beam_states(encoded, budgets)
        return self._greedy_states(encoded, budgets)

    def _greedy_states(self, encoded: torch.Tensor, budgets: list[int]):
        whisper, device = self.model.model, encoded.device
        rows, steps = len(budgets), max(budgets)
        ids = torch.tensor([self.prompt] * rows, device=device)
        budget = torch.tensor(budgets, device=device)
        states = encoded.new_zeros(rows, steps, self.output_dim)
        counts = torch.zeros(rows, dtype=torch.long, device=device)
        done = torch.zeros(rows, dtype=torch.bool, device=device)
        cache = None
        for step in range(steps):
            out = whisper.decoder(input_ids=ids, encoder_hidden_states=encoded, cache=cache, use_cache=True)
            cache = out.past_key_values
            hidden = out.last_hidden_state[:, -1]
            logits = self.model.proj_out(hidden).float()
            logits[:, self.suppress] = -math.inf
            if step == 0:
                logits[:, self.begin_suppress] = -math.inf
            token = logits.argmax(-1)
            done |= (token == self.end_of_text) | (step >= budget)
            states[~done, step] = hidden[~done]
            counts += (~done).long()
            if bool(done.all()):
                break
            ids = token[:, None]
        return states, counts.tolist()

    def _beam_states(self, encoded: torch.Tensor, budgets: list[int]):
        from transformers import GenerationConfig, GenerationMixin
        from transformers.modeling_outputs import BaseModelOutput

        """Beam search (as faster-whisper decodes: `beams` hypotheses, the best kept), then one teacher-forced
        decoder pass along the chosen tokens: the state that predicted each of them, as greedy decoding gives."""
        rows, steps, device = len(budgets), max(budgets), encoded.device
        start = torch.tensor([self.prompt] * rows, device=device)
        # The plain beam search of transformers' GenerationMixin: Whisper's own generate() wants mel features and
        # adds long-form logic this window-by-window decoding does not use.
        settings = GenerationConfig(num_beams=self.beams, max_length=len(self.prompt) + steps, do_sample=False,
                                    suppress_tokens=self.suppress or None,
                                    begin_suppress_tokens=self.begin_suppress or None,
                                    eos_token_id=self.end_of_text, pad_token_id=self.end_of_text,
                                    decoder_start_token_id=self.prompt[0])
        out = GenerationMixin.generate(
            self.model, encoder_outputs=BaseModelOutput(last_hidden_state=encoded), decoder_input_ids=start,
            decoder_attention_mask=torch.ones_like(start), generation_config=settings,
            attention_mask=torch.ones(encoded.shape[:2], dtype=torch.long, device=device))  # every frame is real
        tokens = out[:, len(self.prompt):]
        counts = []
        for row, budget in enumerate(budgets):
            ended = (tokens[row] == self.end_of_text).nonzero()
            counts.append(min(int(ended[0]) if len(ended) else tokens.shape[1], budget))
        forced = torch.cat([start, tokens[:, :max(1, max(counts))]], dim=1)
        hidden = self.model.model.decoder(input_ids=forced, encoder_hidden_states=encoded).last_hidden_state
        states = encoded.new_zeros(rows, steps, self.output_dim)
        for row, count in enumerate(counts):  # position len(prompt) - 1 + i predicted token i
            states[row, :count] = self._favouring(hidden[row, len(self.prompt) - 1: len(self.prompt) - 1 + count],
                                                  tokens[row, :count])
        return states, counts

    def _favouring(self, states: torch.Tensor, chosen: torch.Tensor, margin: float = 0.5, rounds: int = 10):
        """`states` moved just enough that the beam's `chosen` token leads every other text token by `margin`
        logits: beam search keeps a hypothesis whose tokens need not be each step's argmax ("one hundred" where
        the state alone says " 100"), and the bridge reads the argmax (how many LLM pieces a step takes). Each round
        moves a state along W[chosen] minus the softmax-weighted competitors that come within the margin, by the
        amount that closes the largest gap; every quantity is continuous in the state, so two nearly equal states
        (a clip batched or alone) move nearly equally, and a state whose token already leads is not moved."""
        weight = self.model.proj_out.weight.float()[: self.end_of_text]  # text tokens: what the bridge can read
        moved = states.float().clone()
        text = chosen < self.end_of_text
        safe = chosen.clamp_max(self.end_of_text - 1)
        rows = torch.arange(len(chosen), device=states.device)
        for _ in range(rounds):
            logits = moved @ weight.T
            own = logits[rows, safe]
            others = logits.clone()
            others[rows, safe] = -math.inf
            gap = others.max(-1).values - own + margin  # > 0: the chosen token does not lead by the margin yet
            needs = (gap > 1e-6) & text
            if not bool(needs.any()):
                break
            rivals = F.softmax((others - own[:, None]) / margin, dim=-1)  # the tokens within the margin weigh most
            direction = weight[safe] - rivals @ weight
            step = gap.clamp_min(0) / direction.pow(2).sum(-1).clamp_min(1e-6)
            moved = torch.where(needs[:, None], moved + step[:, None] * direction, moved)
        return moved.to(states.dtype)


@register_connector("token_bridge")
class TokenBridge(Connector):
    """Whisper decoder states -> LLM input embeddings through Whisper's own token distribution.

    With `expand` 1 (the first shipped bridge) a Whisper token reaches the LLM as one position: the mean LLM
    embedding of its text. With `expand` K > 1 it takes as many positions as the LLM's tokenizer gives its text (up
    to K), each the LLM embedding of that piece: " 1987" is one Whisper token but four Gemma digits, and their mean
    reads as none of them. Sub-position j mixes the pieces j of the tokens that have one, weighted by Whisper's
    probabilities; the most likely token decides how many sub-positions a step takes. `positions_per_token` sizes the
    prompt's budget (LLM positions per Whisper token); a transcript that expands beyond it is cut there.

    Needs `bind(encoder, language_model, tokenizer)` (the model calls it) to build its fixed tables; the tables and
    Whisper's output layer are buffers rebuilt at load, never saved. Trains `temperature` and the residual MLP."""

    def __init__(self, input_dim: int, output_dim: int, frame_rate: float = 6.0, *, temperature: float = 1.0,
                 hidden: int = 1024, expand: int = 1, positions_per_token: float = 1.0):
        super().__init__()
        if int(expand) < 1 or not positions_per_token >= 1.0:
            raise ConfigError("token_bridge: expand must be >= 1 and positions_per_token >= 1")
        self.expand = int(expand)
        self.positions_per_token = float(positions_per_token)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        self.residual = nn.Sequential(nn.LayerNorm(input_dim), nn.Linear(input_dim, hidden), nn.GELU(),
                                      nn.Linear(hidden, output_dim))
        nn.init.zeros_(self.residual[-1].weight)  # starts as the plain bridge
        nn.init.zeros_(self.residual[-1].bias)
        self.register_buffer("vocab_out", None, persistent=False)  # (whisper vocab, input_dim)
        self.register_buffer("table", None, persistent=False)  # (whisper vocab, output_dim): piece 0 (or the mean)
        self.register_buffer("allowed", None, persistent=False)  # text tokens with a table row
        self.register_buffer("pieces", None, persistent=False)  # (whisper vocab,) LLM pieces used, 1..expand
        self.later: list[tuple[torch.Tensor, torch.Tensor]] = []  # per sub-position j >= 1: (token ids, rows)

    @staticmethod
    def token_count(num_frames, *, positions_per_token: float = 1.0, **options):
        return math.ceil(num_frames * positions_per_token)

    def output_length(self, num_frames: int) -> int:
        return self.token_count(num_frames, positions_per_token=self.positions_per_token)

    @property
    def bound(self) -> bool:
        return self.table is not None

    @torch.no_grad()
    def bind(self, encoder: nn.Module, language_model: nn.Module, tokenizer, whisper_tokenizer=None) -> None:
        """Build the tables from Whisper's tokenizer (by default the one saved with the encoder's weights) and the
        LLM's tokenizer and input embeddings. Without a Whisper tokenizer (random test encoders) the tables are
        empty and only the residual path speaks."""
        from transformers import AutoTokenizer

        if not isinstance(encoder, WhisperTranscriber):
            raise ConfigError("connector token_bridge reads Whisper's decoder states: use encoder family "
                              "whisper_transcriber")
        source = encoder.spec.name_or_path
        if whisper_tokenizer is None and source:
            whisper_tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        output = encoder.model.get_output_embeddings().weight
        vocab = output.shape[0]
        embedding = language_model.get_input_embeddings()
        device = embedding.weight.device
        texts = [whisper_tokenizer.decode([i]) if whisper_tokenizer and i < encoder.end_of_text else ""
                 for i in range(vocab)]
        ids = tokenizer(texts, add_special_tokens=False).input_ids if whisper_tokenizer else [[] for _ in texts]
        if self.expand > 1:
            ids = [row[: self.expand] for row in ids]
        lengths = torch.tensor([len(i) for i in ids])

        def embed(flat_ids):  # the module, so scaled embeddings (Gemma) come out as the LLM reads them
            return embedding(torch.tensor(flat_ids, dtype=torch.long, device=device)).float()

        table = torch.zeros(vocab, embedding.weight.shape[1], dtype=torch.float32, device=device)
        if self.expand == 1 and int(lengths.sum()):
            owner = torch.repeat_interleave(torch.arange(vocab, device=device), lengths.to(device))
            table.index_add_(0, owner, embed([t for row in ids for t in row]))
            table /= lengths.clamp_min(1).to(device, table.dtype)[:, None]
        elif int(lengths.sum()):
            first = [i for i, row in enumerate(ids) if row]
            table[first] = embed([ids[i][0] for i in first])
        self.later = []
        for j in range(1, self.expand):
            having = [i for i, row in enumerate(ids) if len(row) > j]
            rows = embed([ids[i][j] for i in having]) if having else table.new_zeros(0, table.shape[1])
            self.later.append((torch.tensor(having, dtype=torch.long, device=device), rows))
        self.vocab_out = output.detach()  # a view of Whisper's weights, not a second parameter
        self.table = table
        self.pieces = lengths.clamp_min(1).to(device)
        self.allowed = lengths > 0 if bool((lengths > 0).any()) else torch.ones_like(lengths, dtype=torch.bool)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor):
        if self.table is None:
            raise ConfigError("token_bridge is not bound to its LLM yet (the model binds it when built)")
        dtype = self.table.dtype
        logits = features.to(self.vocab_out.dtype) @ self.vocab_out.T
        # Masked after the temperature: a -inf divided by a trained temperature would make its gradient NaN.
        logits = (logits.to(dtype) / self.log_temperature.exp().to(dtype)).masked_fill(
            ~self.allowed.to(logits.device), -math.inf)
        probs = F.softmax(logits, dim=-1)
        residual = self.residual(features.to(self.residual[1].weight.dtype)).to(dtype)
        out = probs @ self.table + residual
        if self.expand == 1:
            return mask_padding(out, lengths), lengths
        return self._expanded(out, probs, residual, lengths)

    def _expanded(self, first: torch.Tensor, probs: torch.Tensor, residual: torch.Tensor, lengths: torch.Tensor):
        """Each step's sub-positions (the most likely token's piece count), packed in order per clip."""
        steps = [first]
        for having, rows in self.later:  # plain tensors, not buffers: follow the model if it moved after binding
            weights = probs[..., having.to(probs.device)]
            mixed = (weights @ rows.to(probs.device)) / weights.sum(-1, keepdim=True).clamp_min(1e-12)
            steps.append(mixed + residual)
        stacked = torch.stack(steps, dim=2)  # (batch, steps, expand, dim)
        used = self.pieces[probs.argmax(-1)]  # (batch, steps)
        valid = torch.arange(self.expand, device=used.device) < used[..., None]
        valid &= (torch.arange(probs.shape[1], device=used.device) < lengths.to(used.device)[:, None])[..., None]
        counts = valid.flatten(1).sum(-1)
        out = stacked.new_zeros(len(stacked), max(1, int(counts.max())), stacked.shape[-1])
        for row in range(len(stacked)):
            out[row, : int(counts[row])] = stacked[row][valid[row]]
        return out, counts.to(lengths.device)
