"""Stage configs: dataclasses loaded from YAML/TOML/JSON, overridden from the CLI, written resolved."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import yaml

from ammkd.common.errors import ConfigError
from ammkd.common.files import atomic_write_json

C = TypeVar("C")


def _read(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"{path}: unknown config type (use .yaml, .toml or .json)")
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot parse ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of option names to values")
    return data


def _coerce(name: str, value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a field's type hint (scalars, X | None, list[X]); convert strings."""
    args = get_args(hint)
    if type(None) in args:  # X | None
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    if value is None:
        raise ConfigError(f"{where}: option {name!r} needs a value")
    if get_origin(hint) is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: option {name!r} must be a list, got {value!r}")
        (item,) = get_args(hint) or (None,)
        return [_coerce(f"{name}[{i}]", v, item, where) for i, v in enumerate(value)]
    if not isinstance(hint, type):
        return value
    try:
        if hint is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise ValueError(value)
        elif hint in (int, float, str) and not isinstance(value, hint) or isinstance(value, bool):
            if hint is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            if isinstance(value, bool) or isinstance(value, (list, dict)):
                raise ValueError(value)
            return hint(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: option {name!r} must be {hint.__name__}, got {value!r}") from None
    return value


def require_finite(cfg: Any, where: str) -> None:
    """Every float of a dataclass config (and of its lists) is finite; else a ConfigError naming it."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        items = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in items):
            raise ConfigError(f"{where}: option {f.name!r} must be finite, got {value!r}")


def check_schedule(cfg: Any, where: str) -> None:
    """The numbers every training config shares: finite values, epochs and lr > 0, warm-up
    fraction in [0, 1], weight decay and seed >= 0."""
    require_finite(cfg, where)
    if not (cfg.epochs > 0 and cfg.lr > 0):
        raise ConfigError(f"{where}: epochs and lr must be > 0, got epochs {cfg.epochs}, lr {cfg.lr}")
    if not 0 <= cfg.warmup_fraction <= 1:
        raise ConfigError(f"{where}: warmup_fraction must be in [0, 1], got {cfg.warmup_fraction}")
    if cfg.weight_decay < 0 or cfg.seed < 0:
        raise ConfigError(f"{where}: weight_decay and seed must be >= 0, got {cfg.weight_decay}, {cfg.seed}")


def build_config(cls: type[C], values: dict, where: str = "config") -> C:
    """Instantiate `cls` from a dict, refusing unknown keys and coercing scalar types."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {unknown}; known: {sorted(fields)}")
    hints = get_type_hints(cls)
    kwargs = {k: _coerce(k, v, hints.get(k), where) for k, v in values.items()}
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
