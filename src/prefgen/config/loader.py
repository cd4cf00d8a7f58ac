"""The one config loader: YAML file + dotted overrides -> a validated, typed config.

    read the YAML (bounded: file size, alias expansion, nesting depth)
      -> apply `key=value` overrides (list items by index: generate.models.0.temperature=0.3)
      -> check every `${...}` interpolation (no cycles, no missing keys, no unset environment
         variables, bounded expansion), then resolve them with OmegaConf
      -> validate with the pydantic schema (types, ranges, enums, cross-field checks)
      -> run the caller's semantic checks (e.g. "does this rubric exist")

Every failure is a `ConfigError` naming the file or the override, the dotted key, the value
and what is allowed; nothing here starts Ray or touches a model. Values that came from an
environment variable (`${oc.env:VAR}`) are remembered by key, so `to_dict` and `config_hash`
record the reference instead of the secret.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ValidationError

from prefgen.config.base import ConfigError, Section, config_error

S = TypeVar("S", bound=Section)
Check = Callable[[Any], Iterable[tuple[str, str]]]  # config -> (dotted key, problem) pairs

OVERRIDE = "command-line override"
MAX_FILE_BYTES = 2_000_000
MAX_YAML_NODES = 200_000  # after alias expansion: a "billion laughs" file stops here
MAX_DEPTH = 100
MAX_VALUE_CHARS = 1_000_000  # longest value an interpolation may expand to
MISSING = "???"


def load(
    path: str | Path | None,
    overrides: list[str] | None,
    schema: type[S],
    checks: Iterable[Check] = (),
) -> S:
    """Load `path` (None: defaults only), apply `overrides`, validate against `schema`."""
    overrides = list(overrides or [])
    origin = "defaults" if path is None else str(path)
    data = {} if path is None else read_yaml_file(Path(path))
    if data is None:  # an empty file
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: key '<top level>': must be a mapping of keys to values")
    names = _alias_names(schema)
    tree = OmegaConf.create({names.get(k, k): v for k, v in data.items()})
    override_keys = []
    for text in overrides:
        key, sep, value = text.partition("=")
        head, dot, rest = key.strip().partition(".")
        override_keys.append(
            _apply_override(tree, f"{names.get(head, head)}{dot}{rest}{sep}{value}")
        )

    def origin_of(key: str) -> str:
        for o in override_keys:
            if key == o or key.startswith(o + ".") or o.startswith(key + "."):
                return OVERRIDE
        return f"{origin} (with command-line overrides)" if overrides else origin

    raw = OmegaConf.to_container(tree, resolve=False)
    env_refs = check_interpolations(raw, origin_of)
    try:
        resolved = OmegaConf.to_container(tree, resolve=True)
    except OmegaConfBaseException as exc:  # what the checks above could not foresee
        key = getattr(exc, "full_key", None) or "<top level>"
        raise ConfigError(f"{origin_of(key)}: key '{key}': {_first_line(exc)}") from None
    try:
        cfg = schema.model_validate(_with_required_sections(schema, _drop_missing(resolved)))
    except ValidationError as exc:
        raise config_error(exc, schema, origin_of) from None
    cfg._env_references = env_refs
    problems = [(key, msg) for check in checks for key, msg in check(cfg)]
    if problems:
        raise ConfigError(
            "\n".join(f"{origin_of(key)}: key '{key}': {msg}" for key, msg in problems)
        )
    return cfg


def _alias_names(schema: type[BaseModel]) -> dict[str, str]:
    """Other accepted names of top-level keys (TRL's, for train-rm) -> the field's own name,
    so that `learning_rate=...` on the command line overrides the file's `lr:`."""
    names = {}
    for name, info in schema.model_fields.items():
        for alias in getattr(info.validation_alias, "choices", ()):
            if alias != name:
                names[alias] = name
    return names


# -- YAML ----------------------------------------------------------------------------------


def read_yaml_file(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: {size} bytes; a config file may hold {MAX_FILE_BYTES}")
    return read_yaml(path.read_text(encoding="utf-8", errors="replace"), str(path))


def read_yaml(text: str, origin: str) -> Any:
    """Safe YAML with bounded alias expansion and nesting (PyYAML alone would build a
    "billion laughs" document by reference, and OmegaConf would then copy every reference)."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:  # e.g. control characters, refused by the reader up front
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, origin)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{origin}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def _check_size(root, origin: str) -> None:
    """Count the values the document expands to (an alias counts its whole target again)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, done = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(f"{origin}: YAML nested deeper than {MAX_DEPTH} levels")
        children = _children(node)
        if done or not children:
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[id(node)] > MAX_YAML_NODES:
                raise ConfigError(
                    f"{origin}: YAML expands to more than {MAX_YAML_NODES} values "
                    "(anchors and aliases repeated); write the values out"
                )
            continue
        if id(node) in sizes:
            continue
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


# -- overrides -----------------------------------------------------------------------------


def _apply_override(tree, text: str) -> str:
    """`a.b.0.c=value` into `tree`; returns the key. Unknown keys are left to validation."""
    key, sep, value_text = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{OVERRIDE} {text!r} is not key=value")
    try:
        value = read_yaml(value_text, f"{OVERRIDE} {key}") if value_text.strip() else None
    except ConfigError as exc:
        raise ConfigError(f"{OVERRIDE}: key '{key}': cannot parse {value_text!r}: {exc}") from None
    try:
        OmegaConf.update(tree, key, value, merge=True, force_add=True)
    except (OmegaConfBaseException, TypeError, ValueError, IndexError, KeyError) as exc:
        raise ConfigError(f"{OVERRIDE}: key '{key}': {_first_line(exc)}") from None
    return key


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _drop_missing(value: Any) -> Any:
    """`???` (OmegaConf's "required") becomes absent, so validation reports it as missing."""
    if isinstance(value, dict):
        return {k: _drop_missing(v) for k, v in value.items() if v != MISSING}
    if isinstance(value, list):
        return [_drop_missing(v) for v in value]
    return value


def _with_required_sections(schema: type[BaseModel], data: Any) -> Any:
    """An absent required section becomes {}, so its own missing keys get named
    (`input.path`, not just `input`)."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for name, info in schema.model_fields.items():
        section = info.annotation if isinstance(info.annotation, type) else None
        if info.is_required() and section and issubclass(section, BaseModel):
            out.setdefault(name, {})
    return out


# -- interpolations ------------------------------------------------------------------------

_OPEN = "${"
_ALLOWED_RESOLVERS = ("oc.env",)


def check_interpolations(raw: Any, origin_of: Callable[[str], str]) -> dict[str, str]:
    """Refuse interpolations that would loop, point nowhere, read an unset environment
    variable or expand past MAX_VALUE_CHARS; return {key: raw text} of every value that
    depends on an environment variable (directly or through another key)."""
    leaves: dict[str, Any] = {}
    _flatten(raw, (), leaves)
    sizes: dict[str, int] = {}
    tainted: set[str] = set()
    visiting: list[str] = []

    def fail(key: str, msg: str):
        raise ConfigError(f"{origin_of(key)}: key '{key}': {msg}")

    def size_of(key: str) -> int:
        if key in sizes:
            return sizes[key]
        if key in visiting:
            loop = " -> ".join([*visiting[visiting.index(key) :], key])
            fail(visiting[0], f"interpolation refers to itself ({loop})")
        if key not in leaves:  # a section: the sum of its values
            below = [k for k in leaves if k.startswith(key + ".")]
            visiting.append(key)
            total = sum(size_of(k) for k in below)
            visiting.pop()
            if any(k in tainted for k in below):
                tainted.add(key)
            sizes[key] = total
            return total
        value = leaves[key]
        if not isinstance(value, str) or _OPEN not in value:
            sizes[key] = len(str(value))
            return sizes[key]
        visiting.append(key)
        total = 0
        for literal, ref in _split(value, key, fail):
            total += len(literal)
            if ref is None:
                continue
            if ":" in ref:
                total += _resolver_size(ref, key, fail)
                tainted.add(key)
                continue
            target = _absolute(ref, key)
            if target not in leaves and not any(k.startswith(target + ".") for k in leaves):
                fail(key, f"interpolation ${{{ref}}} names a key that does not exist")
            total += size_of(target)
            if target in tainted:
                tainted.add(key)
            if total > MAX_VALUE_CHARS:
                fail(key, f"interpolation expands past {MAX_VALUE_CHARS} characters")
        visiting.pop()
        sizes[key] = total
        return total

    for key in list(leaves):
        size_of(key)
    return {key: leaves[key] for key in sorted(tainted) if isinstance(leaves.get(key), str)}


def _flatten(value: Any, path: tuple, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, (*path, str(k)), out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten(v, (*path, str(i)), out)
        if not value:
            out[".".join(path)] = value
    else:
        out[".".join(path)] = value


def _split(text: str, key: str, fail) -> list[tuple[str, str | None]]:
    """'a${x}b' -> [('a', 'x'), ('b', None)]; `\\${` is a literal; nesting is refused."""
    parts: list[tuple[str, str | None]] = []
    i, literal = 0, ""
    while i < len(text):
        if text.startswith("\\" + _OPEN, i):
            literal += _OPEN
            i += 3
            continue
        if text.startswith(_OPEN, i):
            end = text.find("}", i + 2)
            inner = text[i + 2 : end] if end != -1 else ""
            if end == -1 or _OPEN in inner:
                fail(key, f"unsupported interpolation in {text[:80]!r} (unclosed or nested)")
            parts.append((literal, inner.strip()))
            literal, i = "", end + 1
            continue
        literal += text[i]
        i += 1
    parts.append((literal, None))
    return parts


def _resolver_size(ref: str, key: str, fail) -> int:
    name, _, args = ref.partition(":")
    if name.strip() not in _ALLOWED_RESOLVERS:
        fail(key, f"resolver {name.strip()!r} is not allowed; use {', '.join(_ALLOWED_RESOLVERS)}")
    var, comma, default = args.partition(",")
    var = var.strip()
    value = os.environ.get(var)
    if value is None and not comma:
        fail(
            key,
            f"environment variable {var} is not set (${{{ref}}}); set it or give a "
            f"default: ${{oc.env:{var},DEFAULT}}",
        )
    return len(value if value is not None else default)


def _absolute(ref: str, key: str) -> str:
    """A reference as a full dotted key: `.x` is a sibling of `key`, `..x` one level up."""
    if not ref.startswith("."):
        return ref
    dots = len(ref) - len(ref.lstrip("."))
    base = key.split(".")[:-dots]
    return ".".join([*base, ref[dots:]])


# -- what a run records --------------------------------------------------------------------

_SECRET_WORDS = ("secret", "token", "password", "credential", "key")


def to_dict(cfg: BaseModel) -> dict:
    """The config as plain data, as manifests record it: environment-derived values as their
    `${oc.env:...}` reference, credentials in any `storage_options` redacted."""
    data = cfg.model_dump(mode="json")
    for key, raw in getattr(cfg, "_env_references", {}).items():
        _set_path(data, key.split("."), raw)
    return _redact(data)


def config_hash(cfg: BaseModel) -> str:
    """Hash of what determines the output: fields marked identity=False are left out (where
    the output goes, how Ray is reached, fault injection)."""
    data = _identity(cfg, to_dict(cfg))
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _identity(model: Any, data: Any) -> Any:
    if isinstance(model, BaseModel) and isinstance(data, dict):
        out = {}
        for name, info in type(model).model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if extra.get("identity") is False or name not in data:
                continue
            out[name] = _identity(getattr(model, name), data[name])
        return out
    if isinstance(model, list) and isinstance(data, list):
        return [_identity(m, d) for m, d in zip(model, data)]
    if isinstance(model, dict) and isinstance(data, dict):
        return {k: _identity(model.get(k), v) for k, v in data.items()}
    return data


def _set_path(data: Any, parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        data = data[int(part)] if isinstance(data, list) else data.get(part)
        if data is None:
            return
    last = parts[-1]
    if isinstance(data, list) and last.isdigit() and int(last) < len(data):
        data[int(last)] = value
    elif isinstance(data, dict) and last in data:
        data[last] = value


def _redact(data: Any, inside_options: bool = False) -> Any:
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            secret = inside_options and any(w in str(k).lower() for w in _SECRET_WORDS)
            out[k] = "***" if secret and v else _redact(v, inside_options or k == "storage_options")
        return out
    if isinstance(data, list):
        return [_redact(v, inside_options) for v in data]
    return data
