"""Lifecycle streams: learning and deletion requests interleaved in one stream of events.

A lifecycle stream is a scenario (:mod:`obliviate.data.scenarios`) plus a deletion schedule:
the events ``Learn(experience)`` in the scenario's order, with ``Forget(request)`` events placed
after chosen experiences. Every Forget is resolved to sample ids *when the stream is built*
(deterministically, from the seed), against exactly what has been learned and not yet deleted
at that point, so a schedule that names ids never learned before its position fails up front
with one line, before any training.

Schedule syntax (:func:`parse_schedule`): ``AFTER:REQUEST`` items separated by ``;``, where
``AFTER`` is the number of experiences learned so far (1..n) and ``REQUEST`` is

``random:K`` / ``random:P%``     K samples / P percent of the samples learned so far and not yet
                                 deleted (seeded draw);
``class:C``                      every learned, not yet deleted sample of class C
                                 (``class:1,7`` for several);
``subclass:C:K`` / ``subclass:C:P%``  K samples / P percent of them;
``source:FILE``                  the ids listed in FILE (:func:`obliviate.data.forget_sets.read_id_file`);
``ids:1,2,3``                    the ids given;
``experience:E:K`` / ``experience:E:P%``  K samples / P percent of experience ``E``'s training
                                 rows (``E`` 0-based, as the accuracy matrix's columns; rows
                                 already deleted are not drawn again);
``experience-class:E``           every remaining sample of the first class of experience ``E``
                                 (in the stream's class order): "an early class" whatever the
                                 seed's class order.

The first five are the forget-set specs of ``obliviate forget --forget``
(:func:`obliviate.data.forget_sets.forget_ids`, the same parser), applied to the rows learned so
far. Example: ``"2:random:5%; 3:experience-class:0; 4:random:5%"``.

A generated schedule (:func:`generate_schedule`) places one Forget after every ``every``
experiences, of a kind drawn (seeded) from ``kinds``: ``random`` (``rate`` of the samples seen),
``experience`` (``rate`` of a random earlier experience) or ``class`` (the first class of a
random earlier experience not yet deleted that way).

Deleted samples are gone for good: a later experience that would bring one of them back
(recurring streams) comes without it (:meth:`LifecycleStream.stream_without`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from obliviate._rng import generator
from obliviate._validation import check_number
from obliviate.data.dataset import Dataset
from obliviate.data.forget_sets import forget_ids
from obliviate.data.splits import Stream
from obliviate.errors import ObliviateError

REQUEST_HELP = (
    "use AFTER:REQUEST items separated by ';' where REQUEST is random:K, random:P%, class:C, "
    "subclass:C:K, source:FILE, ids:1,2,3, experience:E:P% or experience-class:E"
)

GENERATED_KINDS = ("random", "experience", "class")
"""Kinds a generated schedule draws from (:func:`generate_schedule`)."""


@dataclass(frozen=True)
class Learn:
    """Learn experience ``experience`` (0-based index into the scenario's stream)."""

    experience: int


@dataclass(frozen=True, eq=False)
class Forget:
    """A deletion request placed after ``after`` experiences have been learned.

    ``request``: the request as written (e.g. ``"random:5%"``); ``ids``: the sample ids it
    names, resolved when the stream was built (int64 ``[K]``, sorted, unique, every one learned
    before this point and not deleted by an earlier Forget).
    """

    after: int
    request: str
    ids: Tensor


Event = Learn | Forget


@dataclass(frozen=True, eq=False)
class LifecycleStream:
    """A scenario's stream and its events (``Learn`` in order, ``Forget`` where scheduled)."""

    stream: Stream
    events: tuple[Event, ...]
    seed: int = 0

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.events)

    def deleted_before(self, position: int) -> Tensor:
        """The ids deleted by the Forget events among ``events[:position]`` (sorted, unique)."""
        parts = [e.ids for e in self.events[:position] if isinstance(e, Forget)]
        if not parts:
            return torch.empty(0, dtype=torch.int64)
        return torch.unique(torch.cat(parts))

    def all_deleted(self) -> Tensor:
        """Every id any Forget event deletes (sorted, unique)."""
        return self.deleted_before(len(self.events))

    def stream_without(self, ids: Tensor) -> Stream:
        """The scenario's stream with the training rows of ``ids`` removed from every experience
        (test sets unchanged): what a learner that never received them would have seen."""
        return without_ids(self.stream, ids)


