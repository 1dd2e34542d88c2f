"""A small Python client for the deletion-request service (``obliviate serve``), over httpx.

>>> from obliviate.client import Client
>>> with Client("http://127.0.0.1:8000", api_key="obv_...") as c:      # doctest: +SKIP
...     req = c.submit(ids=[3, 14, 15], idempotency_key="ticket-4711")
...     receipt = c.wait(req["request_id"], timeout=600)
...     ok, why = c.verify_offline(receipt)

Every method returns the decoded JSON answer. A 4xx or 5xx answer raises :class:`ServiceError`
with the status code and the server's error code and message. Needs the optional extra
``obliviate[serve]`` (httpx; ``cryptography`` for :meth:`Client.verify_offline`).
"""

from __future__ import annotations

import json
import time
from types import TracebackType
from typing import Any

import httpx


class ServiceError(Exception):
    """An error answer of the service: ``status`` (HTTP), ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate JSON key {k[:40]!r}")
        out[k] = v
    return out


class Client:
    """Calls the service at ``base_url`` with ``api_key`` (``Authorization: Bearer``)."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                err = response.json()["error"]
                code, message = str(err["code"]), str(err["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", response.text[:200]
            raise ServiceError(response.status_code, code, message)
        ctype = response.headers.get("content-type", "")
        if not ctype.startswith("application/json"):
            return response.text
        try:  # strict: an answer naming a key twice reads differently to different parsers
            return json.loads(response.content, object_pairs_hook=_no_duplicates)
        except ValueError as exc:
            raise ServiceError(response.status_code, "malformed_answer", str(exc)) from None

    def submit(
        self,
        *,
        ids: list[int] | None = None,
        subject: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """File a deletion request (exactly one of ``ids`` or ``subject``); the 202 answer."""
        body: dict[str, Any] = {}
        if ids is not None:
            body["ids"] = [int(i) for i in ids]
        if subject is not None:
            body["subject"] = subject
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        return self._call("POST", "/v1/deletions", json=body, headers=headers)

    def status(self, request_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/deletions/{request_id}")

    def receipt(self, request_id: str) -> dict[str, Any]:
        """The signed receipt ``{"document", "signature"}`` of a done request."""
        return self._call("GET", f"/v1/deletions/{request_id}/receipt")

    def wait(self, request_id: str, *, timeout: float = 600.0, poll: float = 0.5) -> dict[str, Any]:
        """Poll until the request is done and return its signed receipt; raise ServiceError
        when it failed or was cancelled, TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.status(request_id)
            if state["status"] == "done":
                return self.receipt(request_id)
            if state["status"] in ("failed", "cancelled"):
                raise ServiceError(200, state["status"], str(state.get("error")))
            if time.monotonic() > deadline:
                raise TimeoutError(f"request {request_id} is still {state['status']}")
            time.sleep(poll)

    def receipt_key(self) -> dict[str, Any]:
        return self._call("GET", "/v1/receipt-key")

    def verify_offline(
        self, signed: dict[str, Any] | str | bytes, public_key: str | None = None
    ) -> tuple[bool, str]:
        """Check a signed receipt locally with ``public_key`` (PEM or base64; default: the key
        this server publishes, fetched once; pin it instead when you do not trust the server).

        ``signed`` is the receipt as :meth:`receipt` returns it, or its JSON text (a file
        from elsewhere): the text is parsed strictly, so a receipt that names any JSON key
        twice is invalid."""
        from obliviate.serve import signing

        pem = public_key or self.receipt_key()["public_key_pem"]
        return signing.verify(signed, signing.load_public_key(pem))

    def predict(self, x: list[list[float]]) -> dict[str, Any]:
        return self._call("POST", "/v1/predict", json={"x": x})

    def model(self) -> dict[str, Any]:
        return self._call("GET", "/v1/model")

    def healthz(self) -> dict[str, Any]:
        return self._call("GET", "/healthz")
