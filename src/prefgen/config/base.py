"""What every config section shares: strict pydantic models and error messages that name the key.

A section is a pydantic model that forbids unknown keys and non-finite floats and documents
each field (`description`). It is validated when loaded; code that edits a loaded config (tests
do) is trusted, so assignments are not re-validated (a cross-field check would trip over the
first of two related assignments). Ranges live on the fields (`ge`, `le`,
`Literal[...]`), checks that span fields in `model_validator`s of the section that owns them;
`ConfigError` turns pydantic's errors into lines of the form

    pipelines/x.yaml: key 'generate.models.0.temperature': must be >= 0 and <= 5 (got nan)
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

# What a stateless stage task reserves: small, so it never waits behind the model actors' CPUs.
LIGHT_TASK_CPUS = 0.25
# Input file suffixes by input.format (the pipeline and preflight list the input with these).
INPUT_SUFFIXES = {
    "jsonl": (".jsonl", ".json"),
    "parquet": (".parquet",),
    "auto": (".jsonl", ".json", ".parquet"),
}
# Upper bounds on counts and sizes: far above any real setting, low enough that a typo (an
# extra digit or three) fails at load time instead of reserving a cluster or a terabyte.
MAX_TOKENS = 1_048_576
MAX_BATCH = 65_536
MAX_ACTORS = 4_096
MAX_CPUS = 4_096.0
MAX_GPUS = 1_024.0


class ConfigError(ValueError):
    """A configuration problem; each line names the file (or override) and the dotted key."""


class Section(BaseModel):
    """Base of every config section: no unknown keys, finite numbers."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        protected_namespaces=(),
    )
    # Keys whose values came from `${oc.env:...}`, with their reference (set by the loader):
    # the manifest records the reference, never the value.
    _env_references: dict[str, str] = PrivateAttr(default_factory=dict)


def dotted(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


def _walk(schema: type[BaseModel], loc: tuple) -> tuple[Any, Any]:
    """(FieldInfo, annotation) that a location points at; (None, None) past the known types.

    A location runs through fields, list indices and dict keys alike (`judge.rubrics.r.scale`).
    """
    info, annotation = None, schema
    for part in loc:
        model = _model_of(annotation)
        if model is not None and str(part) in model.model_fields and not _container(annotation):
            info = model.model_fields[str(part)]
            annotation = info.annotation
            continue
        inner = _container(annotation)
        if inner is None:
            return None, None
        annotation = inner
    return info, annotation


def _container(annotation) -> Any:
    """The value type of list[X], dict[K, X] (or an Optional of them), else None."""
    origin = getattr(annotation, "__origin__", None)
    args = getattr(annotation, "__args__", ()) or ()
    if origin in (list, tuple, set) and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    for arg in args:  # X | None
        if arg is not type(None):
            found = _container(arg)
            if found is not None:
                return found
    return None


def _model_of(annotation) -> type[BaseModel] | None:
    """The Section class inside an annotation like `ModelConfig | None` or `list[ModelConfig]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def allowed_range(info) -> str:
    """'>= 0 and <= 5' from a field's constraints ('' when it has none)."""
    parts = []
    for meta in getattr(info, "metadata", []):
        for name, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(meta, name, None)
            if value is not None:
                parts.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    return " and ".join(parts)


def _shown(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def describe(error: dict, schema: type[BaseModel]) -> str:
    """One pydantic error as a plain sentence: what is wrong and what is allowed."""
    kind, loc = error["type"], error["loc"]
    info, _ = _walk(schema, loc)
    got = "" if kind == "missing" else f" (got {_shown(error.get('input'))})"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return f"must be {allowed_range(info) or error['msg']}{got}"
    if kind == "finite_number":
        bounds = allowed_range(info)
        return f"must be a finite number{' ' + bounds if bounds else ''}{got}"
    if kind == "missing":
        return "missing required value"
    if kind == "extra_forbidden":
        parent = _model_of(_walk(schema, loc[:-1])[1])
        known = sorted(parent.model_fields) if parent is not None else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown key{hint} (known: {', '.join(known)})" if known else "unknown key"
    if kind == "literal_error":
        return f"must be one of {error['ctx']['expected']}{got}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be a whole number{got}"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number{got}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false{got}"
    if kind == "string_type":
        return f"must be a string{got}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping of keys to values{got}"
    if kind == "list_type":
        return f"must be a list{got}"
    if kind == "value_error":
        return error["msg"].removeprefix("Value error, ")
    return f"{error['msg']}{got}"


class Invalid(ValueError):
    """Raised by a section's cross-field check: `key` is relative to that section."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{_KEY_MARK}{key}{_KEY_MARK}{message}")


_KEY_MARK = "\x1f"


def config_error(exc: ValidationError, schema: type[BaseModel], origin_of) -> ConfigError:
    """A ConfigError listing every pydantic error; `origin_of(key)` names where a key came from."""
    lines = []
    for error in exc.errors(include_url=False)[:20]:
        loc, message = tuple(error["loc"]), describe(error, schema)
        if message.startswith(_KEY_MARK):  # an Invalid raised by a section's own check
            _, sub, message = message.split(_KEY_MARK, 2)
            loc = loc + tuple(part for part in sub.split(".") if part)
        key = dotted(loc) or "<top level>"
        lines.append(f"{origin_of(key)}: key '{key}': {message}")
    return ConfigError("\n".join(lines))
