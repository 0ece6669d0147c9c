"""A suite's YAML: the line of every key, `${VAR}` interpolation, and errors put on their line.

    doc = load_yaml(text, "demo.yaml", os.environ)      # SuiteError for bad YAML or a bad ${...}
    try:
        suite = Suite.model_validate(doc.data)
    except ValidationError as exc:
        raise place_error(exc, doc, "demo.yaml", Suite) from None

`load_yaml` interpolates scalar values (never keys) as the `runner.suite` docstring describes and
refuses duplicate keys. `place_error` turns pydantic's first error (by line) into a `SuiteError`
reading `file:line: key: reason`. No reason shows a value that came from the environment: one
that came from `${VAR}` is named (`rate_limit: the value of ${R} is not a rate; ...`), whoever
worded the reason (the loader, or a model's validator through `suite_fields.show`), and any text
taken from the environment left in a reason is replaced by its `${VAR}`. A value under `auth` is
not shown, and no URL's userinfo (`user:pass@`) is shown.
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
from runner.suite.fields import ENV_NAME, FAIL_TYPE, mask_userinfo, show
from runner.suite.yaml_aliases import BoundedLoader

__all__ = ["Document", "Interpolation", "KeyPath", "load_yaml", "place_error"]

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
# A scalar that is one reference and nothing else: named as `${NAME}` in errors.
_ONE_REFERENCE: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")
# Text taken from the environment this short ("8", "yes") is not scrubbed from a reason wherever
# it occurs, which would garble the reason's own words; its echo is named as its key's value.
_SCRUB_MIN: Final = 4


# --- YAML with line numbers and interpolation -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interpolation:
    """Where an interpolated scalar came from: its text in the file, and what the environment gave.

    `env` holds (variable, value) for each reference the environment filled (not the defaults).
    """

    raw: str
    env: tuple[tuple[str, str], ...]

    @property
    def subject(self) -> str:
        """How an error names the value: `the value of ${R}`, never the value itself."""
        one = _ONE_REFERENCE.fullmatch(self.raw)
        if one:
            return f"the value of ${{{one[1]}}}"
        text = mask_userinfo(repr(self.raw))
        return f"the value of {text if len(text) <= 60 else text[:57] + '...'}"


@dataclass(slots=True)
class Document:
    """The YAML data with where each key came from: (key path -> line) and interpolated paths.

    An alias of an interpolated value is an interpolated path too (its line is the alias's key).
    """

    data: object
    lines: dict[KeyPath, int]
    interpolated: dict[KeyPath, Interpolation]


def load_yaml(text: str, where: str, env: Mapping[str, str]) -> Document:
    """Parse one YAML mapping, recording lines and interpolating `${VAR}` from `env`.

    `where` names the text in errors. Raises `SuiteError` for text that is not YAML, is not a
    mapping, repeats a key, names an unset variable with no default, or has aliases that repeat
    too much (`runner.suite.yaml_aliases`).
    """
    loader = BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise SuiteError("the suite is empty", path=where, line=1)
        problem = loader.alias_problem()  # before anything walks what the aliases repeat
        if problem is not None:
            reason, line, at = problem
            raise SuiteError(reason, path=where, line=line, key=_key(at))
        doc = Document(None, {(): root.start_mark.line + 1}, {})
        _walk(root, (), doc, where, env, loader, {})
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
    loader: BoundedLoader,
    done: dict[int, Interpolation | None],
) -> None:
    """Record the line of every key and item, refuse duplicate keys, interpolate scalars.

    `done` holds every node walked (by id), with how it was interpolated if it is a scalar that was.
    """
    if id(node) in done:  # an alias: interpolated once, where it was defined
        _mark_alias(node, path, doc, done, set())
        return
    done[id(node)] = None
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
        used: list[tuple[str, str]] = []
        value = _interpolate(
            node.value,
            env,
            lambda reason: SuiteError(reason, path=where, line=line, key=_key(path)),
            used,
        )
        if value != node.value:
            done[id(node)] = doc.interpolated[path] = Interpolation(node.value, tuple(used))
        if node.style is None:  # plain: type the result as YAML would have (8 -> int)
            node.tag = loader.resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
        node.value = value


def _mark_alias(
    node: yaml.Node,
    path: KeyPath,
    doc: Document,
    done: Mapping[int, Interpolation | None],
    inside: set[int],
) -> None:
    """Record the interpolated scalars an alias repeats at `path` (`inside` stops a loop)."""
    if id(node) in inside:
        return
    inside.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                _mark_alias(value_node, (*path, key_node.value), doc, done, inside)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _mark_alias(item, (*path, i), doc, done, inside)
    elif (origin := done.get(id(node))) is not None:
        doc.interpolated[path] = origin
    inside.discard(id(node))


def _interpolate(
    value: str,
    env: Mapping[str, str],
    error: Callable[[str], SuiteError],
    used: list[tuple[str, str]],
) -> str:
    """`value` with its references replaced; appends (name, value) of each taken from `env`."""

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
            used.append((name, found))
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
        if path in doc.interpolated:
            shown = doc.interpolated[path].subject
        elif path and path[0] == "auth":
            shown = "a value not shown here"
        else:
            shown = show(error.get("input"))
        reason = _scrub(_describe(error, path, shown, model), path, doc)
        found.append((_line_of(path, doc.lines), reason, path))
    line, reason, path = min(found, key=lambda item: item[0])
    return SuiteError(reason, path=where, line=line, key=_key(path))


def _scrub(reason: str, path: KeyPath, doc: Document) -> str:
    """`reason` with no value that came from the environment in it, and no URL userinfo.

    A validator's echo of an interpolated value at or below `path` becomes `the value of ${R}`
    (its first echo: validators lead with the value); then any text the environment gave (of
    `_SCRUB_MIN` characters or more) still in the reason becomes its `${VAR}`.
    """
    subjects: list[str] = []

    def hold(text: str) -> str:  # a stand-in the environment's text cannot match
        subjects.append(text)
        return f"\0{len(subjects) - 1}\0"

    for at, origin in doc.interpolated.items():
        if at[: len(path)] != path:
            continue
        for rendering in _renderings(_value_at(doc.data, at)):
            echo = re.search(rf"(?<![\w.-]){re.escape(rendering)}(?!\w|\.\d)", reason)
            if echo:
                reason = reason[: echo.start()] + hold(origin.subject) + reason[echo.end() :]
                break
    taken = {pair for origin in doc.interpolated.values() for pair in origin.env}
    for name, text in sorted(taken, key=lambda pair: -len(pair[1])):
        if len(text) >= _SCRUB_MIN:
            reason = reason.replace(text, hold(f"${{{name}}}"))
    reason = re.sub(r"\0(\d+)\0", lambda m: subjects[int(m[1])], reason)
    return mask_userinfo(reason)


def _renderings(value: object) -> list[str]:
    """The ways a validator may have written `value` into a reason, the likeliest first."""
    out = [show(value), repr(value)]
    if isinstance(value, str):
        out += [repr(value.strip()), value.strip(), value]
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is not None:
        out += [f"{number:g}", repr(float(number)), str(number)]
        if float(number).is_integer() and abs(number) < 1e16:
            out.append(str(int(number)))
    out.append(str(value))
    return [text for text in dict.fromkeys(out) if text]


def _value_at(data: object, path: KeyPath) -> object:
    for step in path:
        if isinstance(data, dict):
            data = data.get(step)
        elif isinstance(data, list) and isinstance(step, int) and 0 <= step < len(data):
            data = data[step]
        else:
            return None
    return data


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


def _describe(error: Mapping[str, Any], path: KeyPath, shown: str, root: type[BaseModel]) -> str:
    """The reason for one error; `shown` is how it may show the value it is about."""
    kind, ctx = error["type"], error.get("ctx") or {}
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
