"""Recipe schemas on pydantic: the shared field types, and one error that lists every mistake.

The cube, patch and experiment recipes are frozen pydantic dataclasses made with
:data:`settings` (unknown keys are refused). :func:`validate` runs pydantic once over a
recipe's mapping and turns every failure into one line naming the key path
(``grid.resolution``), the value, what is wrong, what is allowed and the fix — with a "did you
mean" for a misspelt key or choice — then raises them together as one error of the recipe's
kind. A field's example and unit come from its :class:`Doc` metadata; a validator raises
:class:`Mistake` for a check that pydantic does not know (a calendar date, a band name...).

Examples
--------
>>> @settings
... class Box(Section):
...     size: Annotated[Int, Ge(1), Doc(example=256)] = 256
...     exact: Annotated[bool, Strict()] = False
>>> validate(Box, {"size": 2.5, "exatc": True}, error=ValueError, where="box.yaml")
Traceback (most recent call last):
...
ValueError: box.yaml has 2 problem(s):
  - size=2.5 is a float, not an integer. Allowed: an integer >= 1. Fix: write e.g. size: 256.
  - exatc=True is an unknown key. Allowed: keys in the recipe: size, exact. Fix: did you mean 'exact'?
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

import pydantic
import pydantic.dataclasses
import typing_extensions
import yaml
from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import (
    BeforeValidator,
    ConfigDict,
    GetCoreSchemaHandler,
    Strict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    model_validator,
)
from pydantic_core import core_schema as cs

from lames_cube.errors import RecipeMistake as Mistake

__all__ = ["NO_VALUE", "Doc", "Ge", "Gt", "Int", "Le", "Lt", "MinLen", "Mistake", "Number",
           "Section", "SiteId", "Text", "Written", "keys", "mistake_line", "read_yaml", "settings",
           "show", "validate"]

#: The decorator of every recipe section: a frozen pydantic dataclass refusing unknown keys.
settings = pydantic.dataclasses.dataclass(
    frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False))
#: A :class:`Mistake` ``value`` that shows no value (a key that is missing).
NO_VALUE: Any = object()


def _as_given(value: Any, handler: Any) -> Any:
    """A number is checked as a float but kept as written (``10`` stays an int)."""
    checked = handler(value)
    return value if type(value) is int else checked


def _id_text(value: Any) -> Any:
    return str(value) if type(value) is int else value


#: An integer (never a bool, a float or a numeric string).
Int = Annotated[int, Strict()]
#: A finite number, int or float (never a bool or a string), kept as written.
Number = Annotated[float, Strict(), WrapValidator(_as_given)]
#: A non-empty string, stripped.
Text = Annotated[str, Strict(), StringConstraints(strip_whitespace=True, min_length=1)]


@dataclasses.dataclass(frozen=True)
class Doc:
    """What the error lines quote about a field: an example value, the unit, and optionally
    the allowed values and the fix in words, or the noun of its choices (``resampling
    method``)."""

    example: Any = None
    unit: str = ""
    allowed: str | None = None
    fix: str | None = None
    noun: str | None = None


@dataclasses.dataclass(frozen=True)
class Written:
    """Field metadata: a file writes the field as ``form`` (``area: {bbox: [...]}`` for an
    ``Area``). Pydantic validates that form; ``read`` makes the field's value of it and
    ``write`` turns a value of the field's own type back into it."""

    form: Any
    read: Callable[[Any], Any]
    write: Callable[[Any], Any]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        inner = cs.no_info_after_validator_function(self.read, handler.generate_schema(self.form))
        return cs.no_info_before_validator_function(self.write, inner)


#: A LAMES site id: text, or an integer read as text.
SiteId = Annotated[Text, BeforeValidator(_id_text), Doc(
    "['817', '2203']", allowed="LAMES site ids as strings or integers")]


