"""Training data: manifests and datasets (`manifest`), task templates (`tasks`), mixing and batching (`mixing`)."""

from .manifest import ManifestData, Record, load_hf_dataset, read_manifest
from .mixing import DataConfig, MixedDataset, Source, SourceConfig, length_buckets
from .tasks import AUDIO_POSITION, TASKS, TrainingExample, build_example, prompt_message, register_task

__all__ = [
    "AUDIO_POSITION", "TASKS", "DataConfig", "ManifestData", "MixedDataset", "Record", "Source", "SourceConfig",
    "TrainingExample", "build_example", "length_buckets", "load_hf_dataset", "prompt_message", "read_manifest",
    "register_task",
]
