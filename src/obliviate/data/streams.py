"""Stream builders beyond the fixed task sequence: an online, task-free stream with optionally
blurry boundaries, and recurring tasks on a power-law schedule.

Both build on a *base* scenario from :mod:`obliviate.data.splits` (class-incremental by
default) and keep every sample's id. The online protocol's training recipe is
:func:`obliviate.training.online_config`.

References
----------
Aljundi, R., Kelchtermans, K. & Tuytelaars, T. (2019). Task-Free Continual Learning. CVPR 2019.
Bang, J., Kim, H., Yoo, Y., Ha, J.-W. & Choi, J. (2021). Rainbow Memory: Continual Learning with
a Memory of Diverse Samples. CVPR 2021 (the "blurry" class-incremental setup).
Anderson, J. R. & Schooler, L. J. (1991). Reflections of the environment in memory.
Psychological Science 2(6), 396-408 (need probability falls as a power law of time since last use).
Gandhi, A., Shah, R. S., Marupudi, V. & Varma, S. (2024). Natural Mitigation of Catastrophic
Interference: Continual Learning in Power-Law Learning Environments. arXiv:2401.10393.
Lesort, T., Ostapenko, O., Misra, D., Arefin, M. R., Rodriguez, P., Charlin, L. & Rish, I. (2022).
Challenging Common Assumptions about Catastrophic Forgetting. arXiv:2207.04543 (knowledge
accumulation when tasks re-occur).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from obliviate._rng import generator
from obliviate._validation import check_choice, check_number
from obliviate.data.dataset import Dataset
from obliviate.data.splits import (
    Stream,
    class_incremental,
    domain_permutation,
    domain_rotation,
    task_incremental,
)
from obliviate.errors import ObliviateError

BASES = {
    "class-incremental": class_incremental,
    "task-incremental": task_incremental,
    "domain-permutation": domain_permutation,
    "domain-rotation": domain_rotation,
}

ONLINE_BATCH_SIZE = 10
"""Batch size of the online protocol (small batches, e.g. Aljundi et al., 2019)."""


def online(
    train: Dataset,
    test: Dataset,
    *,
    n_experiences: int = 5,
    seed: int = 0,
    base: str = "class-incremental",
    blurry: float = 0.0,
) -> Stream:
    """A task-free stream: the base scenario's experiences without boundaries (``boundaries=False``).

    The loop still walks the experiences in order (they are the stream's segments and the rows
    of the accuracy matrix), but strategies that need task boundaries are rejected by
    :func:`obliviate.continual.loop.check_compatible`. Train it with one pass and small batches
    (:func:`obliviate.training.online_config`).

    ``blurry`` in [0, 1): blurry boundaries. Segment ``i`` (all but the last) receives
    ``round(blurry * n_{i+1})`` training samples drawn at random (seeded) from segment ``i + 1``,
    where ``n_{i+1}`` is that segment's size in the base scenario; the moved samples leave
    segment ``i + 1``. So each boundary is announced by a share of the next segment's data
    arriving early ("blurry" continual learning, Aljundi et al., 2019; Bang et al., 2021).
    Test sets are those of the base scenario.
    """
    check_choice("base", base, BASES, owner="online")
    check_number("blurry", blurry, low=0, high=1, high_open=True, owner="online")
    stream = BASES[base](train, test, n_experiences=n_experiences, seed=seed)
    trains = [e.train for e in stream]
    moved = []
    for i in range(1, len(trains)):
        n = len(stream[i].train)
        k = int(round(blurry * n))
        order = torch.randperm(n, generator=generator(seed, "blurry", i))
        moved.append(order[:k])
    for i in range(len(trains) - 1):
        nxt = stream[i + 1].train
        take = moved[i]
        trains[i] = Dataset.concat([trains[i], nxt.subset(take)])
        trains[i + 1] = _drop(trains[i + 1], nxt.ids[take])
    exps = tuple(replace(e, train=trains[i]) for i, e in enumerate(stream))
    name = "online" if blurry == 0 else f"online-blurry{blurry:g}"
    return replace(stream, name=name, experiences=exps, boundaries=False)


def _drop(data: Dataset, ids: torch.Tensor) -> Dataset:
    if ids.numel() == 0:
        return data
    return data.subset(~torch.isin(data.ids, ids))


# ---- recurring tasks on a power-law schedule --------------------------------------------------
def power_law_schedule(
    n_experiences: int, n_tasks: int, *, alpha: float = 1.0, seed: int = 0
) -> list[int]:
    """Which task each of ``n_experiences`` positions presents.

    Task ``k`` first appears at position ``floor(k * n_experiences / n_tasks)`` (so the tasks
    arrive in order, evenly spread). Every other position repeats an already introduced task
    other than the one just presented (unless it is the only one so far), chosen with
    probability proportional to ``(t - last_k) ** -alpha``, where ``last_k`` is the last
    position that presented task ``k``: the chance that a task recurs falls as a power law
    of the time since it was last needed (Anderson & Schooler, 1991; the power-law learning
    environments of Gandhi et al., 2024). ``alpha = 0`` repeats uniformly at random; larger
    ``alpha`` favours recent tasks. Deterministic given ``seed``.
    """
    check_number("n_tasks", n_tasks, low=1, integer=True, owner="recurring")
    check_number("n_experiences", n_experiences, low=1, integer=True, owner="recurring")
    check_number("alpha", alpha, low=0, owner="recurring")
    if n_tasks > n_experiences:
        raise ObliviateError(
            f"recurring: n_tasks={n_tasks} exceeds n_experiences={n_experiences}; every task must "
            "appear at least once, so use n_experiences >= n_tasks"
        )
    first = {(k * n_experiences) // n_tasks: k for k in range(n_tasks)}
    rng = np.random.default_rng(
        int(torch.randint(0, 2**62, (1,), generator=generator(seed, "power-law")))
    )
    last: dict[int, int] = {}
    schedule: list[int] = []
    for t in range(n_experiences):
        if t in first:
            task = first[t]
        else:
            seen = [k for k in sorted(last) if k != schedule[-1]] or [schedule[-1]]
            w = np.array([(t - last[k]) ** -alpha for k in seen], dtype=np.float64)
            task = seen[int(rng.choice(len(seen), p=w / w.sum()))]
        last[task] = t
        schedule.append(task)
    return schedule


def recurring(
    train: Dataset,
    test: Dataset,
    *,
    n_experiences: int = 20,
    seed: int = 0,
    n_tasks: int = 5,
    alpha: float = 1.0,
    base: str = "class-incremental",
) -> Stream:
    """A long stream of ``n_experiences`` over ``n_tasks`` distinct tasks that recur on
    :func:`power_law_schedule`.

    The distinct tasks are the base scenario's ``n_tasks`` experiences. An occurrence presents
    the task's whole training set again (the same sample ids: a recurring task brings back its
    data, as in the knowledge-accumulation setting of Lesort et al., 2022) and is evaluated on
    the task's test set.

    Evaluation: the loop's accuracy matrix stays ``n_experiences x n_experiences``; columns of
    occurrences of the same task are identical (same test set). :func:`distinct_tasks` maps
    each experience to its task, and :func:`task_accuracy` reduces the matrix to
    ``n_experiences x n_tasks`` (accuracy on every distinct task after each experience).
    On task-aware bases each occurrence keeps its task's id.
    """
    check_choice("base", base, BASES, owner="recurring")
    schedule = power_law_schedule(n_experiences, n_tasks, alpha=alpha, seed=seed)
    try:
        tasks = BASES[base](train, test, n_experiences=n_tasks, seed=seed)
    except ObliviateError as err:  # the base scenario speaks of n_experiences; here it is n_tasks
        raise ObliviateError(
            f"recurring: n_tasks={n_tasks} distinct tasks from {base!r}: {err}"
        ) from None
    exps = tuple(replace(tasks[k], index=i) for i, k in enumerate(schedule))
    return replace(tasks, name=f"recurring-{base}", experiences=exps)


def distinct_tasks(stream: Stream) -> list[int]:
    """For each experience, the index of the distinct task it presents (numbered by first
    appearance), found by its test set's ids."""
    keys: dict[tuple[int, ...], int] = {}
    return [keys.setdefault(tuple(e.test.ids.tolist()), len(keys)) for e in stream]


def task_accuracy(accuracy_matrix: np.ndarray, tasks: list[int]) -> np.ndarray:
    """Reduce an accuracy matrix ``[n_experiences, n_experiences]`` to ``[n_experiences, n_tasks]``:
    entry ``[i, k]`` is the accuracy on task ``k``'s test set after experience ``i``."""
    matrix = np.asarray(accuracy_matrix)
    first: dict[int, int] = {}
    for j, k in enumerate(tasks):
        first.setdefault(k, j)
    return matrix[:, np.asarray([first[k] for k in range(len(first))], dtype=np.int64)]


__all__ = [
    "distinct_tasks",
    "online",
    "power_law_schedule",
    "recurring",
    "task_accuracy",
]
