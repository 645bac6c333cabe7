"""Dataclasses <-> OmegaConf structured configs.

OmegaConf 2.3 rejects ``typing.Literal`` annotations, which the project's config dataclasses
use for closed choices (``PrecisionConfig.dtype``). Rather than duplicating those classes,
:func:`omegaconf_schema` derives a twin dataclass whose ``Literal`` fields are plain ``str``
(or ``int``), recursively; :func:`from_container` builds the real dataclasses back from the
merged config and checks every ``Literal`` value, naming the field when one is not allowed.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin


def _literal_base(tp: Any) -> Any:
    values = get_args(tp)
    return type(values[0]) if values else str


def _convert_type(tp: Any) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        return _literal_base(tp)
    if origin in (Union, types.UnionType):
        args = tuple(_convert_type(a) for a in get_args(tp))
        return Union[args]  # noqa: UP007 - a runtime-built union
    if origin in (list, tuple):
        args = get_args(tp)
        return list[_convert_type(args[0])] if args else list
    if origin is dict:
        key, value = get_args(tp) or (str, Any)
        return dict[key, _convert_type(value)]
    if dataclasses.is_dataclass(tp):
        return omegaconf_schema(tp)
    return tp


def _schema_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_schema_instance(value)
    if isinstance(value, list):
        return [_schema_default(v) for v in value]
    return value


@functools.cache
def omegaconf_schema(cls: type) -> type:
    """A dataclass with ``cls``'s fields and defaults that OmegaConf accepts."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        tp = _convert_type(hints[f.name])
        if f.default_factory is not dataclasses.MISSING:
            factory = f.default_factory
            spec = dataclasses.field(default_factory=lambda fac=factory: _schema_default(fac()))
        elif f.default is not dataclasses.MISSING:
            spec = dataclasses.field(default=f.default)
        else:
            spec = dataclasses.field()
        specs.append((f.name, tp, spec))
    return dataclasses.make_dataclass(f"{cls.__name__}Schema", specs)


def to_schema_instance(obj: Any) -> Any:
    """The schema twin of a dataclass instance (for defaults held as instances)."""
    schema = omegaconf_schema(type(obj))
    return schema(**{f.name: _schema_default(getattr(obj, f.name))
                     for f in dataclasses.fields(obj)})


def _check_value(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ValueError(f"{where}={value!r}: choose one of "
                             f"{', '.join(map(repr, allowed))}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in get_args(tp):
            return None
        errors = []
        for arg in get_args(tp):
            if arg is type(None):
                continue
            try:
                return _check_value(arg, value, where)
            except (ValueError, TypeError) as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        return from_container(tp, value, where)
    if origin is list and isinstance(value, list):
        (item,) = get_args(tp) or (Any,)
        return [_check_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def from_container(cls: type, data: dict, where: str = "") -> Any:
    """Instance of ``cls`` from a plain (resolved) mapping; unknown keys are named."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where + '.' if where else ''}{unknown[0]}: no such field in "
                         f"{cls.__name__}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _check_value(hints[name], value, f"{where + '.' if where else ''}{name}")
    return cls(**kwargs)
