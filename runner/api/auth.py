"""Explore API credentials, the HS256 JWTs minted from them, and where a client's token comes from.

The hosted API wants `Authorization: Bearer <jwt>` where the client mints the JWT itself: HS256
signed with the API secret, header `{"alg": "HS256", "typ": "JWT", "kid": <api_key>}`, claims
`sub` = api key, `iss` = "sdk", `iat` and `exp` in Unix seconds.

    auth = TokenSource.from_env()            # VL_TOKEN, else VL_API_KEY + VL_API_SECRET, else none
    creds = Credentials.from_env()           # VL_API_KEY / VL_API_SECRET, else the demo pair
    token = mint_token(creds, ttl_s=600)
    claims = verify_token(token, {creds.api_key: creds.api_secret})

`read_env_auth` is the one reader of credentials in the environment (the client's, the local
server's and `vlbench token`'s); it refuses a key without its secret with `CredentialsError`.
The secret and the token never appear in a repr, a str or an error message.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import jwt
from jwt.algorithms import HMACAlgorithm

from runner.errors import AuthError, CredentialsError

__all__ = [
    "DEMO_API_KEY",
    "DEMO_API_SECRET",
    "DEMO_CREDENTIALS",
    "ENV_API_KEY",
    "ENV_API_SECRET",
    "ENV_TOKEN",
    "ISSUER",
    "MIN_SECRET_LENGTH",
    "Credentials",
    "EnvAuth",
    "EnvNames",
    "TokenSource",
    "TokenVerifier",
    "bearer_header",
    "mint_token",
    "read_env_auth",
    "verify_token",
]

DEMO_API_KEY: Final = "vlbench-demo"
DEMO_API_SECRET: Final = "vlbench-demo-secret"
# The shortest token or API secret read from the environment (see `read_env_auth`).
MIN_SECRET_LENGTH: Final = 8
ENV_API_KEY: Final = "VL_API_KEY"
ENV_API_SECRET: Final = "VL_API_SECRET"
ENV_TOKEN: Final = "VL_TOKEN"
ISSUER: Final = "sdk"

_ALGORITHM: Final = "HS256"
# A JWT of three short claims is ~250 characters; anything far longer is not one of ours.
_MAX_TOKEN_CHARS: Final = 8192
# Clocks of client and server may disagree a little; an `iat` further ahead than this is refused.
_CLOCK_SKEW_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class Credentials:
    """An API key and its secret; repr and str show the key only.

    The key is not secret (it travels in every token's header), the secret never leaves this object
    except to sign.
    """

    api_key: str
    api_secret: str = field(repr=False)

    def __str__(self) -> str:
        return f"Credentials(api_key={self.api_key!r})"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, demo_default: bool = True
    ) -> Credentials | None:
        """The credentials in `VL_API_KEY` / `VL_API_SECRET`, else the demo pair (or None).

        Both variables or neither: one without the other raises `CredentialsError`, since
        silently falling back to the demo key would send the wrong credentials to a real service.
        """
        found = read_env_auth(environ).credentials
        if found is None and demo_default:
            return DEMO_CREDENTIALS
        return found


DEMO_CREDENTIALS: Final = Credentials(DEMO_API_KEY, DEMO_API_SECRET)


@dataclass(frozen=True, slots=True)
class EnvNames:
    """The names of the environment variables that may hold credentials (a suite's `auth`)."""

    token: str = ENV_TOKEN
    api_key: str = ENV_API_KEY
    api_secret: str = ENV_API_SECRET

    def unset(self) -> str:
        """What to set, for a message: `VL_TOKEN is unset, and VL_API_KEY and ... are unset`."""
        return (
            f"{self.token} is unset, and {self.api_key} and {self.api_secret} are unset "
            f"(set {self.token} to a token, or {self.api_key} and {self.api_secret} to mint one)"
        )


@dataclass(frozen=True, slots=True)
class EnvAuth:
    """What the environment holds: a ready token, credentials to mint from, either or none."""

    names: EnvNames
    token: str | None = field(default=None, repr=False)
    credentials: Credentials | None = None


def read_env_auth(
    environ: Mapping[str, str] | None = None, names: EnvNames = EnvNames()
) -> EnvAuth:
    """The credentials in the environment (`environ`, default `os.environ`) under `names`.

    The one place vlbench reads credentials from the environment. An empty variable counts as
    unset. An API key without its secret, or a secret without its key, raises
    `CredentialsError` naming the variable that is missing (never a value).
    """
    env = os.environ if environ is None else environ
    token = env.get(names.token) or None
    key, secret = env.get(names.api_key) or "", env.get(names.api_secret) or ""
    if bool(key) != bool(secret):
        missing = names.api_secret if key else names.api_key
        raise CredentialsError(
            f"{missing} is not set: set both {names.api_key} and {names.api_secret}, or neither"
        )
    for name, value in ((names.token, token), (names.api_secret, secret)):
        if value and len(value) < MIN_SECRET_LENGTH:
            # Blanking a secret of a letter or two would blank those letters in every message.
            raise CredentialsError(
                f"{name} is shorter than {MIN_SECRET_LENGTH} characters: that is not a token or "
                "an API secret (vlbench keeps them out of every message by blanking them wherever "
                "they appear, which a value that short would make unreadable)"
            )
    credentials = Credentials(key, secret) if key else None
    return EnvAuth(names, token, credentials)


class TokenSource:
    """Where the bearer token comes from: none, a ready token, or credentials to mint from.

    With credentials, a token is minted on first use and again `renew_before_s` before it
    expires (a run outlasts a token's 10 minutes), and `renew()` mints one at once after a 401.
    A ready token cannot be renewed. repr and str never show the token or the secret.
    `unset` says, for a source that found nothing in the environment, which variables were
    unset (the client adds it to a 401's message).
    """

    __slots__ = (
        "_clock",
        "_credentials",
        "_expires",
        "_generation",
        "_renew_before",
        "_token",
        "_ttl",
        "unset",
    )

    def __init__(
        self,
        *,
        token: str | None = None,
        credentials: Credentials | None = None,
        ttl_s: float = 600.0,
        renew_before_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        unset: str | None = None,
    ) -> None:
        if token is not None and credentials is not None:
            raise ValueError("give a token or credentials, not both")
        self._token = token
        self._credentials = credentials
        self._ttl = ttl_s
        self._renew_before = min(renew_before_s, ttl_s / 2)
        self._clock = clock
        self._expires = math.inf if token is not None else -math.inf
        self._generation = 0
        self.unset = unset

    @classmethod
    def anonymous(cls) -> TokenSource:
        """No Authorization header (an on-premises install, or a local server without auth)."""
        return cls()

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        names: EnvNames = EnvNames(),
        default: Credentials | None = None,
    ) -> TokenSource:
        """A ready token from `names.token`, else credentials from the key and secret variables.

        With neither set: `default` credentials when given, else anonymous (remembering which
        variables were unset). A key without its secret is refused (`CredentialsError`).
        """
        found = read_env_auth(environ, names)
        if found.token is not None:
            return cls(token=found.token)
        if found.credentials is not None:
            return cls(credentials=found.credentials)
        if default is not None:
            return cls(credentials=default)
        return cls(unset=names.unset())

    @property
    def kind(self) -> str:
        """ "none", "token" or "credentials"."""
        if self._credentials is not None:
            return "credentials"
        return "token" if self._token is not None else "none"

    @property
    def renewable(self) -> bool:
        """Whether a fresh token can be minted (credentials were given)."""
        return self._credentials is not None

    def current(self) -> tuple[int, dict[str, str]]:
        """The token's generation and the headers that carry it (empty without auth)."""
        if self._credentials is not None and self._clock() >= self._expires - self._renew_before:
            self._mint()
        if self._token is None:
            return self._generation, {}
        return self._generation, bearer_header(self._token)

    def renew(self, generation: int) -> bool:
        """Mint a fresh token after a 401 on `generation`; False when no token can be minted.

        Workers that all got a 401 on the same token renew it once: a later generation means
        another worker already did.
        """
        if self._credentials is None:
            return False
        if generation == self._generation:
            self._mint()
        return True

    def redact(self, text: str) -> str:
        """`text` with the token and the secret blanked, should a server ever echo them."""
        for secret in (self._token, self._credentials.api_secret if self._credentials else None):
            if secret:
                text = text.replace(secret, "[redacted]")
        return text

    def _mint(self) -> None:
        if self._credentials is None:  # only called with credentials
            raise RuntimeError("no credentials to mint a token from")
        now = self._clock()
        self._token = mint_token(self._credentials, ttl_s=self._ttl, now=now)
        self._expires = now + self._ttl
        self._generation += 1

    def __repr__(self) -> str:
        if self._credentials is not None:
            return f"TokenSource(credentials={self._credentials.api_key!r})"
        return f"TokenSource({self.kind})"

    __str__ = __repr__


class _HS256AnyLength(HMACAlgorithm):
    """HS256 without PyJWT's short-key warning.

    Secrets are issued by the vendor (and the demo secret is fixed by contract), so their length is
    not ours to police; the warning would be an error under the test suite's `filterwarnings`.
    """

    def check_key_length(self, key: bytes) -> str | None:
        return None


def _make_jws() -> jwt.PyJWS:
    jws = jwt.PyJWS(algorithms=[_ALGORITHM])
    jws.unregister_algorithm(_ALGORITHM)
    jws.register_algorithm(_ALGORITHM, _HS256AnyLength(HMACAlgorithm.SHA256))
    return jws


_JWS: Final = _make_jws()


def mint_token(creds: Credentials, *, ttl_s: float = 600, now: float | None = None) -> str:
    """A fresh HS256 JWT for `creds`, valid for `ttl_s` seconds from `now` (default: the clock)."""
    issued = int(time.time() if now is None else now)
    claims = {"sub": creds.api_key, "iss": ISSUER, "iat": issued, "exp": issued + int(ttl_s)}
    payload = json.dumps(claims, separators=(",", ":")).encode()
    return _JWS.encode(
        payload,
        creds.api_secret,
        algorithm=_ALGORITHM,
        headers={"alg": _ALGORITHM, "typ": "JWT", "kid": creds.api_key},
    )


def verify_token(
    token: str,
    secrets_by_key: Mapping[str, str],
    *,
    now: float | None = None,
    max_age_s: float | None = None,
) -> dict[str, Any]:
    """Check `token`'s signature and claims; return the claims.

    The key comes from the header's `kid` (else the claims' `sub`) and must be in `secrets_by_key`.
    Refused with `AuthError` (status 401): malformed, unknown key, bad signature, wrong `iss`/`sub`,
    expired (`now >= exp`), issued in the future, or older than `max_age_s` since `iat`.
    """
    moment = time.time() if now is None else now
    if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_CHARS:
        raise _refuse("malformed token")
    try:
        header = _JWS.get_unverified_header(token)
    except (jwt.PyJWTError, ValueError, TypeError):
        raise _refuse("malformed token") from None
    if header.get("alg") != _ALGORITHM:
        raise _refuse("token algorithm must be HS256")
    key = header.get("kid")
    if key is None:
        key = _unverified_claims(token).get("sub")
    secret = secrets_by_key.get(key) if isinstance(key, str) else None
    if secret is None or not isinstance(key, str):
        raise _refuse("unknown API key")
    try:
        decoded = _JWS.decode_complete(token, secret, algorithms=[_ALGORITHM])
    except jwt.InvalidSignatureError:
        raise _refuse("token signature does not verify") from None
    except (jwt.PyJWTError, ValueError, TypeError):
        raise _refuse("malformed token") from None
    claims = _parse_claims(decoded["payload"])
    _check_claims(claims, key, moment, max_age_s)
    return claims


class TokenVerifier:
    """`verify_token` for a server: each token's signature is checked once, its times every time.

    A client sends one token for many requests; checking its HMAC each time was 4% of a
    search's CPU. The claims of a token that verified are kept (at most `size` tokens, all
    forgotten when full), and a token seen again is judged on them at its moment: expiry,
    issue time and `max_age_s` still refuse it as `verify_token` would.
    """

    def __init__(
        self, secrets_by_key: Mapping[str, str], *, max_age_s: float | None, size: int = 1024
    ) -> None:
        self._secrets, self._max_age_s, self._size = secrets_by_key, max_age_s, size
        self._verified: dict[str, dict[str, Any]] = {}

    def __call__(self, token: str, *, now: float | None = None) -> dict[str, Any]:
        """The claims of `token`, or `AuthError` (401) as from `verify_token`."""
        claims = self._verified.get(token)
        if claims is None:
            claims = verify_token(token, self._secrets, now=now, max_age_s=self._max_age_s)
            if len(self._verified) >= self._size:
                self._verified.clear()
            self._verified[token] = claims
            return claims
        moment = time.time() if now is None else now
        _check_claims(claims, claims["sub"], moment, self._max_age_s)
        return claims


def bearer_header(token: str) -> dict[str, str]:
    """The `Authorization` header that carries `token`."""
    return {"Authorization": f"Bearer {token}"}


def _refuse(reason: str) -> AuthError:
    return AuthError(f"unauthorised: {reason}", status=401, detail=reason)


def _unverified_claims(token: str) -> dict[str, Any]:
    try:
        payload = _JWS.decode_complete(token, options={"verify_signature": False})["payload"]
    except (jwt.PyJWTError, ValueError, TypeError):
        raise _refuse("malformed token") from None
    return _parse_claims(payload)


def _parse_claims(payload: bytes) -> dict[str, Any]:
    try:
        claims = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise _refuse("malformed token claims") from None
    if not isinstance(claims, dict):
        raise _refuse("malformed token claims")
    return claims


def _as_time(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _check_claims(claims: Mapping[str, Any], key: str, now: float, max_age_s: float | None) -> None:
    if claims.get("sub") != key:
        raise _refuse("token subject does not match its key id")
    if claims.get("iss") != ISSUER:
        raise _refuse(f"token issuer must be {ISSUER!r}")
    iat, exp = _as_time(claims.get("iat")), _as_time(claims.get("exp"))
    if iat is None or exp is None:
        raise _refuse("token needs numeric iat and exp claims")
    if now >= exp:
        raise _refuse("token expired")
    if iat > now + _CLOCK_SKEW_S:
        raise _refuse("token issued in the future")
    if max_age_s is not None and now - iat >= max_age_s:
        raise _refuse(f"token expired (older than {max_age_s:g} s)")
