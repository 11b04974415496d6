"""The one typed config mechanism: dataclasses filled from YAML, every key and type checked before work starts.

Why one mechanism: a wrongly typed value (``min_words: "many"``) that slips through is a worker crash an
hour into a Dataflow job. Sources, dedupe settings, filter-rule parameters, mixture specs and the trainer
all parse through :func:`build` (or :func:`check_value` for one value) and fail with one error class,
:class:`ConfigError`, whose message names the file, the dotted key, what was given and what is allowed.

Supported field types: ``int``, ``float`` (ints accepted; YAML's ``6e-4`` string too), ``str``, ``bool``,
``list``/``tuple``/``dict`` (optionally parameterized), ``X | None``, ``Literal[...]``, ``Any`` and nested
dataclasses. Range checks live in the dataclass's ``__post_init__`` through :func:`require`.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import math
from typing import Any, Literal, Mapping, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A bad config value; the message names the file, the key and the fix."""


def require(ok: bool, key: str, value: Any, expected: str) -> None:
    """Range/shape check for ``__post_init__``: raise ConfigError('key: expected ..., got ...')."""
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))


def _type_name(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin is Union:
        return " or ".join(_type_name(a) for a in get_args(hint))
    if hint is type(None):
        return "null"
    names = {int: "an integer", float: "a number", str: "text", bool: "true or false",
             list: "a list", tuple: "a list", dict: "a mapping", Mapping: "a mapping",
             collections.abc.Mapping: "a mapping"}
    if origin is not None:
        return names.get(origin, getattr(origin, "__name__", str(origin)))
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def check_value(value: Any, hint: Any, key: str) -> Any:
    """``value`` converted to ``hint`` (int -> float, list -> tuple, YAML float strings), or ConfigError."""
    if hint is Any:
        return value
    origin = get_origin(hint)
    if origin is Union:
        errors = []
        for option in get_args(hint):
            try:
                return check_value(value, option, key)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{key}: expected {_type_name(hint)}, got {value!r}")
    if hint is type(None):
        if value is None:
            return None
    elif origin is Literal:
        if any(value == a and type(value) is type(a) for a in get_args(hint)):
            return value
    elif dataclasses.is_dataclass(hint):
        return build(hint, value, "", key + ".")
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if is_number(value):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 6e-4 as a string
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint in (list, tuple) or origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            args = get_args(hint)
            item = args[0] if args else Any
            items = [check_value(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if (hint is tuple or origin is tuple) else items
    elif hint is dict or origin in (dict, Mapping) or hint is Mapping:
        if isinstance(value, Mapping):
            args = get_args(hint)
            if len(args) == 2:
                return {check_value(k, args[0], f"{key}.<key>"): check_value(v, args[1], f"{key}.{k}")
                        for k, v in value.items()}
            return dict(value)
    else:
        if isinstance(value, hint):
            return value
    raise ConfigError(f"{key}: expected {_type_name(hint)}, got {value!r}")


def build(cls: type, data: Any, where: str = "", prefix: str = ""):
    """Instantiate dataclass ``cls`` from a mapping, checking every key and type.

    ``where`` names the file (prepended to messages), ``prefix`` the dotted path of this mapping. Fields
    without a default are required keys.
    Errors raised by ``cls.__post_init__`` get the prefix and file prepended too.
    """
    head = f"{where}: " if where else ""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{head}{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{head}{prefix}{key}: unknown key; allowed here: {', '.join(sorted(names))}")
        try:
            kwargs[key] = check_value(value, hints[key], f"{prefix}{key}")
        except ConfigError as e:
            raise ConfigError(f"{head}{e}") from None
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{head}{prefix}{missing[0]}: missing; this key is required")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(f"{head}{prefix if not msg.startswith(prefix) else ''}{msg}") from None


def params_hint(default: Any) -> Any:
    """Type to check a parameter against, from its default value (filter rules declare defaults only)."""
    if default is None:
        return Any
    if isinstance(default, bool):
        return bool
    if isinstance(default, float):
        return float
    if isinstance(default, int):
        return int
    if isinstance(default, str):
        return str
    if isinstance(default, (list, tuple)):
        item = params_hint(default[0]) if default else Any
        if item is int and any(isinstance(v, float) for v in default):
            item = float
        return tuple[item, ...]
    if isinstance(default, Mapping):
        return dict
    return Any
