"""Data with stable sample ids, scenario builders and forget-set builders."""

from obliviate.data.dataset import Dataset
from obliviate.data.datasets import DATASETS, load_dataset, synthetic_dataset
from obliviate.data.scenarios import SCENARIOS, Experience, Stream, build_scenario

__all__ = [
    "DATASETS",
    "SCENARIOS",
    "Dataset",
    "Experience",
    "Stream",
    "build_scenario",
    "load_dataset",
    "synthetic_dataset",
]
