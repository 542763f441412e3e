"""Pretrained weights: hub ids or local directories, the usual caches, never a silent fallback.

A name is either a local directory in the Hugging Face layout (``config.json`` plus weights) or a
hub id (``facebook/dinov2-small``). Hub ids are looked up in the local cache first
(``HF_HOME``, default ``~/.cache/huggingface``), then downloaded unless ``HF_HUB_OFFLINE=1``.
Before a download the hub is asked once per model and process, with a short timeout, whether it
has the model (:func:`reachable`), so a machine without network fails in seconds, not after the
download library's retries; :func:`check_hf_model` answers "will this load?" without loading anything,
for the checks commands make before they touch any video (:mod:`..execution.preflight`).
When neither works the program stops with :class:`WeightsNotFound`, saying what it looked for and
how to provide it. Random initialisation happens only when asked for (``init="random"``), and the
returned record says which weights were used.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse
from typing import Any, Callable

from ..core.errors import ConfigError

__all__ = ["RANDOM_MARKER", "WeightsNotFound", "check_folder", "check_hf_model", "hub_endpoint", "is_cached",
           "load_hf_model", "looks_like_hub_id", "reachable", "report_folder_for", "resolve_folder", "save_random_model", "INITS"]

log = logging.getLogger(__name__)

INITS = ("pretrained", "random")
# A file in a saved model directory saying its weights are a random initialisation (the demo's
# and the tests' models): every record of those weights then says so.
RANDOM_MARKER = "truthinmotion-random-init.json"


def save_random_model(model: Any, path: str | Path) -> Path:
    """Save a randomly initialised model in the hub layout, marked as random."""
    path = Path(path)
    model.save_pretrained(path)
    (path / RANDOM_MARKER).write_text('{"init": "random"}\n')
    return path


def is_cached(hub_id: str) -> bool:
    """Whether a hub model's config is in the local cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - any failure means "not usable offline"
        return False


class WeightsNotFound(ConfigError):
    """Pretrained weights that are neither cached, nor local, nor downloadable."""


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(name: str) -> bool:
    """``org/model`` and nothing a user would type as a path: no leading ``.``, ``/`` or ``~``, one
    slash, and no local directory named like its first part (``models/x`` where ``models/``
    exists is a mistyped path, not a hub id). Only such names are looked up on the hub."""
    if not _HUB_ID.match(name):
        return False
    return not Path(name.split("/")[0]).is_dir()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


