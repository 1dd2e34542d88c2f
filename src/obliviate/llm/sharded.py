"""Exact deletion of fine-tuning data from a causal LM: sharded adapters on a frozen base (SAFE).

The fine-tuning set is split into ``n_shards`` shards x ``n_slices`` slices by a seeded hash of
each id (:func:`obliviate.sharded.assign`). Shard ``k`` owns one adapter -- a copy of the top
``top_k`` blocks (``adapter="top"``) or rank-r LoRA on them (``adapter="lora"``) -- over one
frozen base, trained on its neighbourhood's data (``graph``, :func:`obliviate.sharded.neighbourhoods`)
slice by slice, with a checkpoint after each slice (SISA). Deleting ids retrains only the shards
whose neighbourhood holds them, from the last checkpoint that never saw them; the result is
bitwise the adapters trained without those ids (tested).

The bottom ``n_blocks - top_k`` blocks never change, so their output is computed once per
sequence (:class:`obliviate.llm.models.PrefixCache`) and reused by every shard, slice,
retraining and prediction; :meth:`AdapterStore.status` reports how often it was reused.

Prediction combines the shards' next-token distributions: ``combine="mean"`` averages the
probabilities, ``log p(t) = log (1/S) sum_k p_k(t)`` (SISA's mean of softmax); ``"logmean"``
averages log-probabilities and renormalises (a product of experts).

The store is a folder: ``ledger.sqlite`` (:class:`obliviate.sharded.ledger.Ledger`: samples,
checkpoints, requests, hash-chained events), ``checkpoints/<sha256>.pt`` (adapter states,
content-addressed, written atomically), ``data.jsonl`` (the fine-tuning items), and ``base/``
(the frozen base, unless its folder was given). Every completed request yields a receipt
(:func:`obliviate.sharded.receipts.build_receipt`). A process killed at any point leaves the
ledger before or after a transaction; :meth:`AdapterStore.resume` finishes the work.

Notes
-----
SAFE trains InCA adapters on a frozen vision backbone and chooses the graph by expected cost;
here the adapters are transformer blocks or LoRA on a causal LM and the graph is given. The
receipts' ``removed_accuracy_*`` figures are the ensemble's teacher-forced token accuracy on the
removed items (not classification accuracy). Each stage trains ``n_epochs x |slice r|``
sequences drawn epoch by epoch from slices ``0..r`` with a fresh AdamW (as
:mod:`obliviate.sharded.sisa`). The prefix cache lives in memory (recomputed by a new process).

References
----------
Bourtoule et al., 2021, "Machine Unlearning" (SISA); Dukler et al., 2023, "SAFE: Machine
Unlearning With Shard Graphs" (ICCV).
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import io
import json
import math
import os
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from obliviate._rng import derive_seed, generator
from obliviate.errors import ObliviateError
from obliviate.io import atomic_write_text
from obliviate.llm.data import QAData, dump_jsonl, load_jsonl
from obliviate.llm.metrics import TokenScores, scores_from_logprobs
from obliviate.llm.models import LM, PrefixCache, blocks, forward_logits, load_lm, make_trainable
from obliviate.llm.train import Encoded, encode, mean_token_nll
from obliviate.sharded import assign, neighbourhoods
from obliviate.sharded import receipts as rc
from obliviate.sharded.completion import checkpoints_after, complete
from obliviate.sharded.ledger import Ledger, ids_hash

LEDGER_FILE = "ledger.sqlite"
FORMAT = "obliviate-llm-adapter-store/1"
FAILPOINT_ENV = "OBLIVIATE_LLM_FAILPOINT"
ADAPTERS = ("top", "lora")
COMBINES = ("mean", "logmean")
_hits: dict[str, int] = {}


def _failpoint(name: str) -> None:
    """SIGKILL this process the N-th time ``name`` is reached when ``$OBLIVIATE_LLM_FAILPOINT``
    is ``name:N`` (crash tests)."""
    target, _, count = os.environ.get(FAILPOINT_ENV, "").partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class SafeConfig:
    """Hyperparameters of a sharded-adapter store (all keyword, validated).

    ``n_epochs`` / ``lr`` / ``batch_size`` / ``seed`` are the per-shard fine-tuning recipe
    (AdamW); ``top_k`` the number of top blocks the adapter covers; ``lora_rank`` for LoRA;
    ``combine`` how shards' next-token distributions are combined; ``reuse_frozen=False`` runs
    the frozen blocks on every forward pass instead of replaying their cached output (to
    measure the saving; the adapters then differ in float rounding, not in what they saw);
    ``group_by_entity`` assigns shards and slices by a hash of each item's entity instead of its
    id, so a request that forgets a person retrains one shard.
    """

    n_shards: int = 4
    n_slices: int = 2
    graph: str = "none"
    adapter: str = "top"
    top_k: int = 1
    lora_rank: int = 4
    n_epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 4
    seed: int = 0
    combine: str = "mean"
    reuse_frozen: bool = True
    group_by_entity: bool = False

    def __post_init__(self) -> None:
        if self.n_shards < 1 or self.n_slices < 1:
            raise ObliviateError(
                f"n_shards={self.n_shards}, n_slices={self.n_slices}: both must be >= 1"
            )
        if self.adapter not in ADAPTERS:
            raise ObliviateError(f"adapter {self.adapter!r}: choose one of {ADAPTERS}")
        if self.combine not in COMBINES:
            raise ObliviateError(f"combine {self.combine!r}: choose one of {COMBINES}")
        if self.top_k < 1:
            raise ObliviateError(f"top_k={self.top_k}: must be >= 1")
        if self.n_epochs < 0 or not self.lr > 0 or self.batch_size < 1:
            raise ObliviateError(
                f"n_epochs={self.n_epochs} >= 0, lr={self.lr} > 0, batch_size={self.batch_size} >= 1 required"
            )
        neighbourhoods(self.graph, self.n_shards, self.seed)  # a bad graph spec raises


# ---- checkpoint files ----------------------------------------------------------------------
def _serialize(state: dict[str, torch.Tensor]) -> bytes:
    plain = {k: state[k].detach().to("cpu").contiguous().clone() for k in sorted(state)}
    buf = io.BytesIO()
    torch.save(plain, buf)
    return buf.getvalue()


def _ckpt_path(store: Path, sha: str) -> Path:
    return store / "checkpoints" / f"{sha}.pt"


def _write_checkpoint(store: Path, state: dict[str, torch.Tensor], persist: bool = True) -> str:
    data = _serialize(state)
    sha = hashlib.sha256(data).hexdigest()
    final = _ckpt_path(store, sha)
    if not persist or final.exists():
        return sha
    tmp = final.with_name(f".tmp-{os.getpid()}-{sha[:16]}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _failpoint("checkpoint_written")
    return sha


def _read_checkpoint(store: Path, sha: str) -> dict[str, torch.Tensor]:
    path = _ckpt_path(store, sha)
    if not path.exists():
        raise ObliviateError(f"adapter checkpoint {sha[:16]}… is missing from {path.parent}")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha:
        raise ObliviateError(f"adapter checkpoint {path.name} is corrupted (hash mismatch)")
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


@contextmanager
def _lock(store: Path) -> Iterator[None]:
    fd = os.open(store / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _lock_held(store: Path) -> bool:
    """Whether a process holds the store's lock now, i.e. is working on it (training, a
    deletion, a resume). A process killed with SIGKILL releases its lock with it, so unfinished
    work whose lock is free was interrupted."""
    try:
        fd = os.open(store / ".lock", os.O_RDONLY)
    except OSError:  # no lock file yet: nobody has worked on the store
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def state_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over a model's parameters and buffers (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ---- the store -----------------------------------------------------------------------------
class AdapterStore:
    """Sharded adapters over one frozen base LM, with a ledger, receipts, verify and resume.

    Create with :meth:`train`; open with ``AdapterStore(path)`` (loads the base from the store,
    or pass ``base=`` the same model, checked by fingerprint).
    """

    def __init__(self, path: str | Path, *, base: LM | None = None, device: str = "cpu") -> None:
        self.path = Path(path)
        if not (self.path / LEDGER_FILE).is_file():
            raise ObliviateError(
                f"{str(self.path)!r} is not an adapter store; create one with `obliviate llm sharded train`"
            )
        self.ledger = Ledger(self.path / LEDGER_FILE)
        if self.ledger.get_meta("format") != FORMAT:
            raise ObliviateError(f"{str(self.path)!r} is not an LLM adapter store")
        self.config = SafeConfig(**self.ledger.get_meta("config"))
        self.data = load_jsonl(self.path / "data.jsonl")
        info = self.ledger.get_meta("base")
        if base is None:
            folder = Path(info["path"])
            base = load_lm(folder if folder.is_absolute() else self.path / folder, device=device)
        if state_fingerprint(base.model) != info["sha256"]:
            raise ObliviateError(
                "the base model given does not match the one this store was trained on "
                "(fingerprint mismatch); pass the original base"
            )
        work = LM(copy.deepcopy(base.model), base.tokenizer, base.device)
        make_trainable(
            work,
            mode=self.config.adapter,
            top_k=self.config.top_k,
            lora_rank=self.config.lora_rank,
            seed=self.config.seed,
        )
        n_blocks = len(blocks(work.model))
        if self.config.top_k > n_blocks:
            raise ObliviateError(f"top_k={self.config.top_k}: the base has {n_blocks} blocks")
        if self.config.top_k < n_blocks and self.config.reuse_frozen:
            work.prefix = PrefixCache(n_blocks - self.config.top_k)
        self.lm = work
        self.names = sorted(n for n, p in work.model.named_parameters() if p.requires_grad)
        self._top_init = self._state() if self.config.adapter == "top" else {}
        self.encoded = {e.id: e for e in encode(work, self.data.items)}
        self.hoods = neighbourhoods(self.config.graph, self.config.n_shards, self.config.seed)
        self.timing: dict[str, float] = {}

    def close(self) -> None:
        self.ledger.close()

    def __enter__(self) -> AdapterStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- creation ------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        path: str | Path,
        *,
        base: LM,
        data: QAData,
        config: SafeConfig,
        base_path: str | Path | None = None,
        exclude_ids: Sequence[int] = (),
    ) -> AdapterStore:
        """Create a store at ``path`` and train every shard's adapter on ``data``'s items
        (``exclude_ids`` left out as if they never existed). ``base_path``: the base's folder
        (else the base is saved into the store)."""
        path = Path(path)
        if (path / LEDGER_FILE).exists():
            raise ObliviateError(f"{str(path)!r} is already an adapter store; choose a new folder")
        if path.exists() and any(
            p.name not in ("checkpoints", ".lock", "base") for p in path.iterdir()
        ):
            raise ObliviateError(f"{str(path)!r} exists and is not empty; choose a new folder")
        n_blocks = len(blocks(base.model))  # checked before anything is written
        if config.top_k > n_blocks:
            raise ObliviateError(
                f"top_k={config.top_k}: choose 1..{n_blocks} (the model has {n_blocks} blocks)"
            )
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        if base_path is None:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            saver: Any = base.model
            saver.save_pretrained(path / "base")
            base.tokenizer.save_pretrained(path / "base")
            base_ref = "base"
        else:
            base_ref = str(Path(base_path).resolve())
        atomic_write_text(path / "data.jsonl", dump_jsonl(data))
        ids = np.asarray(sorted(data.ids()), dtype=np.int64)
        excluded = np.unique(np.asarray(list(exclude_ids), dtype=np.int64))
        unknown = sorted(set(excluded.tolist()) - set(ids.tolist()))
        if unknown:
            raise ObliviateError(f"exclude ids never in the data: {unknown[:10]}")
        ids = ids[~np.isin(ids, excluded)]
        if config.group_by_entity:  # every fact of an entity in one shard and slice
            entity = {it.id: it.entity for it in data.items}
            keys = np.asarray(
                [derive_seed(0, "llm-entity", entity[int(i)]) for i in ids], dtype=np.int64
            )
            shard, slice_ = assign(keys, config.n_shards, config.n_slices, config.seed)
        else:
            shard, slice_ = assign(ids, config.n_shards, config.n_slices, config.seed)
        tmp = path / "ledger.tmp"
        for suffix in ("", "-wal", "-shm"):
            Path(str(tmp) + suffix).unlink(missing_ok=True)
        ledger = Ledger.create(tmp)
        ledger.db.execute("UPDATE meta SET value = ? WHERE key = 'format'", (json.dumps(FORMAT),))
        with ledger.transaction():
            ledger.set_meta("config", asdict(config))
            ledger.set_meta("base", {"path": base_ref, "sha256": state_fingerprint(base.model)})
            ledger.set_meta(
                "data_sha256", hashlib.sha256((path / "data.jsonl").read_bytes()).hexdigest()
            )
            ledger.set_meta("state", "training")
            ledger.set_meta("version", 0)
            ledger.add_samples(ids, shard, slice_)
            ledger.append_event(
                "store_created",
                {
                    "config": asdict(config),
                    "n_samples": int(ids.size),
                    "samples_sha256": ids_hash(ids),
                    "excluded_sha256": ids_hash(excluded),
                },
            )
        ledger.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        ledger.close()
        os.replace(tmp, path / LEDGER_FILE)
        store = cls(path, base=base)
        store.resume()
        return store

    # ---- training ------------------------------------------------------------------------
    def _slices(self, samples: np.ndarray, shard: int) -> tuple[np.ndarray, ...]:
        rows = samples[np.isin(samples[:, 1], self.hoods[shard])]
        return tuple(np.sort(rows[rows[:, 2] == r, 0]) for r in range(self.config.n_slices))

    def _initial(self, shard: int) -> dict[str, torch.Tensor]:
        params = dict(self.lm.model.named_parameters())
        if self.config.adapter == "top":  # every shard starts from the base's top blocks
            return {n: t.clone() for n, t in self._top_init.items()}
        gen = generator(self.config.seed, "safe-lora-init", shard)
        out = {}
        for n in self.names:
            t = torch.empty_like(params[n], device="cpu")
            if "lora_A" in n:
                torch.nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=gen)
            else:
                t.zero_()
            out[n] = t
        return out

    def _load(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.lm.model.named_parameters())
        with torch.no_grad():
            for n in self.names:
                params[n].copy_(state[n])

    def _state(self) -> dict[str, torch.Tensor]:
        params = dict(self.lm.model.named_parameters())
        return {n: params[n].detach().to("cpu").clone() for n in self.names}

    def _train_chain(
        self,
        shard: int,
        start: int,
        slices: tuple[np.ndarray, ...],
        base_sha: str | None,
        persist: bool = True,
    ) -> list[dict[str, Any]]:
        """Stages ``start..R-1`` of one shard from checkpoint ``base_sha`` (None: initial)."""
        cfg = self.config
        self._load(
            self._initial(shard) if base_sha is None else _read_checkpoint(self.path, base_sha)
        )
        params = [p for n, p in self.lm.model.named_parameters() if p.requires_grad]
        rows = []
        for r in range(start, cfg.n_slices):
            t0 = time.perf_counter()
            ids = np.sort(np.concatenate(slices[: r + 1]))
            seqs = [self.encoded[int(i)] for i in ids]
            left = cfg.n_epochs * len(slices[r])
            if left > 0 and seqs:
                opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
                gen = generator(cfg.seed, "safe-stage", shard, r)
                self.lm.model.train()
                while left > 0:
                    order = torch.randperm(len(seqs), generator=gen).tolist()
                    for b in range(0, len(order), cfg.batch_size):
                        batch = [seqs[i] for i in order[b : b + cfg.batch_size]][:left]
                        if not batch:
                            break
                        opt.zero_grad(set_to_none=True)
                        mean_token_nll(self.lm, batch).backward()
                        opt.step()
                        left -= len(batch)
                        if left <= 0:
                            break
                self.lm.model.eval()
            sha = _write_checkpoint(self.path, self._state(), persist)
            rows.append(
                {
                    "shard": shard,
                    "slice": r,
                    "sha256": sha,
                    "ids_hash": ids_hash(ids),
                    "n_ids": int(ids.size),
                    "seconds": time.perf_counter() - t0,
                }
            )
        return rows

    def resume(self) -> list[dict[str, Any]]:
        """Finish what a killed process left: the initial training, running requests."""
        with _lock(self.path):
            for tmp in (self.path / "checkpoints").glob(".tmp-*"):
                tmp.unlink(missing_ok=True)
            if self.ledger.get_meta("state") == "training":
                samples = self.ledger.samples(("active", "pending"))
                t0 = time.perf_counter()
                rows = [
                    row
                    for k in range(self.config.n_shards)
                    for row in self._train_chain(k, 0, self._slices(samples, k), None)
                ]
                self.timing["train_seconds"] = time.perf_counter() - t0
                _failpoint("before_commit")
                with self.ledger.transaction():
                    self.ledger.put_checkpoints(0, rows)
                    self.ledger.set_meta("state", "ready")
                    self.ledger.set_meta("train_seconds", self.timing["train_seconds"])
                    self.ledger.append_event(
                        "trained",
                        {"checkpoints": {f"{r['shard']}/{r['slice']}": r["sha256"] for r in rows}},
                    )
            receipts = self._process() if self.ledger.requests(("queued", "running")) else []
            self._collect_garbage()
            return receipts

    def _collect_garbage(self) -> None:
        keep = {c["sha256"] for c in self.ledger.current_checkpoints().values()}
        for f in (self.path / "checkpoints").glob("*.pt"):
            if f.stem not in keep:
                f.unlink(missing_ok=True)

    # ---- deletion ------------------------------------------------------------------------
    def affected(self, ids: np.ndarray) -> dict[int, int]:
        """Shard -> first slice to retrain when deleting ``ids``."""
        first: dict[int, int] = {}
        for _, j, s in self.ledger.rows_of(ids, ("active", "pending")).tolist():
            for k in range(self.config.n_shards):
                if j in self.hoods[k]:
                    first[k] = min(first.get(k, s), s)
        return dict(sorted(first.items()))

    def forget(
        self,
        ids: Sequence[int],
        request_id: str | None = None,
        *,
        check_exactness: bool = False,
    ) -> dict[str, Any]:
        """Delete ``ids`` exactly; return the receipt. The same request id returns the same
        receipt (work done once). Unknown ids raise :class:`ObliviateError`."""
        want = sorted({int(i) for i in ids})
        if not want:
            raise ObliviateError("the deletion request names no ids; give at least one id")
        digest = ids_hash(want)
        rid = request_id or f"ids-{digest[:16]}"
        self.resume()
        with _lock(self.path):
            existing = self.ledger.request(rid)
            if existing is not None and existing["ids_hash"] != digest:
                raise ObliviateError(f"request id {rid!r} was already used for other ids")
            if existing is None:
                states = self.ledger.sample_states(want)
                unknown = [i for i in want if i not in states]
                if unknown:
                    raise ObliviateError(
                        f"{len(unknown)} id(s) were never trained on in this store: {unknown[:10]}"
                    )
                fresh = [i for i in want if states[i] == "active"]
                with self.ledger.transaction():
                    self.ledger.add_request(rid, want, time.time(), "running")
                    self.ledger.set_states(fresh, "pending", rid)
                    self.ledger.append_event(
                        "request_submitted",
                        {"request_id": rid, "ids_sha256": digest, "n_ids": len(want)},
                    )
                _failpoint("submitted")
                self._process(check_exactness=check_exactness)
                self._collect_garbage()
        req = self.ledger.request(rid)
        assert req is not None and req["receipt"] is not None
        return json.loads(req["receipt"])

    def _process(self, check_exactness: bool = False) -> list[dict[str, Any]]:
        reqs = self.ledger.requests(("queued", "running"))
        t_start = time.time()
        version = int(self.ledger.get_meta("version"))
        current = self.ledger.current_checkpoints()
        pending = self.ledger.samples(("pending",))[:, 0]
        plan = self.affected(pending)
        remaining = self.ledger.samples(("active",))
        removed = [self.encoded[int(i)] for i in pending]
        acc_before = self._token_accuracy(current, removed)
        t0 = time.perf_counter()
        new_rows: list[dict[str, Any]] = []
        results = {}
        for k, start in plan.items():
            base_sha = None if start == 0 else current[(k, start - 1)]["sha256"]
            results[k] = self._train_chain(k, start, self._slices(remaining, k), base_sha)
            new_rows += results[k]
        retrain_seconds = time.perf_counter() - t0
        exactness = None
        if check_exactness and plan:
            shards = []
            for k in plan:
                ref = self._train_chain(k, 0, self._slices(remaining, k), None, persist=False)
                shards.append(
                    {
                        "shard": k,
                        "retrained": results[k][-1]["sha256"],
                        "from_scratch": ref[-1]["sha256"],
                    }
                )
            exactness = {
                "checked": True,
                "equal": all(s["retrained"] == s["from_scratch"] for s in shards),
                "shards": shards,
            }
        after = checkpoints_after(current, new_rows)
        acc_after = self._token_accuracy(after, removed)
        t_end = time.time()
        _failpoint("before_commit")
        complete(
            self.ledger,
            requests=reqs,
            plan=plan,
            current=current,
            new_rows=new_rows,
            pending=pending,
            version=version,
            n_shards=self.config.n_shards,
            n_slices=self.config.n_slices,
            times=(t_start, t_end),
            retrain_seconds=retrain_seconds,
            accuracy=(acc_before, acc_after),
            exactness=exactness,
            store_config=hashlib.sha256(
                json.dumps(asdict(self.config), sort_keys=True).encode()
            ).hexdigest(),
        )
        done = [self.ledger.request(r["request_id"]) for r in reqs]
        return [json.loads(d["receipt"]) for d in done if d is not None]

    # ---- prediction ----------------------------------------------------------------------
    def final_checkpoints(
        self, current: dict[tuple[int, int], dict[str, Any]] | None = None
    ) -> list[str]:
        """sha256 of each shard's last checkpoint (shards with no data left out)."""
        current = self.ledger.current_checkpoints() if current is None else current
        last = self.config.n_slices - 1
        return [
            current[(k, last)]["sha256"]
            for k in range(self.config.n_shards)
            if (k, last) in current and current[(k, last)]["n_ids"] > 0
        ]

    def scorer(self, combine: str | None = None) -> EnsembleScorer:
        return EnsembleScorer(self, self.final_checkpoints(), combine or self.config.combine)

    def _token_accuracy(
        self, current: dict[tuple[int, int], dict[str, Any]], seqs: list[Encoded]
    ) -> float | None:
        if not seqs or not current:
            return None
        scores = EnsembleScorer(self, self.final_checkpoints(current), self.config.combine).score(
            seqs
        )
        hits = np.concatenate([s.argmax == s.target for s in scores])
        return float(hits.mean())

    # ---- inspection ----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The store's configuration, counts, requests and model hash. ``state`` is ``ready``,
        ``busy`` (a process is working on the store now) or ``interrupted`` (unfinished work --
        the initial training or a running request -- whose process died: run :meth:`resume`)."""
        counts = self.ledger.count_states()
        prefix = self.lm.prefix
        state = self.ledger.get_meta("state")
        unfinished = state == "training" or bool(self.ledger.requests(("queued", "running")))
        if unfinished:
            state = "busy" if _lock_held(self.path) else "interrupted"
        return {
            "store": str(self.path),
            "config": asdict(self.config),
            "version": int(self.ledger.get_meta("version")),
            "state": state,
            "n_active": counts.get("active", 0),
            "n_pending": counts.get("pending", 0),
            "n_deleted": counts.get("deleted", 0),
            "requests": {r["request_id"]: r["status"] for r in self.ledger.requests()},
            "prefix_cache": None
            if prefix is None
            else {
                "n_frozen_blocks": prefix.n_frozen,
                "n_computed": prefix.n_computed,
                "n_reused": prefix.n_reused,
            },
            "model_sha256": rc.model_hash(
                self.ledger.current_checkpoints(), self.config.n_shards, self.config.n_slices
            ),
        }

    def verify(self) -> dict[str, Any]:
        """Check the event chain, every live checkpoint file's hash, and that each checkpoint
        was trained on exactly the live (never-deleted) ids of its slices."""
        problems = self.ledger.check_chain()
        data_sha = hashlib.sha256((self.path / "data.jsonl").read_bytes()).hexdigest()
        if data_sha != self.ledger.get_meta("data_sha256"):
            problems.append("data.jsonl changed since the store was trained")
        if self.ledger.requests(("queued", "running")):
            problems.append("unfinished requests: run resume")
        samples = self.ledger.samples(("active",))
        current = self.ledger.current_checkpoints()
        for k in range(self.config.n_shards):
            slices = self._slices(samples, k)
            for r in range(self.config.n_slices):
                ck = current.get((k, r))
                if ck is None:
                    problems.append(f"shard {k} slice {r}: no checkpoint")
                    continue
                path = _ckpt_path(self.path, ck["sha256"])
                if (
                    not path.exists()
                    or hashlib.sha256(path.read_bytes()).hexdigest() != ck["sha256"]
                ):
                    problems.append(f"shard {k} slice {r}: checkpoint file missing or altered")
                if ck["ids_hash"] != ids_hash(np.sort(np.concatenate(slices[: r + 1]))):
                    problems.append(
                        f"shard {k} slice {r}: trained on ids that are not the live ones"
                    )
        return {"ok": not problems, "problems": problems}


class EnsembleScorer:
    """:class:`obliviate.llm.metrics.Scorer` of a store's shard adapters, combined per token."""

    def __init__(self, store: AdapterStore, shas: list[str], combine: str = "mean") -> None:
        if combine not in COMBINES:
            raise ObliviateError(f"combine {combine!r}: choose one of {COMBINES}")
        if not shas:
            raise ObliviateError("no shard has data left; nothing to predict with")
        self.store, self.combine = store, combine
        self.states = [_read_checkpoint(store.path, s) for s in shas]

    def _combined(self, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
        lm = self.store.lm
        parts = []
        for state in self.states:
            self.store._load(state)
            parts.append(torch.log_softmax(forward_logits(lm, seqs).float(), -1))
        stack = torch.stack(parts)
        if self.combine == "mean":
            return torch.logsumexp(stack, 0) - math.log(len(parts))
        return torch.log_softmax(stack.mean(0), -1)

    @torch.no_grad()
    def score(self, seqs: Sequence[Encoded]) -> list[TokenScores]:
        out: list[TokenScores] = []
        self.store.lm.model.eval()
        for b in range(0, len(seqs), 16):
            chunk = list(seqs[b : b + 16])
            out += scores_from_logprobs(
                self._combined([s.ids for s in chunk]), chunk, self.store.lm.device
            )
        return out

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
        """Greedy decoding on the combined distribution (no key-value cache: each step re-reads
        the right-padded sequences; the frozen part comes from the prefix cache)."""
        self.store.lm.model.eval()
        eos = self.store.lm.eos_id
        seqs = [list(p) for p in prompts]
        new: list[list[int]] = [[] for _ in seqs]
        live = list(range(len(seqs)))
        for _ in range(max_new_tokens):
            if not live:
                break
            logp = self._combined([seqs[i] for i in live])
            still = []
            for row, i in enumerate(live):
                t = int(logp[row, len(seqs[i]) - 1].argmax())
                if t != eos:
                    seqs[i].append(t)
                    new[i].append(t)
                    still.append(i)
            live = still
        return new
