"""Shard graphs (SAFE): which shards' data each shard's model trains on.

Dukler et al. (2023) train one model per node of a *shard graph*: the model of shard ``k`` sees
the data of ``k`` and of its neighbours. Plain SISA is the graph without edges. A deletion of a
sample that lives in shard ``j`` must retrain every shard whose neighbourhood contains ``j``
(for an undirected graph: ``j`` and its neighbours), so denser graphs buy accuracy (each model
sees more data) with forgetting cost.

Graph specs (strings, so they fit a CLI flag and a benchmark grid):

``none``            no edges: plain SISA.
``ring:K``          shard ``k`` is joined to the ``K`` shards on each side (degree ``2K``).
``regular:D``       a random ``D``-regular graph drawn from the assignment seed (pairing model).
``cliques:C``       consecutive groups of ``C`` shards, fully connected inside (last may be smaller).
``edges:0-1,2-3``   the given undirected edges.

Notes
-----
SAFE also trains lightweight adapters (InCA) per shard and picks the graph by the expected
deletion cost; here every node trains a full model with the shared recipe, and the graph is given.

References
----------
Y. Dukler, B. Bowman, A. Achille, A. Golatkar, A. Swaminathan, S. Soatto. "SAFE: Machine
Unlearning With Shard Graphs." ICCV 2023.
"""

from __future__ import annotations

import numpy as np

from obliviate._rng import derive_seed
from obliviate.errors import ObliviateError

GRAPH_KINDS = ("none", "ring", "regular", "cliques", "edges")


def _bad(spec: str, why: str) -> ObliviateError:
    return ObliviateError(
        f"graph {spec!r}: {why}; use none, ring:K, regular:D, cliques:C or edges:0-1,1-2"
    )


def _int_arg(spec: str, arg: str, low: int) -> int:
    try:
        value = int(arg)
    except ValueError:
        raise _bad(spec, f"{arg!r} is not an integer") from None
    if value < low:
        raise _bad(spec, f"the argument must be >= {low}, got {value}")
    return value


def _regular(n: int, d: int, seed: int, spec: str) -> set[tuple[int, int]]:
    if d >= n or (n * d) % 2:
        raise _bad(spec, f"a {d}-regular graph on {n} shards needs d < n and n*d even")
    rng = np.random.default_rng(derive_seed(seed, "regular-graph", n, d))
    for _ in range(2000):  # pairing model with rejection of loops and multi-edges
        stubs = rng.permutation(np.repeat(np.arange(n), d))
        pairs = stubs.reshape(-1, 2)
        edges = {(int(min(a, b)), int(max(a, b))) for a, b in pairs}
        if len(edges) == len(pairs) and all(a != b for a, b in edges):
            return edges
    raise _bad(spec, f"could not draw a simple {d}-regular graph on {n} shards")


def edges_of(spec: str, n_shards: int, seed: int = 0) -> set[tuple[int, int]]:
    """The undirected edges ``(a, b)``, ``a < b``, that ``spec`` describes on ``n_shards`` nodes."""
    kind, _, arg = spec.strip().partition(":")
    if kind not in GRAPH_KINDS:
        raise _bad(spec, f"unknown kind {kind!r}")
    edges: set[tuple[int, int]] = set()
    if kind == "none":
        if arg:
            raise _bad(spec, "'none' takes no argument")
    elif kind == "ring":
        k = _int_arg(spec, arg, 1)
        for a in range(n_shards):
            for step in range(1, k + 1):
                b = (a + step) % n_shards
                if a != b:
                    edges.add((min(a, b), max(a, b)))
    elif kind == "regular":
        edges = _regular(n_shards, _int_arg(spec, arg, 1), seed, spec)
    elif kind == "cliques":
        c = _int_arg(spec, arg, 1)
        for start in range(0, n_shards, c):
            group = range(start, min(start + c, n_shards))
            edges |= {(a, b) for a in group for b in group if a < b}
    else:
        for item in filter(None, (p.strip() for p in arg.split(","))):
            a_txt, sep, b_txt = item.partition("-")
            if not sep:
                raise _bad(spec, f"edge {item!r} is not of the form A-B")
            a, b = _int_arg(spec, a_txt, 0), _int_arg(spec, b_txt, 0)
            if a >= n_shards or b >= n_shards or a == b:
                raise _bad(spec, f"edge {item!r} needs two different shards in 0..{n_shards - 1}")
            edges.add((min(a, b), max(a, b)))
    return edges


def neighbourhoods(spec: str, n_shards: int, seed: int = 0) -> list[tuple[int, ...]]:
    """For every shard ``k``: the sorted shards whose data ``k``'s model trains on (``k`` included).

    The graph is undirected, so it is also the set of shards a deletion in ``k`` retrains.
    """
    hoods: list[set[int]] = [{k} for k in range(n_shards)]
    for a, b in edges_of(spec, n_shards, seed):
        hoods[a].add(b)
        hoods[b].add(a)
    return [tuple(sorted(h)) for h in hoods]


def expected_cost(
    shard: np.ndarray, slice_: np.ndarray, hoods: list[tuple[int, ...]], n_slices: int
) -> float:
    """Expected retraining cost of deleting one uniformly drawn sample, as a fraction of the
    cost of training every shard from scratch.

    Stage ``r`` of shard ``k`` costs the number of samples in slice ``r`` of ``k``'s
    neighbourhood (see :mod:`obliviate.sharded.sisa`); deleting a sample of shard ``j``,
    slice ``s`` re-runs stages ``s..R-1`` of every shard whose neighbourhood holds ``j``.
    """
    n_shards = len(hoods)
    own = np.zeros((n_shards, n_slices))
    np.add.at(own, (shard, slice_), 1.0)
    stage = np.stack([own[list(h)].sum(axis=0) for h in hoods])  # [shard, slice] stage sizes
    total = stage.sum()
    if total == 0 or shard.size == 0:
        return 0.0
    tail = np.cumsum(stage[:, ::-1], axis=1)[:, ::-1]  # cost of stages s..R-1
    retrain_of = np.zeros((n_shards, n_slices))  # cost of deleting one sample in (j, s)
    for k, h in enumerate(hoods):
        for j in h:
            retrain_of[j] += tail[k]
    return float(retrain_of[shard, slice_].mean() / total)
