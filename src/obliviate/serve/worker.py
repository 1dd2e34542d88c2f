"""The worker: drains the ledger's queue in retraining passes, batching within a window.

One thread per server. At start it completes what a killed server left in flight
(:meth:`ShardedStore.recover`: requests marked ``running`` are resumed, their retraining re-run
from the last committed checkpoints). Then, in a loop: when accepted requests are waiting, it
waits until the oldest is ``batch_window`` seconds old (so requests arriving together share one
pass), forwards every accepted request to the store (:func:`obliviate.sharded.intake.submit_many`: one transaction, idempotent by request id),
runs one :meth:`ShardedStore.process` pass on the configured backend (local pool, inline or Ray),
and re-verifies the store (:meth:`ShardedStore.verify`). Every receipt is issued by the pass that
removed its ids. A pass that raises marks its requests ``failed`` with the error and is retried
after ``retry_seconds`` (the store keeps them queued or running).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from obliviate.serve import queue

log = logging.getLogger("obliviate.serve")


class Worker:
    """Background thread that runs the store's retraining passes (see the module docstring)."""

    def __init__(
        self,
        store_path: Path,
        *,
        backend: str,
        n_workers: int | None,
        data_dir: str | None,
        batch_window: float,
        poll_seconds: float = 0.2,
        retry_seconds: float = 30.0,
        on_pass: Callable[[float, int], None] | None = None,
    ) -> None:
        self.store_path = store_path
        self.backend, self.n_workers, self.data_dir = backend, n_workers, data_dir
        self.batch_window, self.poll_seconds, self.retry_seconds = (
            batch_window,
            poll_seconds,
            retry_seconds,
        )
        self.on_pass = on_pass
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.busy = False
        self.last_verify: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.n_passes = 0
        self._thread = threading.Thread(target=self._run, name="obliviate-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        self.stop.set()
        self.wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        from obliviate.serve.auth import connect
        from obliviate.sharded import ShardedStore

        store = ShardedStore(
            self.store_path, backend=self.backend, n_workers=self.n_workers, data_dir=self.data_dir
        )
        db = connect(self.store_path / "ledger.sqlite")
        db.executescript(queue.SCHEMA)
        try:
            self._guarded(store, db, self._recover)
            while not self.stop.is_set():
                oldest = queue.oldest_unforwarded(db)
                waiting = oldest is not None or bool(store.ledger.requests(("queued", "running")))
                if not waiting:
                    self.wake.wait(self.poll_seconds)
                    self.wake.clear()
                    continue
                if oldest is not None:
                    delay = oldest + self.batch_window - time.time()
                    if delay > 0:
                        self.stop.wait(min(delay, self.batch_window))
                        continue
                if not self._guarded(store, db, self._pass):
                    self.stop.wait(self.retry_seconds)
        finally:
            db.close()
            store.close()

    def _guarded(self, store: Any, db: Any, step: Callable[[Any, Any], None]) -> bool:
        try:
            step(store, db)
        except Exception as exc:  # the server stays up; the requests show the error
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("retraining pass failed")
            waiting = [r["request_id"] for r in store.ledger.requests(("queued", "running"))]
            waiting += [r["request_id"] for r in queue.unforwarded(db)]
            if waiting:
                queue.set_error(db, waiting, self.last_error)
            return False
        finally:
            self.busy = False
        return True

    def _recover(self, store: Any, db: Any) -> None:
        self.busy = True
        t0 = time.perf_counter()
        done = store.recover()
        if done:
            self._after(store, db, time.perf_counter() - t0, len(done))
        self.last_verify = {**store.verify(), "time": time.time()}

    def _pass(self, store: Any, db: Any) -> None:
        self.busy = True
        rows = queue.unforwarded(db)
        if rows:  # one transaction: the store's requests and the intake rows marked forwarded
            from obliviate.sharded.intake import submit_many

            rids = [r["request_id"] for r in rows]
            submit_many(
                store,
                [(r["ids"], r["request_id"]) for r in rows],
                also=lambda ledger: queue.mark_forwarded(ledger.db, rids, in_transaction=True),
            )
        t0 = time.perf_counter()
        done = store.process()
        self._after(store, db, time.perf_counter() - t0, len(done))

    def _after(self, store: Any, db: Any, seconds: float, n_done: int) -> None:
        self.n_passes += 1
        self.last_error = None
        ids = [r["request_id"] for r in store.ledger.requests(("done",))]
        failed = db.execute(
            "SELECT request_id FROM serve_requests WHERE error IS NOT NULL"
        ).fetchall()
        clear = sorted({r[0] for r in failed} & set(ids))
        if clear:
            queue.set_error(db, clear, None)
        self.last_verify = {**store.verify(), "time": time.time()}
        if self.on_pass is not None:
            self.on_pass(seconds, n_done)
        log.info("retraining pass: %d request(s) done in %.2f s", n_done, seconds)
