"""The two errors the library raises on purpose: a setting it cannot accept, and a video a stage
cannot process. Both carry a message that says what to do."""

from __future__ import annotations

__all__ = ["ConfigError", "StageError"]


class ConfigError(ValueError):
    """A configuration key or value that the program cannot accept."""


class StageError(RuntimeError):
    """A video that a stage cannot process; ``status`` is a short machine-readable code."""

    def __init__(self, status: str, reason: str):
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason
