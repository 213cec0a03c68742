"""Stage configs: dataclasses loaded from YAML/TOML/JSON, overridden from the CLI, written resolved."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml

from ammkd.common.errors import ConfigError
from ammkd.common.files import atomic_write_json

C = TypeVar("C")


def _read(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"{path}: unknown config type (use .yaml, .toml or .json)")
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot parse ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of option names to values")
    return data


def _coerce(cls, name: str, value: Any, hint: Any, where: str) -> Any:
    base = hint if isinstance(hint, type) else None
    if value is None or base is None:
        return value
    try:
        if base is bool and isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if base in (int, float, str) and not isinstance(value, base):
            if base is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return base(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: option {name!r} must be {base.__name__}, got {value!r}") from None
    return value


def build_config(cls: type[C], values: dict, where: str = "config") -> C:
    """Instantiate `cls` from a dict, refusing unknown keys and coercing scalar types."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {unknown}; known: {sorted(fields)}")
    hints = get_type_hints(cls)
    kwargs = {k: _coerce(cls, k, v, hints.get(k), where) for k, v in values.items()}
    try:
        cfg = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    validate = getattr(cfg, "validate", None)
    if validate:
        validate()
    return cfg


def load_config(cls: type[C], path: str | Path | None = None, **overrides: Any) -> C:
    """File values first, then non-None overrides (the CLI's options) on top."""
    values = _read(Path(path)) if path else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build_config(cls, values, str(path or cls.__name__))


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as JSON (reloadable with load_config)."""
    atomic_write_json(path, dataclasses.asdict(cfg))
