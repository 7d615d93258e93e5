"""``Config`` (the pydantic base of every schema), the YAML loader and dotted ``KEY=VALUE`` overrides.

Building a config is three steps on plain data, so that a file, the command line and a dict shipped
to a Ray worker all go through the same checks:

1. ``load_yaml(path)``: the file's mapping (``{}`` without a file);
2. ``apply_overrides(data, ["caption.enabled=false", ...])``: each dotted key set in that mapping,
   its value parsed as YAML (numbers, ``true``/``false``, ``null``, ``[lists]``, ``{maps}``);
3. ``Schema.from_dict(data)``: validation by the schema. A key the schema does not have is refused
   here, whether it came from the file or from ``--set`` (``extra="forbid"``), so overrides need no
   schema of their own.

Every failure is a ``ConfigError`` (a ``ValueError``) whose message lists each problem as
``dotted.key: what is wrong``, which the command-line entry points print as one error and exit 2.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A config that cannot be built; the message says which key is wrong and what it should be."""


class Config(BaseModel):
    """Base of every config section: unknown keys are refused, assignments are validated like the file is.

    ``from_dict`` and assignments raise ``ConfigError`` naming the key and what it should be. Keyword
    construction (``SplitConfig(detector="x")``) raises pydantic's ``ValidationError``, also a
    ``ValueError``: overriding ``__init__`` would make pydantic call it for every nested section too,
    and errors would lose their place.
    """

    # coerce_numbers_to_str: a name or path that YAML reads as a number (`write.name=2024`) is still a string.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """A section left empty in YAML (``split:`` with every key commented out) is null: read it as empty."""
        if isinstance(data, Mapping):
            empty = {name: [] if typing.get_origin(field.annotation) is list else {}
                     for name, field in cls.model_fields.items()
                     if data.get(name, 0) is None and _section_type(field.annotation) is not None
                     and type(None) not in typing.get_args(field.annotation)}
            if empty:
                data = {**data, **empty}
        return data

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, type(self), type(self).__name__)) from exc

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (tuples become lists); ``from_dict`` of it gives an equal config."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, source: str | None = None) -> Self:
        """The config of plain data (a parsed YAML file, a manifest's or checkpoint's copy, a dict sent to a
        worker); ``source`` names where the data came from in the error message (default: the class name)."""
        source = source or cls.__name__
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source} must be a mapping of keys to values, not {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, cls, source)) from exc


def load_yaml(path: str | Path | None, hint: str = "") -> dict[str, Any]:
    """The mapping in YAML file ``path`` (``{}`` for no path or an empty file).

    Raises FileNotFoundError (with ``hint`` appended) when the file is missing, ConfigError when it is
    not YAML or not a mapping.
    """
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} not found" + (f" ({hint})" if hint else ""))
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping of keys to values, not {type(loaded).__name__}")
    return loaded or {}


def parse_override(text: str) -> tuple[str, Any]:
    """``"filter.text.max_area=0.01"`` -> ``("filter.text.max_area", 0.01)``: the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted KEY, e.g. filter.text.max_area=0.01")
    if any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: {key!r} has an empty part; write keys as section.key, e.g. caption.dtype")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({' '.join(str(exc).split())}); "
                          "quote it, e.g. caption.prompt='\"a: b\"'") from exc
    return key, value


def set_key(data: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted ``key`` of nested ``data`` to ``value``, creating sections on the way.

    A number between dots indexes a list that is already there (``data.corpora.0.weight=2``). Whether
    the key exists in the schema is for the schema to say when the config is built.
    """
    parts = key.split(".")
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            node = node[_index(node, part, key, where)]
        else:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, (dict, list)):
                raise ConfigError(f"--set {key}: {where} is {child!r}, not a section with keys")
            node = child
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"--set {key}: {where} is {node!r}, not a section with keys")
    if isinstance(node, list):
        node[_index(node, parts[-1], key, key)] = value
    else:
        node[parts[-1]] = value


def _index(items: list[Any], part: str, key: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"--set {key}: {where.rpartition('.')[0]} is a list of {len(items)}; "
                          f"index it with 0..{len(items) - 1}, not {part!r}")
    return int(part)


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``data`` with each ``KEY=VALUE`` of ``overrides`` set (later ones win)."""
    out = copy.deepcopy(dict(data))
    for text in overrides:
        key, value = parse_override(text)
        set_key(out, key, value)
    return out


def load(schema: type[C], path: str | Path | None = None, overrides: Iterable[str] = (), *, hint: str = "",
         **fields: Any) -> C:
    """``schema`` built from YAML file ``path`` (or its defaults), then ``--set`` ``overrides``, then ``fields``.

    ``fields`` are top-level keys set from explicit options such as ``--output`` (None: not given, the
    file's value stays); they are applied last, so an explicit option wins over ``--set`` of the same key.
    """
    overrides = list(overrides)
    data = apply_overrides(load_yaml(path, hint), overrides)
    for name, value in fields.items():
        if value is not None:
            data[name] = value
    source = f"config {path}" if path is not None else "config"
    if overrides:
        source += " with --set overrides"
    return schema.from_dict(data, source)


# -- readable errors ------------------------------------------------------------------------------------------------


def format_errors(exc: ValidationError, schema: type[BaseModel], source: str = "config") -> str:
    """Pydantic's errors as ``dotted.key: what is wrong`` lines under ``source``, instead of its raw dump."""
    lines = [_describe(error, schema) for error in exc.errors()]
    if len(lines) == 1:
        return f"{source}: {lines[0]}"
    return f"{len(lines)} problems in {source}:\n" + "\n".join(f"  {line}" for line in lines)


def _describe(error: Any, schema: type[BaseModel]) -> str:
    loc = tuple(error["loc"])
    where = _dotted(loc)
    if error["type"] in ("extra_forbidden", "no_such_attribute"):  # a key in data, or an assignment
        parent = _section_at(schema, loc[:-1])
        known = ", ".join(sorted(parent.model_fields)) if parent is not None else "?"
        return f"{where}: unknown config key; {_dotted(loc[:-1]) or 'the top level'} has: {known}"
    message = error["msg"]
    if error["type"] == "value_error":  # our own validators: their message already says what to fix
        message = message.removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    shown = repr(error.get("input"))
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return f"{where or 'the config'}: {message}, not {shown}"


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _section_at(schema: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config class found at ``loc`` of ``schema`` (list indices step into the list's item class)."""
    current: type[BaseModel] | None = schema
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if current is not None else None
        if field is None:
            return None
        current = _section_type(field.annotation)
    return current


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The config class inside ``annotation`` (``X``, ``X | None``, ``list[X]``), if there is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_type(arg)
        if found is not None:
            return found
    return None
