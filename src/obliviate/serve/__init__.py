"""The deletion-request service over a shard store (optional extra ``obliviate[serve]``).

:func:`create_app` builds the FastAPI application; ``obliviate serve`` runs it on uvicorn. See
``docs/serve.md``. Importing this package is light: the application (FastAPI, uvicorn,
prometheus_client) loads on first use of :func:`create_app` or :class:`ServeConfig`, and
:mod:`obliviate.serve.signing` needs only ``cryptography``.
"""

from typing import Any

__all__ = ["ServeConfig", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from obliviate.serve import app

        return getattr(app, name)
    raise AttributeError(name)
