"""The settings of ``tim serve`` (the ``serve:`` section of a settings file)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ...core.config import Settings
from ...core.errors import ConfigError

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ServeConfig(Settings):
    # the detectors: NAME=PATH_OR_ID each (a run directory, an exported folder or a hub id), or one
    # PATH_OR_ID (named "default"); the first is the default of jobs that name none
    model: str | tuple[str, ...]
    data_dir: str | Path = "tim-serve-data"  # jobs.sqlite, uploads/ and reports/ (a Path once made)
    device: str = "cpu"  # cpu or cuda: where the scoring threads run the models
    workers: int = 1  # scoring threads, each with its own models
    queue: int = 32  # jobs queued or running at most; beyond: 503
    max_upload_mb: float = 200.0  # larger uploads: 413
    max_seconds: float = 600.0  # longer videos: 422
    token: str | None = None  # when set, /api/ asks for Authorization: Bearer TOKEN
    keep_uploads: bool = False  # keep a video after scoring (until its job expires)
    keep_hours: float = 24.0  # a finished job, its upload and its page are removed this long after it ended
    sweep_seconds: float = 60.0  # how often expired jobs and the jobs of stopped workers are looked for

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "model", (self.model,) if isinstance(self.model, str) else tuple(self.model))
        self.models  # noqa: B018 - checked now: a bad name is a ConfigError before anything loads
        for name in ("workers", "queue"):
            if getattr(self, name) < 1:
                raise ConfigError(f"serve {name}: 1 or more, not {getattr(self, name)}")
        for name in ("max_upload_mb", "max_seconds", "keep_hours", "sweep_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"serve {name.replace('_', ' ')}: more than 0, not {getattr(self, name)}")

    @property
    def models(self) -> dict[str, str]:
        """Name -> run directory, folder or hub id, the default first."""
        out: dict[str, str] = {}
        if not self.model:
            raise ConfigError("serve model: at least one detector (--model NAME=PATH_OR_ID)")
        for entry in self.model:
            name, eq, ref = entry.partition("=")
            if not eq:
                if len(self.model) > 1:
                    raise ConfigError(f"serve model {entry!r}: with several detectors each is NAME=PATH_OR_ID")
                name, ref = "default", entry
            if not MODEL_NAME.match(name) or not ref:
                raise ConfigError(f"serve model {entry!r}: NAME=PATH_OR_ID with a NAME of letters, digits, '.', '_' "
                                  "or '-'")
            if name in out:
                raise ConfigError(f"serve model: the name {name!r} is given twice")
            out[name] = ref
        return out

    @property
    def upload_limit(self) -> int:
        """The largest upload accepted, bytes."""
        return int(self.max_upload_mb * 2**20)
