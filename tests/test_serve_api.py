"""The deletion-request service over HTTP (uvicorn on a free loopback port, driven with httpx):
the request lifecycle, idempotency, the bad-input matrix (each a clear 4xx that changes nothing),
signed receipts, subjects, limits, the CLI around it and the checked-in OpenAPI schema."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("cryptography")
import httpx  # noqa: E402

from obliviate.cli.main import main  # noqa: E402
from obliviate.client import Client, ServiceError  # noqa: E402
from obliviate.models import ModelSpec  # noqa: E402
from obliviate.serve import ServeConfig, signing  # noqa: E402
from obliviate.serve.app import openapi_schema  # noqa: E402
from obliviate.serve.auth import add_key, connect  # noqa: E402
from obliviate.serve.runner import ServerThread  # noqa: E402
from obliviate.sharded import DataSpec, ShardConfig, ShardedStore  # noqa: E402
from obliviate.sharded.subjects import import_subjects  # noqa: E402
from obliviate.training import Recipe, TrainConfig  # noqa: E402

DATA = DataSpec(dataset="digits", limit=300)
CONFIG = ShardConfig(
    n_shards=3,
    n_slices=2,
    seed=1,
    recipe=Recipe(
        ModelSpec(hidden=(16,), seed=1), TrainConfig(n_epochs=1, batch_size=32, lr=0.05, seed=1)
    ),
)
MAX_IDS = 50
ROOT = Path(__file__).resolve().parents[1]


def wait_done(client: httpx.Client, rid: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/v1/deletions/{rid}").json()
        if state["status"] in ("done", "failed", "cancelled"):
            return state
        time.sleep(0.05)
    raise AssertionError(f"request {rid} not done within {timeout} s: {state}")


def snapshot(store: Path) -> tuple:
    """Everything a request could change: sample states, requests, events, intake rows."""
    db = sqlite3.connect(store / "ledger.sqlite")
    try:
        return (
            db.execute("SELECT state, COUNT(*) FROM samples GROUP BY state ORDER BY 1").fetchall(),
            db.execute("SELECT request_id, status FROM requests ORDER BY 1").fetchall(),
            db.execute("SELECT COUNT(*), MAX(hash) FROM events").fetchone(),
            db.execute("SELECT request_id, error FROM serve_requests ORDER BY 1").fetchall(),
            db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone(),
        )
    finally:
        db.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    path = root / "store"
    with ShardedStore.train(path, data=DATA, config=CONFIG, backend="inline") as st:
        ids = st.ledger.samples()[:, 0].tolist()
        import_subjects(st.ledger, {"alice@example.org": ids[40:44], "source:forum": ids[44:46]})
    db = connect(path / "ledger.sqlite")
    keys = {role: add_key(db, role)[1] for role in ("submit", "read", "admin")}
    db.close()
    config = ServeConfig(
        store=path, backend="inline", batch_window=0.1, max_ids=MAX_IDS, max_body_bytes=65_536
    )
    with ServerThread(config) as url:
        clients = {
            role: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {k}"}, timeout=60)
            for role, k in keys.items()
        }
        yield {"url": url, "path": path, "keys": keys, "ids": ids, "c": clients, "root": root}
        for c in clients.values():
            c.close()


def test_lifecycle_receipts_and_model_version(service, tmp_path):
    c, ids = service["c"], service["ids"]
    version0 = c["read"].get("/v1/model").json()["model_version"]
    r = c["submit"].post("/v1/deletions", json={"ids": [ids[0], ids[1], 10**9]})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] in ("queued", "running", "done")
    assert body["n_ids"] == 2 and body["n_unknown_ids"] == 1 and body["unknown_ids"] == [10**9]
    assert r.headers["location"] == body["status_url"]
    state = wait_done(c["submit"], body["request_id"])
    assert state["status"] == "done", state
    assert state["model_version_after"] == state["model_version_before"] + 1
    assert all(state["timestamps"][k] for k in ("accepted", "forwarded", "started", "finished"))

    signed = c["submit"].get(body["receipt_url"]).json()
    receipt = signed["document"]["receipt"]
    assert receipt["request_id"] == body["request_id"] and receipt["n_removed"] == 2
    assert signed["document"]["request"]["n_unknown_ids"] == 1
    model = c["read"].get("/v1/model").json()
    assert model["model_version"] == version0 + 1 == receipt["model_version_after"]
    assert model["model_sha256"] == receipt["model_sha256_after"]
    assert model["samples"]["deleted"] >= 2

    # predictions name the version they come from
    pred = c["read"].post("/v1/predict", json={"x": [[0.0] * 64, [1.0] * 64]}).json()
    assert pred["model_version"] == model["model_version"] and len(pred["labels"]) == 2
    assert pred["model_sha256"] == model["model_sha256"]

    # offline verification: the published key checks it, one changed byte breaks it
    key_info = c["read"].get("/v1/receipt-key").json()
    public = signing.load_public_key(key_info["public_key_pem"])
    assert signing.verify(signed, public) == (True, "valid")
    text = json.dumps(signed)
    i = text.index('"n_removed": 2') + len('"n_removed": ')
    tampered = json.loads(text[:i] + "3" + text[i + 1 :])
    assert signing.verify(tampered, public)[0] is False
    (tmp_path / "receipt.json").write_text(json.dumps(signed))
    (tmp_path / "key.pem").write_text(key_info["public_key_pem"])
    (tmp_path / "bad.json").write_text(json.dumps(tampered))
    assert (
        main(
            [
                "receipt",
                "verify",
                str(tmp_path / "receipt.json"),
                "--key",
                str(tmp_path / "key.pem"),
            ]
        )
        == 0
    )
    assert (
        main(["receipt", "verify", str(tmp_path / "bad.json"), "--key", str(tmp_path / "key.pem")])
        == 1
    )

    # a receipt for a request still in the queue is not ready; an unknown request is 404
    assert c["read"].get("/v1/deletions/del-nope").status_code == 404
    assert c["read"].get("/v1/deletions/del-nope/receipt").status_code == 404

    # the second request's signature replayed on the first receipt is refused
    r2 = c["submit"].post("/v1/deletions", json={"ids": [ids[2]]}).json()
    assert wait_done(c["submit"], r2["request_id"])["status"] == "done"
    signed2 = c["submit"].get(r2["receipt_url"]).json()
    before = snapshot(service["path"])
    replay = {"document": signed["document"], "signature": signed2["signature"]}
    v = c["submit"].post("/v1/receipts/verify", json=replay)
    assert v.status_code == 422 and v.json()["error"]["code"] == "signature_invalid"
    assert c["submit"].post("/v1/receipts/verify", json=signed2).json()["valid"] is True
    assert snapshot(service["path"]) == before

    # metrics, the request list and verify agree
    text = c["read"].get("/metrics").text
    assert "obliviate_queue_length 0.0" in text and "obliviate_retraining_seconds_count" in text
    assert 'obliviate_http_requests_total{method="POST",route="/v1/deletions",status="202"}' in text
    version = c["read"].get("/v1/model").json()["model_version"]
    assert version == model["model_version"] + 1
    assert f"obliviate_model_version {float(version)}" in text
    listed = {r["request_id"]: r["status"] for r in c["read"].get("/v1/deletions").json()}
    assert listed[body["request_id"]] == "done"
    with ShardedStore(service["path"]) as st:
        assert st.verify()["ok"]


def test_client_helper(service):
    with Client(service["url"], service["keys"]["submit"]) as client:
        req = client.submit(ids=[service["ids"][3]], idempotency_key="client-1")
        signed = client.wait(req["request_id"], timeout=120, poll=0.05)
        assert client.verify_offline(signed) == (True, "valid")
        with pytest.raises(ServiceError) as err:
            client.submit(ids=[service["ids"][4]], idempotency_key="client-1")
        assert err.value.status == 409 and err.value.code == "idempotency_conflict"
        assert client.healthz() == {"status": "ok"}


def test_idempotency(service):
    c, ids, path = service["c"], service["ids"], service["path"]
    h = {"Idempotency-Key": "ticket-4711"}
    first = c["submit"].post("/v1/deletions", json={"ids": [ids[10], ids[11]]}, headers=h)
    assert first.status_code == 202 and first.json()["replayed"] is False
    # the same body (other whitespace and order of keys) returns the same request
    again = c["submit"].post(
        "/v1/deletions",
        content=b'{ "ids" : [%d, %d] }' % (ids[10], ids[11]),
        headers={**h, "Content-Type": "application/json"},
    )
    assert again.status_code == 202, again.text
    assert again.json()["request_id"] == first.json()["request_id"]
    assert again.json()["replayed"] is True and again.headers["idempotent-replayed"] == "true"
    wait_done(c["submit"], first.json()["request_id"])  # no pass runs while the 409 is checked
    before = snapshot(path)
    other = c["submit"].post("/v1/deletions", json={"ids": [ids[12]]}, headers=h)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
    assert snapshot(path) == before
    db = sqlite3.connect(path / "ledger.sqlite")
    n = db.execute("SELECT COUNT(*) FROM serve_requests WHERE idem_key = 'ticket-4711'").fetchone()[
        0
    ]
    db.close()
    assert n == 1
    # keys are per API key: the admin key's ticket-4711 is another request
    mine = c["admin"].post("/v1/deletions", json={"ids": [ids[12]]}, headers=h)
    assert mine.status_code == 202 and mine.json()["request_id"] != first.json()["request_id"]
    wait_done(c["admin"], mine.json()["request_id"])


BAD = [
    # (name, role, kwargs, status, code)
    (
        "malformed json",
        "submit",
        {"content": b'{"ids": [1, 2', "json": None},
        400,
        "malformed_json",
    ),
    ("ids as strings", "submit", {"json": {"ids": ["1", "2"]}}, 422, "invalid_body"),
    ("ids as a string", "submit", {"json": {"ids": "1,2"}}, 422, "invalid_body"),
    ("float id", "submit", {"json": {"ids": [1.5]}}, 422, "invalid_body"),
    ("boolean id", "submit", {"json": {"ids": [True]}}, 422, "invalid_body"),
    ("id beyond int64", "submit", {"json": {"ids": [2**64]}}, 422, "invalid_body"),
    ("body is a list", "submit", {"json": [1, 2]}, 422, "invalid_body"),
    ("unknown field", "submit", {"json": {"ids": [1], "force": True}}, 422, "invalid_body"),
    ("ids and subject", "submit", {"json": {"ids": [1], "subject": "x"}}, 422, "invalid_body"),
    ("neither", "submit", {"json": {}}, 422, "invalid_body"),
    ("empty list", "submit", {"json": {"ids": []}}, 422, "invalid_body"),
    ("only unknown ids", "submit", {"json": {"ids": [10**9, 10**9 + 1]}}, 422, "unknown_ids"),
    ("unknown subject", "submit", {"json": {"subject": "bob@example.org"}}, 422, "unknown_subject"),
    ("too many ids", "submit", {"json": {"ids": list(range(MAX_IDS + 1))}}, 422, "too_many_ids"),
    # the limit counts the list as sent, duplicates included
    ("repeated ids", "submit", {"json": {"ids": [1] * (MAX_IDS + 1)}}, 422, "too_many_ids"),
    (
        "invalid utf-8",
        "submit",
        {"content": b'{"ids": [1], "subject": "\xff\xfe"}', "json": None},
        400,
        "malformed_json",
    ),
    (
        "deeply nested",
        "submit",
        {"content": b'{"ids": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "json": None},
        400,
        "malformed_json",
    ),
    (
        "text/plain body",
        "submit",
        {"content": b'{"ids": [1]}', "json": None, "headers": {"Content-Type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    ("10**6 ids", "submit", {"json": {"ids": list(range(10**6))}}, 413, "body_too_large"),
    ("oversized body", "submit", {"json": {"subject": "x" * 100_000}}, 413, "body_too_large"),
    ("missing key", None, {"json": {"ids": [1]}}, 401, "unauthenticated"),
    ("wrong key", "wrong", {"json": {"ids": [1]}}, 401, "invalid_key"),
    ("garbage key", "garbage", {"json": {"ids": [1]}}, 401, "invalid_key"),
    ("read key submitting", "read", {"json": {"ids": [1]}}, 403, "forbidden"),
    (
        "bad idempotency key",
        "submit",
        {"json": {"ids": [1]}, "headers": {"Idempotency-Key": "x" * 300}},
        422,
        "invalid_body",
    ),
]


@pytest.mark.parametrize("name,role,kwargs,status,code", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_clear_4xx_and_changes_nothing(service, name, role, kwargs, status, code):
    keys = service["keys"]
    presented = {
        None: None,
        "wrong": keys["submit"][:-4] + "AAAA",
        "garbage": "not-a-key",
    }.get(role, keys.get(role or "", ""))
    headers = dict(kwargs.get("headers", {}))
    if presented is not None:
        headers["Authorization"] = f"Bearer {presented}"
    if kwargs.get("json") is None and "content" in kwargs:
        headers.setdefault("Content-Type", "application/json")
    before = snapshot(service["path"])
    r = httpx.post(
        service["url"] + "/v1/deletions",
        json=kwargs.get("json") if "content" not in kwargs else None,
        content=kwargs.get("content"),
        headers=headers,
        timeout=60,
    )
    assert r.status_code == status, (name, r.status_code, r.text[:300])
    err = r.json()["error"]
    assert err["code"] == code and err["message"], err
    assert "Traceback" not in r.text and keys["submit"] not in r.text
    if presented:
        assert presented not in r.text  # a key is never echoed
    assert snapshot(service["path"]) == before


def test_errors_do_not_echo_the_body(service):
    r = service["c"]["submit"].post("/v1/deletions", json={"ids": ["s3cr3t-value"]})
    assert r.status_code == 422 and "s3cr3t" not in r.text
    r = service["c"]["submit"].post("/v1/deletions", json={"ids": [987654321, -1]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_ids"
    assert "987654321" not in r.text and "-1" not in r.text and "2 id(s)" in r.text


def test_duplicate_json_keys_make_a_receipt_invalid(service, tmp_path, capsys):
    """A receipt naming a key twice reads differently to first-wins and last-wins parsers:
    the CLI, the client and the endpoint all call it invalid."""
    c, ids = service["c"], service["ids"]
    rid = c["submit"].post("/v1/deletions", json={"ids": [ids[60]]}).json()["request_id"]
    assert wait_done(c["submit"], rid)["status"] == "done"
    signed = c["submit"].get(f"/v1/deletions/{rid}/receipt").json()
    text = json.dumps(signed)
    assert text.count('"request": {') == 1
    forged = text.replace('"request": {', '"request": {"request_id": "del-forged", ', 1)
    first_wins = json.loads(forged, object_pairs_hook=lambda p: dict(reversed(p)))
    assert first_wins["document"]["request"]["request_id"] == "del-forged"
    key_info = c["read"].get("/v1/receipt-key").json()
    public = signing.load_public_key(key_info["public_key_pem"])
    assert signing.verify(text, public) == (True, "valid")
    ok, why = signing.verify(forged, public)
    assert not ok and "duplicate" in why
    (tmp_path / "forged.json").write_text(forged)
    (tmp_path / "key.pem").write_text(key_info["public_key_pem"])
    cli = ["receipt", "verify", str(tmp_path / "forged.json"), "--key", str(tmp_path / "key.pem")]
    assert main(cli) == 1 and "INVALID" in capsys.readouterr().out
    v = c["submit"].post(
        "/v1/receipts/verify", content=forged, headers={"Content-Type": "application/json"}
    )
    assert v.status_code == 422 and v.json()["error"]["code"] == "signature_invalid", v.text
    with Client(service["url"], service["keys"]["submit"]) as client:
        assert client.verify_offline(text) == (True, "valid")
        assert client.verify_offline(forged)[0] is False


def test_one_server_per_store(service, tmp_path, capsys):
    """A second server with a worker on the same store refuses to start (serve.lock), and the
    lock goes when the server stops."""
    from obliviate.errors import ObliviateError

    with pytest.raises(ObliviateError, match="already running"):
        ServerThread(ServeConfig(store=service["path"], backend="inline"))
    assert main(["serve", "--store", str(service["path"]), "--backend", "inline"]) == 2
    err = capsys.readouterr().err
    assert "already running" in err and len(err.strip().splitlines()) == 1
    path = tmp_path / "store"
    ShardedStore.train(path, data=DataSpec(limit=100), config=CONFIG, backend="inline").close()
    for _ in range(2):  # the lock of a stopped server is free again
        with ServerThread(ServeConfig(store=path, backend="inline")):
            pass


def test_subjects_are_deleted_by_name_and_receipts_name_only_a_hash(service):
    c, ids = service["c"], service["ids"]
    r = c["submit"].post("/v1/deletions", json={"subject": "alice@example.org"})
    assert r.status_code == 202, r.text
    assert r.json()["n_ids"] == 4 and r.json()["subject_sha256"]
    assert wait_done(c["submit"], r.json()["request_id"])["status"] == "done"
    signed = c["submit"].get(r.json()["receipt_url"]).json()
    assert signed["document"]["request"]["subject_sha256"] == r.json()["subject_sha256"]
    assert "alice" not in json.dumps(signed)
    with ShardedStore(service["path"]) as st:
        assert set(st.ledger.sample_states(ids[40:44]).values()) == {"deleted"}
        assert "alice" not in json.dumps(st.ledger.events())
    db = sqlite3.connect(service["path"] / "ledger.sqlite")
    dump = "\n".join(db.iterdump())
    db.close()
    assert "alice" not in dump and "source:forum" not in dump


def test_every_endpoint_but_healthz_needs_a_key_and_there_is_no_cors(service):
    url = service["url"]
    assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    for method, path in [
        ("GET", "/v1/model"),
        ("GET", "/v1/deletions"),
        ("GET", "/v1/deletions/x"),
        ("GET", "/v1/deletions/x/receipt"),
        ("GET", "/v1/receipt-key"),
        ("POST", "/v1/predict"),
        ("POST", "/v1/receipts/verify"),
        ("GET", "/metrics"),
        ("GET", "/v1/openapi.json"),
    ]:
        r = httpx.request(method, url + path, json={} if method == "POST" else None)
        assert r.status_code == 401, (path, r.status_code)
    r = httpx.get(url + "/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    pre = httpx.options(
        url + "/v1/deletions",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in pre.headers
    # a submit key may not read the model or the metrics
    assert service["c"]["submit"].get("/v1/model").status_code == 403
    assert service["c"]["submit"].get("/metrics").status_code == 403


def test_rate_limit_per_key(service, tmp_path):
    config = ServeConfig(store=service["path"], run_worker=False, rate=0.5, burst=3)
    with ServerThread(config) as url:
        read = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {service['keys']['read']}"}
        )
        admin = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {service['keys']['admin']}"}
        )
        codes = [read.get("/v1/receipt-key").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = read.get("/v1/receipt-key")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "rate_limited"
        assert admin.get("/v1/receipt-key").status_code == 200  # another key has its own bucket
        # a replay of an accepted request (same Idempotency-Key) gets it back, not 429
        submit = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {service['keys']['submit']}"}
        )
        h = {"Idempotency-Key": "rate-limit-replay"}
        body = {"ids": [service["ids"][70]]}
        first = submit.post("/v1/deletions", json=body, headers=h)
        assert first.status_code == 202, first.text
        for _ in range(4):
            again = submit.post("/v1/deletions", json=body, headers=h)
            assert again.status_code == 202 and again.json()["replayed"] is True, again.text
        other = submit.post("/v1/deletions", json=body, headers={"Idempotency-Key": "new"})
        assert other.status_code == 429


def test_openapi_schema_is_checked_in():
    checked_in = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert checked_in == openapi_schema(), (
        "docs/openapi.json is stale: run `obliviate serve openapi --out docs/openapi.json`"
    )
    paths = set(checked_in["paths"])
    assert {"/v1/deletions", "/v1/deletions/{request_id}", "/v1/predict", "/metrics"} <= paths


def test_cli_keys_subjects_and_loopback(service, tmp_path, capsys):
    path = service["path"]
    assert (
        main(["serve", "keys", "add", "--store", str(path), "--role", "read", "--label", "ci"]) == 0
    )
    key = capsys.readouterr().out.strip()
    assert key.startswith("obv_")
    with ServerThread(ServeConfig(store=path, run_worker=False)) as url:
        assert (
            httpx.get(url + "/v1/model", headers={"Authorization": f"Bearer {key}"}).status_code
            == 200
        )
        key_id = key.split("_")[1]
        assert main(["serve", "keys", "revoke", key_id, "--store", str(path)]) == 0
        listed = main(["serve", "keys", "list", "--store", str(path)])
        assert listed == 0 and key not in capsys.readouterr().out
    with ServerThread(ServeConfig(store=path, run_worker=False)) as url:  # a fresh key cache
        assert (
            httpx.get(url + "/v1/model", headers={"Authorization": f"Bearer {key}"}).status_code
            == 401
        )
    assert main(["serve", "keys", "add", "--store", str(path), "--role", "root"]) == 2
    assert main(["serve", "--store", str(path), "--host", "0.0.0.0"]) == 2
    assert "loopback" in capsys.readouterr().err
    subjects = tmp_path / "subjects.csv"
    subjects.write_text(f"subject,id\ncarol,{service['ids'][50]}\ncarol,{10**9}\n")
    assert main(["serve", "subjects", "import", str(subjects), "--store", str(path)]) == 2
    assert "never trained on" in capsys.readouterr().err


def test_a_failing_pass_shows_failed_and_the_server_stays_up(tmp_path, service):
    """A damaged checkpoint makes the retraining pass refuse: the request shows ``failed`` with
    the reason, the store is unchanged, and other endpoints keep answering."""
    path = tmp_path / "store"
    with ShardedStore.train(path, data=DATA, config=CONFIG, backend="inline") as st:
        rows = st.ledger.samples()
        victim = int(
            rows[(rows[:, 1] == 0) & (rows[:, 2] == 1)][0, 0]
        )  # needs slice 0's checkpoint
        base = st.ledger.current_checkpoints()[(0, 0)]["sha256"]
    ck = path / "checkpoints" / f"{base}.pt"
    data = bytearray(ck.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ck.write_bytes(bytes(data))
    db = connect(path / "ledger.sqlite")
    key = add_key(db, "admin")[1]
    db.close()
    with ServerThread(ServeConfig(store=path, backend="inline", batch_window=0.0)) as url:
        c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        rid = c.post("/v1/deletions", json={"ids": [victim]}).json()["request_id"]
        state = wait_done(c, rid)
        assert state["status"] == "failed" and "corrupted" in state["error"], state
        assert c.get(f"/v1/deletions/{rid}/receipt").status_code == 409
        assert 'obliviate_requests{state="failed"} 1.0' in c.get("/metrics").text
        assert c.get("/v1/model").json()["model_version"] == 0
        bad = c.post("/v1/predict", json={"x": [[0.0] * 5]})
        assert bad.status_code == 422 and "expects" in bad.json()["error"]["message"]


def test_shard_train_ingests_subjects(tmp_path, capsys):
    subjects = tmp_path / "subjects.json"
    store = tmp_path / "store"
    args = ["shard", "train", "--store", str(store), "--limit", "100", "--shards", "2"]
    args += ["--slices", "1", "--epochs", "1", "--hidden", "8", "--backend", "inline"]
    probe = tmp_path / "probe"
    with ShardedStore.train(probe, data=DataSpec(limit=100), config=CONFIG, backend="inline") as st:
        ids = st.ledger.samples()[:3, 0].tolist()
    subjects.write_text(json.dumps({"dora": ids[:2], "source:scan-7": ids[2:]}))
    assert main([*args, "--subjects", str(subjects)]) == 0
    from obliviate.sharded.subjects import subject_ids

    with ShardedStore(store) as st:
        digest, got = subject_ids(st.ledger, "dora")
        assert got == sorted(ids[:2]) and len(digest) == 64
        assert subject_ids(st.ledger, "nobody")[1] == []
    bad = tmp_path / "bad.csv"
    bad.write_text("name,id\nx,1\n")
    assert main([*args[:3], str(tmp_path / "s2"), *args[4:], "--subjects", str(bad)]) == 2
    assert "columns 'subject' and 'id'" in capsys.readouterr().err
    assert not (tmp_path / "s2").exists()  # refused before training
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"erin": [ids[0], 10**9]}))
    assert main([*args[:3], str(tmp_path / "s3"), *args[4:], "--subjects", str(unknown)]) == 2
    assert "never trained on" in capsys.readouterr().err
    assert not (tmp_path / "s3").exists()  # checked against the training split before training


def test_a_running_request_shows_when_it_started(tmp_path):
    """The store writes ``started`` only when a pass ends; while it runs, the status shows the
    time the pass set it running (its ``requests_started`` event), never ``running`` + null."""
    from obliviate.serve import queue

    path = tmp_path / "store"
    with ShardedStore.train(path, data=DataSpec(limit=100), config=CONFIG, backend="inline") as st:
        victim = int(st.ledger.samples()[0, 0])
        rid = st.submit([victim], request_id="del-running")["request_id"]
        db = connect(path / "ledger.sqlite")
        db.executescript(queue.SCHEMA)
        db.execute(
            "INSERT INTO serve_requests VALUES (?, 'k', NULL, 'x', ?, 1, '[]', NULL, ?, ?, NULL)",
            (rid, json.dumps([victim]), time.time(), time.time()),
        )
        db.commit()
        assert queue.view(db, rid)["timestamps"]["started"] is None  # queued: not started
        with st.ledger.transaction():
            st.ledger.update_request(rid, status="running")
            st.ledger.append_event("requests_started", {"requests": [rid]})
        view = queue.view(db, rid)
        assert view["status"] == "running" and view["timestamps"]["started"] is not None
        assert queue.recent(db)[0]["timestamps"]["started"] == view["timestamps"]["started"]
        db.close()
