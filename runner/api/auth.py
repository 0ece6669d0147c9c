"""Explore API credentials and the HS256 JWTs minted from them (client and local server alike).

The hosted API wants `Authorization: Bearer <jwt>` where the client mints the JWT itself: HS256
signed with the API secret, header `{"alg": "HS256", "typ": "JWT", "kid": <api_key>}`, claims
`sub` = api key, `iss` = "sdk", `iat` and `exp` in Unix seconds.

    creds = Credentials.from_env()           # VL_API_KEY / VL_API_SECRET, else the demo pair
    token = mint_token(creds, ttl_s=600)
    claims = verify_token(token, {creds.api_key: creds.api_secret})

The secret and the token never appear in a repr, a str or an error message.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import jwt
from jwt.algorithms import HMACAlgorithm

from runner.errors import AuthError

__all__ = [
    "DEMO_API_KEY",
    "DEMO_API_SECRET",
    "DEMO_CREDENTIALS",
    "ENV_API_KEY",
    "ENV_API_SECRET",
    "ENV_TOKEN",
    "ISSUER",
    "Credentials",
    "bearer_header",
    "mint_token",
    "token_from_env",
    "verify_token",
]

DEMO_API_KEY: Final = "vlbench-demo"
DEMO_API_SECRET: Final = "vlbench-demo-secret"
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

        Both variables or neither: one without the other raises `AuthError`, since silently
        falling back to the demo key would send the wrong credentials to a real service.
        """
        env = os.environ if environ is None else environ
        key, secret = env.get(ENV_API_KEY, ""), env.get(ENV_API_SECRET, "")
        if key and secret:
            return cls(key, secret)
        if key or secret:
            missing = ENV_API_SECRET if key else ENV_API_KEY
            raise AuthError(f"{missing} is not set (set both or neither)", status=401)
        return DEMO_CREDENTIALS if demo_default else None


DEMO_CREDENTIALS: Final = Credentials(DEMO_API_KEY, DEMO_API_SECRET)


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


def bearer_header(token: str) -> dict[str, str]:
    """The `Authorization` header that carries `token`."""
    return {"Authorization": f"Bearer {token}"}


def token_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The ready-made token in `VL_TOKEN`, or None when unset or empty."""
    env = os.environ if environ is None else environ
    return env.get(ENV_TOKEN) or None


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
