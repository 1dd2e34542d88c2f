"""The status page in headless Chromium: it renders, its tables hold what the API says, and a
screenshot is saved as a test artefact (under pytest's tmp dir)."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import time

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from obliviate.models import ModelSpec  # noqa: E402
from obliviate.serve import ServeConfig  # noqa: E402
from obliviate.serve.auth import add_key, connect  # noqa: E402
from obliviate.serve.runner import ServerThread  # noqa: E402
from obliviate.sharded import DataSpec, ShardConfig, ShardedStore  # noqa: E402
from obliviate.training import Recipe, TrainConfig  # noqa: E402

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "headless Chromium not found: `make browser` installs Debian's `chromium` "
        "(needs root and apt); browser test skipped"
    )


def test_status_page_in_chromium(tmp_path):
    browser = _chromium()
    path = tmp_path / "store"
    config = ShardConfig(
        n_shards=2,
        n_slices=2,
        seed=0,
        recipe=Recipe(ModelSpec(hidden=(8,), seed=0), TrainConfig(n_epochs=1, seed=0)),
    )
    with ShardedStore.train(
        path, data=DataSpec(dataset="digits", limit=200), config=config, backend="inline"
    ) as st:
        ids = st.ledger.samples()[:, 0].tolist()
    db = connect(path / "ledger.sqlite")
    read_key, submit_key = add_key(db, "read")[1], add_key(db, "submit")[1]
    db.close()
    with ServerThread(ServeConfig(store=path, backend="inline", batch_window=0.05)) as url:
        sub = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {submit_key}"})
        read = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {read_key}"})
        rids = [
            sub.post("/v1/deletions", json={"ids": ids[i : i + 2]}).json()["request_id"]
            for i in (0, 5)
        ]
        deadline = time.monotonic() + 120
        while any(sub.get(f"/v1/deletions/{r}").json()["status"] != "done" for r in rids):
            assert time.monotonic() < deadline, "requests not done in 120 s"
            time.sleep(0.05)
        api = {r["request_id"]: r for r in read.get("/v1/deletions").json()}
        model = read.get("/v1/model").json()
        # a submit key cannot open a page session; a read key can, through a one-time link
        assert sub.post("/v1/page-tickets").status_code == 403

        def open_page(*extra: str) -> subprocess.CompletedProcess:
            ticket = read.post("/v1/page-tickets").json()["url"]
            cmd = [browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *extra, url + ticket]
            try:
                return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except subprocess.TimeoutExpired:
                pytest.fail("chromium did not finish within 120 s")

        dom = open_page("--virtual-time-budget=5000", "--dump-dom").stdout
        shot = tmp_path / "status_page.png"
        open_page("--window-size=1280,1400", f"--screenshot={shot}")
        ticket = read.post("/v1/page-tickets").json()["url"]
        assert httpx.get(url + ticket, follow_redirects=False).status_code == 303
        assert httpx.get(url + ticket, follow_redirects=False).status_code == 401  # one time only
    assert "<h1>Deletion requests</h1>" in dom, dom[:500]
    version = re.search(r'id="model-version">(\d+)<', dom)
    assert version and int(version.group(1)) == model["model_version"]
    rows = dict(
        re.findall(r'<tr data-request="([^"]+)">.*?<td class="state-\w+">(\w+)</td>', dom, re.S)
    )
    assert rows == {rid: api[rid]["status"] for rid in rids} and set(rows.values()) == {"done"}
    counts = dict(re.findall(r'<td data-state="(\w+)">(\d+)</td>', dom))
    assert counts["done"] == "2" and counts["queued"] == "0"
    assert re.search(r'id="verify" class="ok"', dom), html.unescape(dom)[-800:]
    assert read_key not in dom
    assert shot.exists() and shot.stat().st_size > 10_000, "no screenshot"
