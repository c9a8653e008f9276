"""Training data: manifests (`manifest`, read through the record layer `speechllm.records`) and local Hugging Face
datasets (`hf_datasets`), task templates (`tasks`), mixing and batching (`mixing`), synthetic speech (`synth`) and
self-generated targets (`targets`)."""

from .hf_datasets import load_hf_dataset
from .manifest import ManifestData, Record, read_manifest
from .mixing import DataConfig, MixedDataset, Source, SourceConfig, length_buckets
from .tasks import TASKS, TrainingExample, build_example, register_task

__all__ = [
    "TASKS", "DataConfig", "ManifestData", "MixedDataset", "Record", "Source", "SourceConfig", "TrainingExample",
    "build_example", "length_buckets", "load_hf_dataset", "read_manifest", "register_task",
]
