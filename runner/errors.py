"""The errors vlbench raises, one root for all of them.

    VlbenchError          anything vlbench refuses or cannot do          exit 1
      UsageError          a command-line value that cannot be used        exit 2
      SuiteError          a suite that cannot be run (path, line, key)    exit 2
      DatasetError        a dataset file that cannot be imported          exit 2
      RunError            a run directory that cannot be read or resumed  exit 2
        CredentialsError  the environment's credentials cannot be used   exit 2
      WriteError          a file that cannot be written (a full disk)     exit 1
      ApiError            the API answered with an error (status, detail)
        AuthError         401/403
        Throttled         429, or any status with Retry-After
      TransportError      timeouts, dropped connections, bodies that are not JSON
        BadBody           a 2xx body that is not the documented JSON
      ExportError         an export job that was rejected or failed
      RunInterrupted      stopped before the first search               exit 130
      ModelUnavailableError  the embedding model package is missing

The CLI maps each to `error: <message>` and its `exit_code`. Messages name the place and the
value; they never carry a token or a secret.

Beside the tree, four exceptions that never reach a user, and so are not `VlbenchError`s:

    HttpError             the local server's error answer (status, detail, headers)
    ValidationFailed      the local server's 422 answer, a list of issues
    UnitDropped           the scheduler gives a unit up because the run is stopping
    FatalFailure          the scheduler ends the run on a failure (credentials refused)

The first two are how the server's handlers answer with an error (its middleware turns them
into JSON: `runner.server.middleware`); the last two are the scheduler's control flow between a
worker and the loop that runs it (`runner.execute._schedule`). They live here so that every
exception class is in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

__all__ = [
    "ApiError",
    "AuthError",
    "BadBody",
    "CredentialsError",
    "DatasetError",
    "ExportError",
    "FatalFailure",
    "HttpError",
    "ModelUnavailableError",
    "RunError",
    "RunInterrupted",
    "SuiteError",
    "Throttled",
    "TransportError",
    "UnitDropped",
    "UsageError",
    "ValidationFailed",
    "VlbenchError",
    "WriteError",
]


class VlbenchError(Exception):
    """Root of every error vlbench raises on purpose."""

    exit_code: int = 1


class UsageError(VlbenchError):
    """A command-line value that cannot be used."""

    exit_code = 2


class CredentialsError(UsageError):
    """Credentials in the environment that cannot be used (an API key without its secret, ...).

    The message names the variables, never their values.
    """


class SuiteError(VlbenchError):
    """A suite that cannot be run: `path:line: key: what is wrong`."""

    exit_code = 2

    def __init__(self, message: str, *, path: str, line: int | None = None, key: str = "") -> None:
        self.path = path
        self.line = line
        self.key = key
        self.reason = message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class DatasetError(VlbenchError):
    """A dataset file that cannot be imported: `path:line: field: what is wrong`."""

    exit_code = 2

    def __init__(
        self, message: str, *, path: str, line: int | None = None, field: str = ""
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


class RunError(VlbenchError):
    """A run directory that cannot be read, resumed, merged or exported."""

    exit_code = 2


class WriteError(VlbenchError):
    """A file that cannot be written: `path: cannot write: <the system's words>` (a full disk).

    Exit 1: the input was fine, the machine was not; free the space and run the command again.
    """

    def __init__(self, message: str, *, path: str, errno: int | None = None) -> None:
        self.path = path
        self.errno = errno
        super().__init__(message)


class ApiError(VlbenchError):
    """The API answered with an error status."""

    def __init__(
        self, message: str, *, status: int, detail: object = None, request_key: str | None = None
    ) -> None:
        self.status = status
        self.detail = detail
        self.request_key = request_key
        super().__init__(message)


class AuthError(ApiError):
    """The API refused the credentials (401) or the permission (403)."""


class Throttled(ApiError):
    """The API asked to come back later: 429, or any status with `Retry-After`.

    `retry_after` is the wait it asked for in seconds (None when it gave no usable header).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        detail: object = None,
        request_key: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, detail=detail, request_key=request_key)
        self.retry_after = retry_after


class TransportError(VlbenchError):
    """No usable answer: a timeout, a dropped connection, or a body that is not the API's JSON."""

    def __init__(self, message: str, *, kind: str, request_key: str | None = None) -> None:
        self.kind = kind
        self.request_key = request_key
        super().__init__(message)


class ExportError(VlbenchError):
    """An export job that the API rejected or that failed."""


class BadBody(TransportError):
    """A 2xx answer whose body is not the documented JSON (`kind == "bad_body"`)."""

    def __init__(self, message: str, *, status: int, request_key: str | None = None) -> None:
        super().__init__(message, kind="bad_body", request_key=request_key)
        self.status = status


class RunInterrupted(VlbenchError):
    """Stopped (Ctrl-C, SIGTERM) before the first search; nothing was written."""

    exit_code = 130


class ModelUnavailableError(VlbenchError):
    """The embedding model package is not installed, or is not the model this encoder implements."""


# -- not VlbenchErrors: the server's answers and the scheduler's signals (see the module doc) --


class HttpError(Exception):
    """An error answer of the local server: `status` with `{"detail": detail}` and headers."""

    def __init__(
        self, status: int, detail: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})
        super().__init__(f"{status}: {detail}")


class _Issue(Protocol):
    """What a 422 issue offers (`runner.server.errors.Issue`)."""

    @property
    def loc(self) -> tuple[str | int, ...]: ...

    @property
    def msg(self) -> str: ...

    def to_json(self) -> dict[str, object]: ...


class ValidationFailed(Exception):
    """A 422 answer of the local server listing every problem found in the request."""

    def __init__(self, issues: Sequence[_Issue] = ()) -> None:
        super().__init__()
        self.issues = issues

    def __str__(self) -> str:
        return "; ".join(f"{'.'.join(map(str, i.loc))}: {i.msg}" for i in self.issues)


class UnitDropped(Exception):
    """A unit given up because the run is stopping; it is not recorded (resume redoes it)."""


class FatalFailure(Exception):
    """A failure that ends the run (credentials refused), carrying the error to report."""

    def __init__(self, error: VlbenchError) -> None:
        super().__init__(str(error))
        self.error = error