def without_ids(stream: Stream, ids: Tensor) -> Stream:
    """``stream`` with the training rows whose id is in ``ids`` dropped from every experience."""
    if ids.numel() == 0:
        return stream
    exps = tuple(replace(e, train=e.train.subset(~torch.isin(e.train.ids, ids))) for e in stream)
    return replace(stream, experiences=exps)


# ---- schedules ---------------------------------------------------------------------------------


def parse_schedule(text: str, n_experiences: int) -> list[tuple[int, str]]:
    """``"2:random:5%; 3:class:1"`` -> ``[(2, "random:5%"), (3, "class:1")]``, checked:
    ``AFTER`` must be an integer in 1..``n_experiences``, items in non-decreasing order."""
    if not isinstance(text, str):
        raise ObliviateError(f"schedule must be a string like '2:random:5%', got {text!r}")
    out: list[tuple[int, str]] = []
    for item in (p.strip() for p in text.split(";")):
        if not item:
            continue
        after_text, sep, request = item.partition(":")
        if not sep or not request.strip():
            raise ObliviateError(f"schedule item {item!r} is not AFTER:REQUEST; {REQUEST_HELP}")
        try:
            after = int(after_text)
        except ValueError:
            raise ObliviateError(
                f"schedule item {item!r}: AFTER {after_text!r} is not an integer (the number of "
                f"experiences learned before the deletion, 1..{n_experiences})"
            ) from None
        if not 1 <= after <= n_experiences:
            raise ObliviateError(
                f"schedule item {item!r}: AFTER must be in 1..{n_experiences} (the number of "
                f"experiences learned before the deletion), got {after}"
            )
        if out and after < out[-1][0]:
            raise ObliviateError(
                f"schedule item {item!r} comes after one at {out[-1][0]}; list items in stream order"
            )
        out.append((after, request.strip()))
    if not out:
        raise ObliviateError(
            f"schedule {text!r} has no item; give AFTER:REQUEST items like '2:random:5%' "
            "(or leave the schedule out for a stream without deletions)"
        )
    return out


def generate_schedule(
    stream: Stream,
    *,
    rate: float,
    kinds: tuple[str, ...] = ("random",),
    every: int = 1,
    seed: int = 0,
) -> list[tuple[int, str]]:
    """One Forget after every ``every`` experiences (after experience counts ``every``,
    ``2 * every``, ... up to ``len(stream)``), its kind drawn uniformly (seeded) from ``kinds``:

    ``random``: ``rate`` of the samples learned so far (``random:P%``); ``experience``: ``rate``
    of a random earlier experience (``experience:E:P%``); ``class``: the first class of a random
    earlier experience whose first class was not deleted yet (``experience-class:E``; falls back
    to ``random`` once every one is). ``rate`` in (0, 1). Deterministic given ``seed``.
    """
    check_number("deletion_rate", rate, low=0, high=1, low_open=True, high_open=True)
    check_number("deletion_every", every, low=1, integer=True)
    bad = [k for k in kinds if k not in GENERATED_KINDS]
    if bad or not kinds:
        raise ObliviateError(
            f"deletion_kinds: unknown kind {bad[0] if bad else '(none)'!r}; "
            f"valid: {', '.join(GENERATED_KINDS)}"
        )
    pct = f"{100 * rate:g}%"
    gen = generator(seed, "lifecycle-schedule")
    used_classes: set[int] = set()
    out: list[tuple[int, str]] = []
    for after in range(every, len(stream) + 1, every):
        kind = kinds[int(torch.randint(len(kinds), (1,), generator=gen))]
        e = int(torch.randint(after, (1,), generator=gen))
        if kind == "class":
            free = [i for i in range(after) if i not in used_classes]
            if free:
                e = free[int(torch.randint(len(free), (1,), generator=gen))]
                used_classes.add(e)
                out.append((after, f"experience-class:{e}"))
                continue
            kind = "random"
        out.append((after, f"random:{pct}" if kind == "random" else f"experience:{e}:{pct}"))
    return out


# ---- building ----------------------------------------------------------------------------------


