"""Data with stable sample ids, scenario builders and forget-set builders."""

from obliviate.data.dataset import Dataset
from obliviate.data.datasets import (
    DATASETS,
    Standardization,
    fit_standardization,
    load_dataset,
    loader_standardization,
    synthetic_dataset,
)
from obliviate.data.scenarios import SCENARIOS, Experience, Stream, build_scenario

__all__ = [
    "DATASETS",
    "SCENARIOS",
    "Dataset",
    "Experience",
    "Standardization",
    "Stream",
    "build_scenario",
    "fit_standardization",
    "load_dataset",
    "loader_standardization",
    "synthetic_dataset",
]