@functools.lru_cache(maxsize=None)
def reachable(url: str, timeout: float = 3.0) -> str | None:
    """None if an HTTP HEAD request for ``url`` succeeds within ``timeout`` seconds, else why not
    (no network, a name that does not resolve, a proxy's or the server's error). Asked once per
    URL and process; the environment's proxies apply."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "truthinmotion"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError as err:
        return f"{url} answered HTTP {err.code}"
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return f"{urlparse(url).netloc or url} is not reachable ({reason})"


def _why_no_download(name: str) -> str | None:
    """None where the hub can give model ``name``, else why not."""
    return "HF_HUB_OFFLINE is set" if _offline() else reachable(f"{hub_endpoint().rstrip('/')}/api/models/{name}")


def _cache_dir() -> str:
    return os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")


def _not_found(what: str, name: str, reason: str) -> WeightsNotFound:
    return WeightsNotFound(
        f"{what}: pretrained weights for {name!r} are not in the cache ({_cache_dir()}) and could not be "
        f"downloaded ({reason}). Provide them by running `huggingface-cli download {name}` on a "
        f"machine with network access and copying the cache here, or pass a local directory that "
        f"holds config.json and the weights; or choose --init random explicitly (tests, demo)."
    )


def check_hf_model(name: str, *, init: str = "pretrained", random_known: bool = False, what: str = "model") -> str:
    """Whether :func:`load_hf_model` will find ``name``, without loading it: how it will be had
    (``"local"``, ``"cached"``, ``"download"``, ``"random"``), or :class:`WeightsNotFound`."""
    if init not in INITS:
        raise ConfigError(f"init: {init!r} not one of {', '.join(INITS)}")
    path = Path(name).expanduser()
    if init == "random":
        if path.is_dir() or random_known:
            return "random"
        raise ConfigError(f"{what}: no architecture known for {name!r}: give a local directory")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WeightsNotFound(f"{what}: {path} has no config.json (expected a Hugging Face model directory)")
        return "local"
    if not looks_like_hub_id(name):
        raise WeightsNotFound(f"{what}: {name!r} is not a local directory (looked for {path.resolve()}) and not a "
                              "hub id like 'org/model'")
    if is_cached(name):
        return "cached"
    reason = _why_no_download(name)
    if reason:
        raise _not_found(what, name, reason)
    return "download"


def load_hf_model(
    model_cls: Any,
    name: str,
    *,
    init: str = "pretrained",
    random_config: Callable[[], Any] | None = None,
    what: str = "model",
) -> tuple[Any, dict[str, str]]:
    """Load ``model_cls`` (a transformers class) from ``name``; returns (model, weights record).

    ``init="random"`` builds the architecture from ``name``'s ``config.json`` when ``name`` is a
    local directory, else from ``random_config()``, with random weights.
    """
    how = check_hf_model(name, init=init, random_known=random_config is not None, what=what)
    path = Path(name).expanduser()
    if how == "random":
        config = model_cls.config_class.from_pretrained(str(path)) if path.is_dir() else random_config()
        log.warning("%s: random initialisation (--init random), not pretrained weights", what if what == name else f"{what} {name}")
        return model_cls(config), {"name": name, "init": "random"}
    if how == "local":
        init_kind = "random-saved" if (path / RANDOM_MARKER).is_file() else "pretrained"
        return model_cls.from_pretrained(str(path)), {"name": str(path.resolve()), "init": init_kind}
    try:
        return model_cls.from_pretrained(name, local_files_only=True), {"name": name, "init": "pretrained"}
    except OSError:  # the config is cached, not all the weights
        pass
    reason = _why_no_download(name)  # asked once: no retries against a host that cannot answer
    if reason is None:
        try:
            return model_cls.from_pretrained(name), {"name": name, "init": "pretrained"}
        except OSError as err:
            reason = str(err).splitlines()[0]
    raise _not_found(what, name, reason)


# ---------------------------------------------------------------- whole folders (detectors)


def report_folder_for(name: str | Path, out_dir: str | Path | None, what: str) -> None:
    """Refuse a hub id without ``out_dir``: a report written beside a detector would land in
    ``./org/name``, a local folder that then hides the hub id. ``what``: the files meant."""
    if out_dir is None and not Path(name).exists() and looks_like_hub_id(split_revision(str(name))[0]):
        raise ConfigError(f"{name} is a hub id: pass --out, the folder for {what}")


def split_revision(name: str) -> tuple[str, str | None]:
    """``org/name@revision`` -> (``org/name``, ``revision``); no ``@``: (name, None)."""
    repo, at, revision = str(name).partition("@")
    return (repo, revision or None) if at and looks_like_hub_id(repo) else (str(name), None)


def _snapshot(repo: str, revision: str | None, local_only: bool) -> Path:
    from huggingface_hub import snapshot_download

    # The cache is named on every call: huggingface_hub reads HF_HUB_CACHE once, when imported.
    return Path(snapshot_download(repo, revision=revision, cache_dir=_cache_dir(), local_files_only=local_only))


def _folder_not_found(what: str, name: str, reason: str) -> WeightsNotFound:
    return WeightsNotFound(
        f"{what}: {name!r} is not a local folder and the hub id is not in the cache ({_cache_dir()}), and it could "
        f"not be downloaded ({reason}). Run `huggingface-cli download {name.replace('@', ' --revision ')}` on a "
        "machine with network access and copy the cache here (HF_HUB_CACHE), or pass the folder itself.")


def check_folder(name: str | Path, *, what: str = "model") -> str:
    """Whether :func:`resolve_folder` will find ``name``, without downloading: ``local``, ``cached``
    or ``download`` (the hub answers), else :class:`WeightsNotFound`."""
    repo, revision = split_revision(str(name))
    if Path(name).expanduser().exists() or not looks_like_hub_id(repo):
        return "local"  # a path: its reader says what is wrong with it
    try:
        _snapshot(repo, revision, local_only=True)
        return "cached"
    except Exception:  # noqa: BLE001 - huggingface_hub's own errors: not in the cache
        pass
    reason = _why_no_download(repo)
    if reason:
        raise _folder_not_found(what, str(name), reason)
    return "download"


def resolve_folder(name: str | Path, *, what: str = "model") -> Path:
    """A local folder for ``name``: the path itself, or the snapshot of the hub id
    ``org/name[@revision]`` from the cache, downloaded when it is not there (unless
    ``HF_HUB_OFFLINE`` or the hub does not answer: then :class:`WeightsNotFound`). A name that is
    neither an existing path nor a hub id comes back as a path, for its reader to refuse."""
    repo, revision = split_revision(str(name))
    if Path(name).expanduser().exists() or not looks_like_hub_id(repo):
        return Path(name).expanduser()
    try:
        return _snapshot(repo, revision, local_only=True)
    except Exception as err:  # noqa: BLE001 - not in the cache (or an incomplete snapshot)
        cached_error = str(err).splitlines()[0]
    reason = _why_no_download(repo)
    if reason is None:
        try:
            log.info("%s: downloading %s from %s", what, name, hub_endpoint())
            return _snapshot(repo, revision, local_only=False)
        except Exception as err:  # noqa: BLE001 - not found, gated, revision unknown, network
            reason = f"{type(err).__name__}: {str(err).splitlines()[0]}"
    log.debug("%s: %s not in the cache (%s)", what, name, cached_error)
    raise _folder_not_found(what, str(name), reason)
