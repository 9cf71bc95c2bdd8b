"""The Chorus HTTP layer and composition root: settings, app factory, routes, guards, errors."""

from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str) -> object:
    # Lazy, so ``python -m service.cli`` and the settings tests do not import Litestar for nothing.
    if name == "create_app":
        from service.app import create_app

        return create_app
    raise AttributeError(name)