@settings
class Section:
    """Base of every recipe section: a mapping read from a file may leave keys empty
    (``key:`` or ``null`` mean the default); the keys in ``_INTERNAL`` (``source``) are not
    the file's to set and come from the validation context."""

    _INTERNAL: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _document(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = {k: v for k, v in data.items() if v is not None}
        for key in cls._INTERNAL:
            if key in data:
                raise Mistake("is an unknown key", f"keys in the recipe: {_keys_text(cls)}",
                              "remove it (it is set when the recipe is read)", key=key,
                              value=data[key])
        context = info.context or {}
        data.update({k: context[k] for k in cls._INTERNAL if k in context})
        return cls._shape(data)

    @classmethod
    def _shape(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The file's mapping as the section's fields (subclasses override)."""
        return data


def keys(name: str, names: tuple[str, ...]) -> type:
    """A mapping of optional ``names`` (any values: another check reads them); unknown keys
    are refused, with a "did you mean"."""
    mapping = typing_extensions.TypedDict(name, dict.fromkeys(names, Any), total=False)
    return pydantic.with_config(ConfigDict(extra="forbid"))(mapping)


def show(value: Any) -> str:
    """``repr(value)``, cut to 120 characters."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def validate(cls: type, data: Any, *, error: type[Exception], where: str,
             context: Mapping[str, Any] | None = None) -> Any:
    """``cls`` validated from the mapping ``data``; every mistake at once as one ``error``.

    ``where`` (a file, or e.g. "the patch recipe") starts the message; ``context`` reaches the
    validators (``base_dir`` for relative paths, ``source`` for the recipe's ``source``).
    """
    try:
        return _adapter(cls).validate_python(data, context=dict(context or {}))
    except ValidationError as exc:
        raise error(report(exc, cls, where)) from None


def report(exc: ValidationError, cls: type, where: str) -> str:
    """The message of a failed validation of ``cls``: one line per mistake."""
    errors = exc.errors(include_url=False)
    # a list with a wrong item also reports itself too short (the item was dropped), and a
    # misspelt key leaves the key it means missing: one mistake each, said once
    deeper = {e["loc"][:n] for e in errors for n in range(len(e["loc"]))}
    meant = {(*e["loc"][:-1], _meant(cls, e["loc"])) for e in errors if e["type"] in _UNKNOWN}
    return _heading(where, [line for e in errors
                            if not (e["type"] == "too_short" and e["loc"] in deeper)
                            and not (e["type"] in _MISSING and e["loc"] in meant)
                            for line in _lines(e, cls)])


def _heading(where: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{where}: {problems[0]}"
    sections = {p.split("=")[0].split(" ")[0].split("[")[0].split(".")[0] for p in problems}
    subject = f"{where}: {sections.pop()}" if len(sections) == 1 else where
    return f"{subject} has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems)


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


# --------------------------------------------------------------------------- reading
class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice (first on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


def _construct_timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode):
    """A YAML date, or the text as written when it names no calendar day (``2021-02-30``): PyYAML
    would raise a bare ``ValueError``; the validator reports it with the key and a fix."""
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return loader.construct_scalar(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def read_yaml(path: Path, error: type[Exception]) -> Any:
    """The YAML file ``path`` (a key given twice is an error), or ``error`` naming the line."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}. Fix: correct the syntax at the line "
                    "shown.") from None


# --------------------------------------------------------------------------- the lines
def mistake_line(mistake: Mistake, key: str, value: Any) -> str:
    """``mistake`` as a line about ``key`` holding ``value``."""
    return _line(key, value, mistake.what, mistake.allowed, mistake.fix)


def _line(key: str, value: Any, what: str, allowed: str, fix: str) -> str:
    shown = "" if value is NO_VALUE else f"={show(value)}"
    end = "" if fix.endswith((".", "?", "!")) else "."
    return f"{key}{shown} {what}. Allowed: {allowed}. Fix: {fix}{end}"


def _path(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


_MAPPINGS = ("dataclass_type", "dataclass_args_type", "model_type", "dict_type", "typed_dict_type",
             "mapping_type")
_LISTS = ("list_type", "tuple_type", "too_short", "set_type", "iterable_type")
_RANGES = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
_UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")
_MISSING = ("missing", "missing_keyword_argument")


def _meant(root: type, loc: tuple) -> str | None:
    """The known key closest to the unknown key at ``loc``, if one is close."""
    close = difflib.get_close_matches(str(loc[-1]), list(_fields(_locate(root, loc)[2]) or ()), n=1)
    return close[0] if close else None


def _lines(err: Mapping[str, Any], root: type) -> list[str]:
    """The lines of one pydantic error: key path, value, what is wrong, what is allowed, fix."""
    loc, kind, value = tuple(err["loc"]), err["type"], err["input"]
    key, label = _path(loc) or "(top level)", _path(loc[:-1]) or "the recipe"
    leaf = next((p for p in reversed(loc) if isinstance(p, str)), "")
    tp, meta, owner = _locate(root, loc)
    doc = next((m for m in meta if isinstance(m, Doc)), Doc())
    allowed, noun = _range(tp, meta, doc.unit)
    allowed = doc.allowed or allowed
    example = "" if doc.example is None else f", e.g. {doc.example}"
    fix = doc.fix or (f"write e.g. {leaf}: {doc.example}" if example else
                      f"write {leaf}: true or false" if tp is bool else "correct it")
    raised = (err.get("ctx") or {}).get("error")
    if isinstance(raised, Mistake):
        key = _path((*loc[:-1], raised.key)) if raised.key else key
        return [f"{key}{line}" for line in raised.lines] or [
            _line(key, m.value if m.value_given else value, m.what, m.allowed or allowed,
                  m.fix or fix) for m in raised.parts or (raised,)]
    if kind in _UNKNOWN:
        close = _meant(root, loc)
        prefix = f"{label}." if loc[:-1] else ""
        return [_line(key, value, "is an unknown key", f"keys in {label}: {_keys_text(owner)}",
                      f"did you mean '{prefix}{close}'?" if close
                      else "remove it or rename it to a known key")]
    if kind in _MISSING:
        return [_line(key, NO_VALUE, "is missing (required)",
                      f"keys in {label}: {_keys_text(owner)}",
                      f"add '{key}'" + (f", e.g. {leaf}: {doc.example}" if example else ""))]
    if kind in _MAPPINGS:
        return [_line(key, value, f"is a {type(value).__name__}, not a mapping",
                      f"a mapping with keys {_keys_text(tp) or '(any)'}",
                      f"write {_path(loc) or 'the recipe'} as 'key: value' lines{example}")]
    if kind == "literal_error":
        choices = [str(c) for c in typing.get_args(tp)]
        close = difflib.get_close_matches(str(value), choices, n=1)
        return [_line(key, value, f"is not a {doc.noun or 'known choice'}", " | ".join(choices),
                      f"did you mean {close[0]!r}?" if close
                      else doc.fix or f"use one of {', '.join(choices)}")]
    if kind in _LISTS:
        what = "mapping" if typing.get_origin(tp) is dict else "list"
        empty = "non-empty " if any(isinstance(m, MinLen) for m in meta) else ""
        return [_line(key, value, f"is not a {empty}{what}", doc.allowed or f"a YAML {what}", fix)]
    if kind in _RANGES:
        return [_line(key, value, "is out of range", allowed,
                      doc.fix or f"set {key} within that range{example}")]
    if kind.startswith(("int_", "float_", "bool_", "string_", "finite_")):
        return [_line(key, value, f"is a {type(value).__name__}, not {noun}", allowed, fix)]
    return [f"{key}={show(value)}: {err['msg']}"]


def _range(tp: Any, meta: list, unit: str) -> tuple[str, str]:
    """(allowed values in words, the noun of the type) of a scalar field."""
    if tp is bool:
        return "true or false", "a boolean"
    if tp is str:
        return "a string", "a non-empty string"
    ops = [(op, getattr(m, name)) for m in meta for op, name in
           ((">", "gt"), (">=", "ge"), ("<", "lt"), ("<=", "le")) if hasattr(m, name)]
    bounds = " and ".join(f"{op} {v}" for op, v in ops)
    if tp is not int and tp is not float:
        return "", "a valid value"
    if tp is int:
        return f"an integer {bounds}".rstrip(), "an integer"
    unit = f" {unit}" if unit and ops else ""
    if [op for op, _ in ops] == [">=", "<="]:
        bounds = f"from {ops[0][1]} to {ops[1][1]}"
    return f"a number {bounds}".rstrip() + unit, "a finite number"


# --------------------------------------------------------------------------- the schema tree
def _split(tp: Any) -> tuple[Any, list]:
    """``(type, metadata)``: ``Annotated`` and ``X | None`` unwrapped."""
    meta: list = []
    while True:
        if typing.get_origin(tp) is Annotated:
            meta = [*meta, *tp.__metadata__]
            tp = tp.__origin__
        elif typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        else:
            return tp, meta


def _fields(tp: Any) -> dict[str, tuple[Any, list]] | None:
    """The keys of a section (a settings class or a TypedDict) and their ``(type,
    metadata)``, or None for another type."""
    fields = getattr(tp, "__pydantic_fields__", None)
    if fields is not None:
        internal = getattr(tp, "_INTERNAL", ())
        return {name: (f.annotation, list(f.metadata)) for name, f in fields.items()
                if name not in internal}
    if typing_extensions.is_typeddict(tp):
        return {k: (v, []) for k, v in typing.get_type_hints(tp, include_extras=True).items()}
    return None


def _keys_text(tp: Any) -> str:
    return ", ".join(_fields(tp) or ())


def _locate(root: type, loc: tuple) -> tuple[Any, list, Any]:
    """``(type, metadata, owner)`` of the value at ``loc`` under ``root``; ``owner`` is the
    section holding its key (for an unknown key: the section that does not know it)."""
    tp, meta, owner = root, [], root
    for part in loc:
        fields = _fields(tp)
        if isinstance(part, str) and fields is not None:
            owner = tp
            if part not in fields:
                return None, [], owner
            tp, meta = fields[part]
        elif typing.get_args(tp):  # an item of a list/tuple, or a value of a dict
            args = [a for a in typing.get_args(tp) if a is not Ellipsis]
            tp, meta = args[-1], []
        else:
            return None, [], owner
        tp, more = _split(tp)
        meta = [*meta, *more]
        tp = next((m.form for m in meta if isinstance(m, Written)), tp)
    return tp, meta, owner
