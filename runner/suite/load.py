"""The front door of a suite: a file read, decoded, interpolated and validated into a `Suite`.

    suite = load_suite("queries/demo.yaml")
    suite.queries[0].text, suite.modes["caption"].via, suite.sweep.semantic_threshold

`load_suite` refuses a suite that cannot be run before anything is sent, with a `SuiteError`
whose message reads `file:line: key: what is wrong` (`demo.yaml:14: sweep.semantic_threshold[1]:
1.4 is not within 0..1`). A file the suite names (queries, qrels, labels) is checked the same way,
its own lines named.

Interpolation: `${VAR}` and `${VAR:-default}` are replaced in scalar values (never in keys) from
the environment; `:-` also applies when VAR is set but empty; `$$` is a literal `$`. An unquoted
value is typed after the replacement (`concurrency: ${N:-8}` is the integer 8); inside `[...]` or
`{...}` YAML needs quotes (`[0.5, "${T:-0.7}"]`), and numeric keys take numeric strings. An unset
variable with no default is an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from runner.errors import SuiteError
from runner.suite.models import Suite
from runner.suite.yaml_lines import load_yaml, place_error

__all__ = ["load_suite", "parse_suite"]


def load_suite(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Suite:
    """Read, interpolate and check a suite file; every referenced file is read and checked too.

    `env` replaces `os.environ` for `${VAR}` (tests). Raises `SuiteError` (`file:line: key: ...`).
    """
    file = Path(path)
    if file.exists() and not file.is_file():  # /dev/zero or a FIFO: read forever, or until OOM
        raise SuiteError("not a regular file", path=str(path))
    try:
        data = file.read_bytes()
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        reason = f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        raise SuiteError(reason, path=str(path), line=line) from None
    except OSError as exc:
        reason = (
            "no such file"
            if isinstance(exc, FileNotFoundError)
            else f"cannot be read ({type(exc).__name__})"
        )
        raise SuiteError(reason, path=str(path)) from None
    return parse_suite(text, path=file, env=env)


def parse_suite(
    text: str, *, path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> Suite:
    """Like `load_suite` for text in hand; `path` names it in errors and anchors relative paths."""
    file = Path(path)
    doc = load_yaml(text, str(path), os.environ if env is None else env)
    context = {"base_dir": file.resolve().parent, "source": file.resolve()}
    try:
        return Suite.model_validate(doc.data, context=context)
    except ValidationError as exc:
        raise place_error(exc, doc, str(path), Suite) from None
