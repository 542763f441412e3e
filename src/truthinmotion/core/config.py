"""Settings: one dataclass per stage, defaults < YAML < command line, unknown keys are errors.

Every stage's settings derive from :class:`Settings`. ``cfg.updated(mapping)`` returns a new
instance with the mapping applied; keys that are not fields, values of the wrong type and values
out of range raise :class:`ConfigError` with a message naming what is allowed. ``None`` values are
dropped so that command-line options the user did not give never override YAML or defaults.

A settings file has one shape for every command: a mapping of sections (``faces:``, ``train:``,
...), each the keys of one stage's settings (:func:`read_sections`).
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

from .errors import ConfigError

__all__ = ["Settings", "load_yaml", "read_sections", "save_yaml"]

log = logging.getLogger(__name__)

S = TypeVar("S", bound="Settings")


def _allowed_types(tp: Any) -> tuple[type, ...]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        out: tuple[type, ...] = ()
        for arg in typing.get_args(tp):
            out += _allowed_types(arg)
        return out
    if origin is not None:
        return (origin,)
    if tp is float:
        return (float, int)
    if tp is type(None):
        return (type(None),)
    return (tp,)


def _type_name(tp: type) -> str:
    return {type(None): "null", tuple: "list", str: "string", float: "number", int: "integer",
            bool: "true/false", dict: "mapping"}.get(tp, tp.__name__)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of every stage's settings; subclasses add fields and may override ``check``."""

    def updated(self: S, overrides: Mapping[str, Any] | None) -> S:
        """Return a copy with ``overrides`` applied (``None`` values skipped) and validated."""
        new = dataclasses.replace(self, **self.validate(overrides))
        new.check()
        return new

    @classmethod
    def validate(cls, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        """``overrides`` without its ``None`` values, lists as tuples; a key that is not a field or a
        value of the wrong type is a :class:`ConfigError` (ranges are :meth:`check`'s)."""
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(unknown)} for {cls.__name__}; "
                f"allowed: {', '.join(sorted(names))}"
            )
        hints = typing.get_type_hints(cls)
        for key, value in list(overrides.items()):
            allowed = _allowed_types(hints[key])
            if isinstance(value, list) and tuple in allowed:  # YAML and JSON give lists
                value = overrides[key] = tuple(value)
            # bool is a subclass of int in Python, but `epochs: true` is never meant as 1.
            wrong_bool = isinstance(value, bool) and bool not in allowed
            if wrong_bool or not isinstance(value, allowed):
                shown = [t for t in allowed if not (t is int and float in allowed)]
                names_ = " or ".join(_type_name(t) for t in shown)
                raise ConfigError(f"{key}: expected {names_}, got {value!r} ({_type_name(type(value))})")
        return overrides

    def check(self) -> None:
        """Raise :class:`ConfigError` for out-of-range values (subclasses extend)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any] | None) -> S:
        return cls().updated(data)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file is an empty mapping, anything else is an error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def read_sections(path: str | Path, known: Sequence[str], flat: str | None = None) -> dict[str, dict[str, Any]]:
    """The sections of the settings file ``path``: ``{name: {key: value}}``, every name one of
    ``known`` (else a :class:`ConfigError` naming them); an empty section is an empty mapping.

    A file of one stage's keys without a section (the form that ``tim train --config`` and a few
    others read before there was one shape) is read as the section ``flat``, with a warning that
    shows it in sections; where the command has no such stage (``flat`` is None) it is an error.
    """
    data = load_yaml(path)
    loose = sorted(k for k, v in data.items() if not isinstance(v, dict) and not (v is None and k in known))
    if not loose:
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {', '.join(map(str, unknown))}; "
                              f"known: {', '.join(known)}")
        return {name: dict(keys or {}) for name, keys in data.items()}
    if flat is None or any(isinstance(data[k], dict) for k in data if k in known):
        raise ConfigError(f"{path}: {', '.join(map(str, loose))} outside a section; a settings file holds "
                          f"sections ({', '.join(known)}), each the keys of one stage's settings")
    log.warning("%s: settings outside a section are deprecated; write them under the section %r, the form "
                "every command reads:\n%s", path, flat, yaml.safe_dump({flat: data}, sort_keys=False).rstrip())
    return {flat: dict(data)}


def save_yaml(data: Mapping[str, Any], path: str | Path) -> None:
    from .io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(dict(data), sort_keys=False))
