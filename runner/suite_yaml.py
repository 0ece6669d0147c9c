"""A suite's YAML: the line of every key, `${VAR}` interpolation, and errors put on their line.

    doc = load_yaml(text, "demo.yaml", os.environ)      # SuiteError for bad YAML or a bad ${...}
    try:
        suite = Suite.model_validate(doc.data)
    except ValidationError as exc:
        raise place_error(exc, doc, "demo.yaml", Suite) from None

`load_yaml` interpolates scalar values (never keys) as the `runner.suite` docstring describes and
refuses duplicate keys. `place_error` turns pydantic's first error (by line) into a `SuiteError`
reading `file:line: key: reason`. Where it words the reason itself (a wrong type, an unknown
literal) it does not show a value that came from the environment or lies under `auth`; a reason a
model's validator wrote is passed on as it is (those show values through `suite_fields.show`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import UnionType
from typing import Any, Final, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from runner.errors import SuiteError
from runner.suite_fields import ENV_NAME, FAIL_TYPE, show

__all__ = ["Document", "KeyPath", "load_yaml", "place_error"]

KeyPath = tuple[str | int, ...]

# `$$`, a `${...}` reference, or a `${` that is never closed.
_REFERENCE: Final = re.compile(r"\$\$|\$\{([^}]*)\}|\$\{")
# Keys that would put a credential into the suite; named so that the refusal can say why.
_CREDENTIAL_KEYS: Final = {"token", "jwt", "api_key", "api_secret", "secret", "password", "key"}
_EXPECTED: Final = {
    "int": "a whole number",
    "float": "a number",
    "string": "text",
    "bool": "true or false",
    "list": "a list",
    "tuple": "a list",
    "dict": "a mapping",
    "model": "a mapping",
    "model_attributes": "a mapping",
}
_RENAMED: Final = {"threshold": "granularity", "image_caption": "caption"}


# --- YAML with line numbers and interpolation -------------------------------------------------


@dataclass(slots=True)
class Document:
    """The YAML data with where each key came from: (key path -> line) and interpolated paths."""

    data: object
    lines: dict[KeyPath, int]
    interpolated: set[KeyPath]


def load_yaml(text: str, where: str, env: Mapping[str, str]) -> Document:
    """Parse one YAML mapping, recording lines and interpolating `${VAR}` from `env`.

    `where` names the text in errors. Raises `SuiteError` for text that is not YAML, is not a
    mapping, repeats a key, or names an unset variable with no default.
    """
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise SuiteError("the suite is empty", path=where, line=1)
        doc = Document(None, {(): root.start_mark.line + 1}, set())
        _walk(root, (), doc, where, env, loader, set())
        doc.data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        # Only the parser's words: its snippet of the line could show a value meant to stay private.
        reason = ": ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise SuiteError(
            f"not valid YAML: {reason}", path=where, line=mark.line + 1 if mark else None
        ) from None
    except yaml.YAMLError as exc:
        raise SuiteError(f"not valid YAML: {type(exc).__name__}", path=where) from None
    finally:
        loader.dispose()
    if not isinstance(doc.data, dict):
        raise SuiteError("a suite is a mapping of keys (name:, queries:, ...)", path=where, line=1)
    return doc


def _walk(
    node: yaml.Node,
    path: KeyPath,
    doc: Document,
    where: str,
    env: Mapping[str, str],
    loader: yaml.SafeLoader,
    done: set[int],
) -> None:
    """Record the line of every key and item, refuse duplicate keys, interpolate scalars."""
    if id(node) in done:  # an alias: interpolated once, where it was defined
        return
    done.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise SuiteError(
                    "a key must be a plain word", path=where, line=line, key=_key(path)
                )
            key: str | int = key_node.value
            if (*path, key) in doc.lines:
                first = doc.lines[(*path, key)]
                raise SuiteError(
                    f"duplicate key (first at line {first})",
                    path=where,
                    line=line,
                    key=_key((*path, key)),
                )
            doc.lines[(*path, key)] = line
            _walk(value_node, (*path, key), doc, where, env, loader, done)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            doc.lines[(*path, i)] = item.start_mark.line + 1
            _walk(item, (*path, i), doc, where, env, loader, done)
    elif isinstance(node, yaml.ScalarNode) and "$" in node.value:
        line = node.start_mark.line + 1
        value = _interpolate(
            node.value,
            env,
            lambda reason: SuiteError(reason, path=where, line=line, key=_key(path)),
        )
        if value != node.value:
            doc.interpolated.add(path)
        if node.style is None:  # plain: type the result as YAML would have (8 -> int)
            node.tag = loader.resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
        node.value = value


def _interpolate(value: str, env: Mapping[str, str], error: Callable[[str], SuiteError]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        if match[1] is None:
            raise error("'${' is not closed; write $$ for a literal $")
        name, has_default, default = match[1].partition(":-")
        if not ENV_NAME.fullmatch(name):
            raise error(f"${{{match[1]}}} does not name an environment variable")
        found = env.get(name)
        if found:
            return found
        if has_default:
            return default
        if found is None:
            raise error(
                f"environment variable {name} is not set and has no default "
                f"(write ${{{name}:-default}})"
            )
        return found

    return _REFERENCE.sub(replace, value)


# --- validation errors placed on their line ---------------------------------------------------


def place_error(
    exc: ValidationError, doc: Document, where: str, model: type[BaseModel]
) -> SuiteError:
    """The first error (by line) of a ValidationError, as `file:line: key: reason`.

    `model` is the class `doc.data` was validated as; its fields feed "did you mean".
    """
    found: list[tuple[int, str, KeyPath]] = []
    for error in exc.errors(include_url=False):
        at = tuple((error.get("ctx") or {}).get("at", ()))
        path = _data_path(tuple(error["loc"]), at, doc.data, error["type"] == "missing")
        hide = path in doc.interpolated or (bool(path) and path[0] == "auth")
        reason = _describe(error, path, hide, model)
        found.append((_line_of(path, doc.lines), reason, path))
    line, reason, path = min(found, key=lambda item: item[0])
    return SuiteError(reason, path=where, line=line, key=_key(path))


def _key(path: KeyPath) -> str:
    """("sweep", "semantic_threshold", 1) -> "sweep.semantic_threshold[1]"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _data_path(loc: KeyPath, at: KeyPath, data: object, missing: bool) -> KeyPath:
    """Turn pydantic's `loc` (+ our `at`) into a key path of the YAML data.

    pydantic adds steps that are not keys (union branches like `int`, a list index under a
    value given as one item); those are dropped. A key that is not in the data is kept only
    where it is the point of the error (a missing key, or one our own check named).
    """
    path: list[str | int] = []
    node: object = data
    steps = [(step, False) for step in loc] + [(step, True) for step in at]
    for i, (step, ours) in enumerate(steps):
        if isinstance(node, dict) and step in node:
            path.append(step)
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            path.append(step)
            node = node[step]
        elif isinstance(step, str) and (ours or (missing and i == len(steps) - 1)):
            path.append(step)
            node = None
    return tuple(path)