def _resolve(
    request: str, after: int, stream: Stream, seen: Dataset, deleted: Tensor, seed: int, k: int
) -> Tensor:
    """The ids ``request`` names at its position (validated: learned and not yet deleted)."""
    where = f"schedule item '{after}:{request}'"
    remaining = seen.subset(~torch.isin(seen.ids, deleted)) if deleted.numel() else seen
    kind, _, rest = request.partition(":")
    kind = kind.strip().lower()
    try:
        if kind in ("experience", "experience-class"):
            e_text, _, amount = rest.partition(":")
            try:
                e = int(e_text)
            except ValueError:
                raise ObliviateError(f"experience {e_text!r} is not an integer") from None
            if not 0 <= e < after:
                raise ObliviateError(
                    f"experience {e} has not been learned after {after} experience(s) "
                    f"(learned: 0..{after - 1})"
                )
            exp_train = stream[e].train
            rows = exp_train.subset(~torch.isin(exp_train.ids, deleted))
            if kind == "experience-class":
                if amount:
                    raise ObliviateError("experience-class takes one experience index, E")
                c = int(stream[e].classes[0])
                ids = forget_ids(rows, f"class:{c}", seed=seed) if len(rows) else rows.ids
            else:
                if not amount:
                    raise ObliviateError("experience needs an amount: experience:E:K or :P%")
                ids = forget_ids(rows, f"random:{amount}", seed=seed * 1_000_003 + k)
        elif kind in ("random", "subclass"):
            # seeded per event, so two random requests of one stream draw different samples
            ids = forget_ids(remaining, request, seed=seed * 1_000_003 + k)
        else:
            ids = forget_ids(remaining, request, seed=seed)
    except ObliviateError as exc:
        msg = str(exc).removeprefix(f"forget spec {request!r}: ")
        raise ObliviateError(f"{where}: {msg}") from None
    ids = torch.unique(ids)
    if ids.numel() == 0:
        raise ObliviateError(
            f"{where} selects no sample learned and not yet deleted at that point; "
            "drop it or name samples of the experiences learned before it"
        )
    again = ids[torch.isin(ids, deleted)]
    if again.numel():
        raise ObliviateError(
            f"{where} names {again.numel()} id(s) already deleted by an earlier request "
            f"(e.g. {int(again[0])}); name each id once"
        )
    never = ids[~torch.isin(ids, seen.ids)]
    if never.numel():
        raise ObliviateError(
            f"{where} names {never.numel()} id(s) never learned before that point "
            f"(e.g. {int(never[0])}); move the request after the experience that brings them"
        )
    if ids.numel() >= len(remaining):
        raise ObliviateError(
            f"{where} deletes every sample learned so far ({len(remaining)}); forget fewer"
        )
    return ids


def build_lifecycle(
    stream: Stream, schedule: list[tuple[int, str]] | str, *, seed: int = 0
) -> LifecycleStream:
    """The lifecycle stream of ``stream`` with ``schedule`` (:func:`parse_schedule`'s text or
    its list of ``(after, request)``): every Forget resolved to ids and validated in order.

    Raises :class:`~obliviate.errors.ObliviateError` (one line) for a bad schedule item, a
    request that names ids never learned before it, ids deleted twice, or a request selecting
    nothing. Deterministic: the same stream, schedule and ``seed`` give the same ids.
    """
    if isinstance(schedule, str):
        schedule = parse_schedule(schedule, len(stream))
    by_after: dict[int, list[str]] = {}
    for after, request in schedule:
        check_number("AFTER", after, low=1, high=len(stream), integer=True)
        by_after.setdefault(int(after), []).append(request)
    events: list[Event] = []
    deleted = torch.empty(0, dtype=torch.int64)
    seen_parts: list[Dataset] = []
    seen = stream[0].train.subset(torch.zeros(0, dtype=torch.int64))
    k = 0
    for i, exp in enumerate(stream):
        events.append(Learn(i))
        new = exp.train
        # a recurring experience brings back ids already seen: keep one row of each
        new = new.subset(~torch.isin(new.ids, seen.ids))
        seen_parts.append(new)
        seen = Dataset.concat(seen_parts)
        for request in by_after.get(i + 1, []):
            ids = _resolve(request, i + 1, stream, seen, deleted, seed, k)
            events.append(Forget(i + 1, request, ids))
            deleted = torch.unique(torch.cat([deleted, ids]))
            k += 1
    return LifecycleStream(stream=stream, events=tuple(events), seed=seed)


__all__ = [
    "GENERATED_KINDS",
    "REQUEST_HELP",
    "Event",
    "Forget",
    "Learn",
    "LifecycleStream",
    "build_lifecycle",
    "generate_schedule",
    "parse_schedule",
    "without_ids",
]
