"""The key paths a config Struct accepts, for tests that keep the docs and the example complete."""

from __future__ import annotations

import types
import typing
from typing import Any

import msgspec


def schema_paths(struct: type[msgspec.Struct], prefix: str = "") -> set[str]:
    """Every key path the schema accepts; dict members as '*', list items as '[]'."""
    paths = set()
    for field in msgspec.structs.fields(struct):
        path = prefix + field.encode_name
        paths.add(path)
        for inner in _struct_types(field.type):
            paths |= schema_paths(inner, path + ".")
        for inner in _container_struct_types(field.type, dict):
            paths |= schema_paths(inner, path + ".*.")
        for inner in _container_struct_types(field.type, list):
            paths |= schema_paths(inner, path + "[].")
    return paths


def _struct_types(annotation: Any) -> list[type[msgspec.Struct]]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation) if origin in (typing.Union, types.UnionType) else (annotation,)
    return [a for a in args if isinstance(a, type) and issubclass(a, msgspec.Struct)]


def _container_struct_types(annotation: Any, container: type) -> list[type[msgspec.Struct]]:
    if typing.get_origin(annotation) is not container:
        return []
    return _struct_types(typing.get_args(annotation)[-1])