def _line_of(path: KeyPath, lines: Mapping[KeyPath, int]) -> int:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1


def _model_at(path: KeyPath, root: type[BaseModel]) -> type[BaseModel] | None:
    """The model class whose keys live at `path` below `root` (for "did you mean"), if any."""
    tp: Any = root
    for step in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(step) if isinstance(step, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) in (tuple, dict, list):
            args = [a for a in get_args(tp) if a is not Ellipsis]
            tp = args[0] if get_origin(tp) is not dict else args[-1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    if get_origin(tp) in (Union, UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _unknown_key(path: KeyPath, root: type[BaseModel]) -> str:
    key = path[-1]
    if str(key).lower() in _CREDENTIAL_KEYS:
        return (
            "a credential in a suite is refused: keep it in an environment variable and name "
            "that variable with auth.token_env, auth.api_key_env or auth.api_secret_env"
        )
    model = _model_at(path[:-1], root)
    known = list(model.model_fields) if model else []
    if key in _RENAMED and _RENAMED[str(key)] in known:
        return f"unknown key {key!r}; it is spelled {_RENAMED[str(key)]!r} here"
    close = difflib.get_close_matches(str(key), known, n=1)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}" + (f"; expected one of {', '.join(known)}" if known else "")


def _describe(
    error: Mapping[str, Any], path: KeyPath, hide_input: bool, root: type[BaseModel]
) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    shown = "a value not shown here" if hide_input else show(error.get("input"))
    if kind == FAIL_TYPE:
        return str(ctx["reason"])
    if kind == "extra_forbidden":
        return _unknown_key(path, root)
    if kind == "missing":
        return "is required"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if kind == "literal_error":
        name = next((p for p in reversed(path) if isinstance(p, str)), "value")
        return f"unknown {name} {shown}; expected {ctx.get('expected')}"
    expected = _EXPECTED.get(kind.removesuffix("_parsing").removesuffix("_type"))
    if kind == "int_from_float":
        expected = "a whole number"
    if expected is None:
        return str(error["msg"]).replace("Input should be", "expected")
    return f"expected {expected}, got {shown}"
