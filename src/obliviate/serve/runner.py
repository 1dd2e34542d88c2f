"""Running the application on uvicorn: in the foreground (``obliviate serve``) or in a thread
(tests, benchmarks, embedding)."""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from obliviate.errors import ObliviateError
from obliviate.serve.app import ServeConfig, create_app, warm_up

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _release(app: FastAPI) -> None:
    """Give up the app's ``serve.lock`` (idempotent), also when the server never started."""
    app.state.obliviate.release()


def _uvicorn_config(app: FastAPI, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


def serve(
    config: ServeConfig,
    host: str = LOOPBACK,
    port: int = 8000,
    *,
    allow_remote: bool = False,
    log_level: str = "info",
) -> None:
    """Serve in the foreground until interrupted. A non-loopback ``host`` needs ``allow_remote``
    (put a TLS-terminating reverse proxy in front; see docs/serve.md)."""
    if not is_loopback(host) and not allow_remote:
        raise ObliviateError(
            f"--host {host} is not a loopback address; the service binds to loopback unless "
            "told otherwise: add --allow-remote (and put a TLS reverse proxy in front)"
        )
    # the worker thread retrains in this process; hand the interpreter lock over more often so
    # that request threads are not held up by it for the default 5 ms at a time
    sys.setswitchinterval(0.001)
    app = create_app(config)
    try:
        if config.run_worker:  # a damaged store is a one-line error, not a startup traceback
            warm_up(app.state.obliviate)
        uvicorn.Server(_uvicorn_config(app, host, port, log_level)).run()
    finally:
        _release(app)  # also when it never started (port taken)


class ServerThread:
    """``with ServerThread(config) as url: ...``: the service on a free loopback port in a
    thread, stopped (worker included) on exit."""

    def __init__(
        self, config: ServeConfig, port: int | None = None, log_level: str = "warning"
    ) -> None:
        self.port = port or free_port()
        self.app = create_app(config)
        self.server = uvicorn.Server(_uvicorn_config(self.app, LOOPBACK, self.port, log_level))
        self.thread = threading.Thread(target=self.server.run, name="obliviate-serve", daemon=True)
        self.url = f"http://{LOOPBACK}:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                _release(self.app)
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        _release(self.app)
