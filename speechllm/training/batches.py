"""Training batches: examples -> padded student inputs, and for distillation the matching text-only
teacher inputs, in which every clip's placeholder run is replaced by the tokens of its transcript."""

from __future__ import annotations

from typing import Sequence

import torch

from ..audio import load_conversation_audio
from ..errors import DataError
from ..models.processing import IGNORE_INDEX, EncodedConversation, SpeechLLMProcessor


def teacher_encoding(processor: SpeechLLMProcessor, encoded: EncodedConversation, transcripts: Sequence[str]):
    """The same conversation with each clip's placeholder positions replaced by its transcript's tokens."""
    if transcripts is None or len(transcripts) != len(encoded.audio) or any(t is None for t in transcripts):
        raise DataError("distillation needs a transcript for every audio clip of every training example")
    ids, labels, position, clip = [], [], 0, 0
    while position < len(encoded.input_ids):
        if encoded.input_ids[position] == processor.audio_token_id:
            count = processor.audio_token_count(len(encoded.audio[clip]))
            text_ids = processor.tokenizer(transcripts[clip], add_special_tokens=False).input_ids
            ids += text_ids
            labels += [IGNORE_INDEX] * len(text_ids)
            position += count
            clip += 1
        else:
            ids.append(encoded.input_ids[position])
            labels.append(encoded.labels[position])
            position += 1
    return EncodedConversation(ids, labels, [])


def collate_examples(processor: SpeechLLMProcessor, examples, with_teacher: bool = False) -> dict:
    """TrainingExamples -> {"student": batch, "teacher": batch or None, "tokens": answer token count}."""
    encoded = [processor.encode(load_conversation_audio(e.conversation, **processor.audio_limits),
                                add_generation_prompt=False) for e in examples]
    student = processor.collate(encoded, padding_side="right")
    teacher = None
    if with_teacher:
        teacher_rows = [teacher_encoding(processor, enc, e.transcripts) for enc, e in zip(encoded, examples)]
        teacher = processor.collate(teacher_rows, padding_side="right")
    tokens = int((student["labels"] != IGNORE_INDEX).sum())
    return {"student": student, "teacher": teacher, "tokens": tokens}


def to_device(batch: dict | None, device) -> dict | None:
    if batch is None:
        return None
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class StepBatches(torch.utils.data.Dataset):
    """Item `step`: the collated micro-batches of one optimiser step (`plan[step]` holds their dataset indices).
    Through a DataLoader with workers, upcoming steps' audio is read and collated while the model trains."""

    def __init__(self, processor: SpeechLLMProcessor, dataset, plan: list[list[list[int]]], with_teacher: bool):
        self.processor, self.dataset, self.plan, self.with_teacher = processor, dataset, plan, with_teacher

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, step: int) -> list[dict]:
        return [collate_examples(self.processor, [self.dataset[i] for i in rows], self.with_teacher)
                for rows in self.plan[step]]


def as_is(item):
    """A DataLoader collate_fn that keeps an item as built (module-level, so worker processes can pickle it)."""
    return item


def step_loader(steps: StepBatches, start: int, num_workers: int) -> torch.utils.data.DataLoader:
    """Steps `start`, start+1, ... in order; `num_workers` processes prepare them ahead (0: in this process)."""
    return torch.utils.data.DataLoader(
        steps, batch_size=None, sampler=range(start, len(steps)), collate_fn=as_is, num_workers=num_workers,
        prefetch_factor=2 if num_workers else None,
    )
