"""Provenance for every result: versions, git commit, host, time."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("obliviate", "torch", "numpy", "scipy", "scikit-learn")


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the checkout obliviate runs from (``None`` outside a git checkout);
    ``+dirty`` is appended when tracked files have uncommitted changes."""
    where = start or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def bits_context(*, device: str = "cpu", precision: str = "fp32") -> dict[str, Any]:
    """What besides the spec and the seed determines the bits of a run: the torch version,
    its intra-op thread count (reductions split differently across 1 and 2 threads, so trained
    weights differ in the last bits), the SIMD kernels torch dispatches to, the device type the
    run trained on (``device``: CPU and GPU kernels differ; on CUDA also the GPU's name) and the
    training precision (``precision``: fp32, bf16, fp16). Part of every provenance record and of
    every model-cache key: a cache filled under 2 threads, on a GPU or in bf16 is never used by
    a 1-thread CPU fp32 run. The same-bits promise holds for equal spec, seed and context."""
    import torch

    dev = torch.device(device)
    out = {
        "torch": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "device": dev.type,
        "precision": precision,
    }
    if dev.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(dev)
    return out


def provenance(*, device: str = "cpu", precision: str = "fp32", **extra: Any) -> dict[str, Any]:
    """A provenance record: versions, git commit, platform, UTC time, the numeric context
    (:func:`bits_context` of the run's ``device`` and ``precision``), plus ``extra`` (e.g.
    seed)."""
    return {
        "versions": versions(),
        "bits_context": bits_context(device=device, precision=precision),
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }
