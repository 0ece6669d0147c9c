"""Minting and verifying the Explore API's HS256 tokens (runner.api.auth)."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from runner.api.auth import (
    DEMO_API_KEY,
    DEMO_API_SECRET,
    DEMO_CREDENTIALS,
    ENV_API_KEY,
    ENV_API_SECRET,
    ENV_TOKEN,
    MIN_SECRET_LENGTH,
    Credentials,
    EnvNames,
    TokenSource,
    TokenVerifier,
    bearer_header,
    mint_token,
    read_env_auth,
    verify_token,
)
from runner.api.client import ExploreClient
from runner.errors import AuthError, CredentialsError, UsageError

NOW = 1_700_000_000.0
CREDS = Credentials("key-1", "a-secret-that-must-never-show")
SECRETS = {CREDS.api_key: CREDS.api_secret}


def _segment(token: str, index: int) -> dict[str, object]:
    part = token.split(".")[index]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def _forge(header: dict[str, object], claims: dict[str, object], secret: str) -> str:
    return jwt.PyJWS().encode(
        json.dumps(claims).encode(),
        secret.ljust(32, "-"),  # PyJWT warns about short keys; forged tokens use long ones
        algorithm="HS256",
        headers=header,
    )


def test_mint_has_the_documented_header_and_claims() -> None:
    token = mint_token(CREDS, ttl_s=600, now=NOW)
    assert _segment(token, 0) == {"alg": "HS256", "typ": "JWT", "kid": "key-1"}
    assert _segment(token, 1) == {"sub": "key-1", "iss": "sdk", "iat": NOW, "exp": NOW + 600}


def test_round_trip_returns_the_claims() -> None:
    token = mint_token(CREDS, ttl_s=60, now=NOW)
    claims = verify_token(token, SECRETS, now=NOW + 59)
    assert claims["sub"] == CREDS.api_key and claims["exp"] - claims["iat"] == 60


def test_pyjwt_agrees_with_the_signature() -> None:
    token = mint_token(Credentials("k", "x" * 32), now=NOW)
    decoded = jwt.decode(token, "x" * 32, algorithms=["HS256"], options={"verify_exp": False})
    assert decoded["iss"] == "sdk"


@pytest.mark.parametrize(
    "offset", [pytest.param(600, id="at-exp"), pytest.param(10_000, id="long-after")]
)
def test_expired_token_is_refused(offset: float) -> None:
    token = mint_token(CREDS, ttl_s=600, now=NOW)
    with pytest.raises(AuthError, match="expired") as info:
        verify_token(token, SECRETS, now=NOW + offset)
    assert info.value.status == 401


def test_max_age_expires_a_token_early() -> None:
    token = mint_token(CREDS, ttl_s=600, now=NOW)
    verify_token(token, SECRETS, now=NOW + 4, max_age_s=5)
    with pytest.raises(AuthError, match="expired"):
        verify_token(token, SECRETS, now=NOW + 5, max_age_s=5)


def test_a_remembered_token_is_still_judged_on_its_times() -> None:
    verify = TokenVerifier(SECRETS, max_age_s=5, size=2)
    token = mint_token(CREDS, ttl_s=600, now=NOW)
    assert verify(token, now=NOW + 1) == verify_token(token, SECRETS, now=NOW + 1)
    assert verify(token, now=NOW + 4)["sub"] == CREDS.api_key  # remembered: no signature check
    with pytest.raises(AuthError, match="older than 5 s"):
        verify(token, now=NOW + 5)
    with pytest.raises(AuthError, match="issued in the future"):
        verify(mint_token(CREDS, ttl_s=600, now=NOW + 3600), now=NOW)


def test_a_token_verifier_remembers_only_tokens_that_verified() -> None:
    verify = TokenVerifier(SECRETS, max_age_s=None, size=2)
    forged = mint_token(Credentials(CREDS.api_key, "another-secret"), now=NOW)
    for _ in range(2):  # refused again: a refusal is never remembered as a pass
        with pytest.raises(AuthError, match="signature"):
            verify(forged, now=NOW)
    tokens = [mint_token(CREDS, ttl_s=600 + i, now=NOW) for i in range(5)]
    for token in tokens * 2:  # more tokens than it keeps: forgets, verifies again, same claims
        assert verify(token, now=NOW)["exp"] == verify_token(token, SECRETS, now=NOW)["exp"]
    with pytest.raises(AuthError, match="expired"):
        verify(tokens[0], now=NOW + 600)


def test_wrong_secret_is_refused() -> None:
    token = mint_token(Credentials(CREDS.api_key, "another-secret"), now=NOW)
    with pytest.raises(AuthError, match="signature"):
        verify_token(token, SECRETS, now=NOW)


def test_unknown_key_is_refused() -> None:
    token = mint_token(Credentials("stranger", CREDS.api_secret), now=NOW)
    with pytest.raises(AuthError, match="unknown API key"):
        verify_token(token, SECRETS, now=NOW)


@pytest.mark.parametrize(
    "header, claims, reason",
    [
        pytest.param(
            {"kid": "key-1"},
            {"sub": "other", "iss": "sdk", "iat": NOW, "exp": NOW + 9},
            "subject",
            id="sub-not-kid",
        ),
        pytest.param(
            {"kid": "key-1"},
            {"sub": "key-1", "iss": "elsewhere", "iat": NOW, "exp": NOW + 9},
            "issuer",
            id="wrong-iss",
        ),
        pytest.param(
            {"kid": "key-1"}, {"sub": "key-1", "iss": "sdk", "iat": NOW}, "iat and exp", id="no-exp"
        ),
        pytest.param(
            {"kid": "key-1"},
            {"sub": "key-1", "iss": "sdk", "iat": NOW + 3600, "exp": NOW + 7200},
            "future",
            id="iat-in-future",
        ),
        pytest.param(
            {"kid": "key-1"},
            {"sub": "key-1", "iss": "sdk", "iat": True, "exp": NOW + 9},
            "iat and exp",
            id="bool-iat",
        ),
    ],
)
def test_bad_claims_are_refused(
    header: dict[str, object], claims: dict[str, object], reason: str
) -> None:
    secrets = {"key-1": "s".ljust(32, "-")}
    with pytest.raises(AuthError, match=reason):
        verify_token(_forge(header, claims, "s"), secrets, now=NOW)


def test_key_comes_from_sub_without_kid() -> None:
    claims = {"sub": "key-1", "iss": "sdk", "iat": NOW, "exp": NOW + 9}
    token = _forge({}, claims, "s")
    assert verify_token(token, {"key-1": "s".ljust(32, "-")}, now=NOW)["sub"] == "key-1"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("not-a-jwt", id="one-part"),
        pytest.param("a.b.c", id="garbage-parts"),
        pytest.param("x" * 9000, id="huge"),
        pytest.param("eyJhbGciOiJub25lIn0.e30.", id="alg-none"),
        pytest.param("\x00.\x00.\x00", id="nul-bytes"),
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(AuthError) as info:
        verify_token(token, SECRETS, now=NOW)
    assert info.value.status == 401


def test_secret_never_shows() -> None:
    shown = [repr(CREDS), str(CREDS), f"{CREDS}", repr([CREDS])]
    assert all(CREDS.api_secret not in text for text in shown)
    assert all(CREDS.api_key in text for text in shown)


def test_errors_never_carry_the_token_or_secret() -> None:
    token = mint_token(CREDS, ttl_s=1, now=NOW)
    failures: list[AuthError] = []
    for secrets, now in [(SECRETS, NOW + 100), ({"key-1": "wrong"}, NOW)]:
        with pytest.raises(AuthError) as info:
            verify_token(token, secrets, now=now)
        failures.append(info.value)
    for error in failures:
        text = f"{error} {error!r} {error.detail} {error.__cause__!r} {error.__context__!r}"
        assert token not in text and CREDS.api_secret not in text
        assert token.split(".")[2] not in text


def test_from_env_prefers_the_environment() -> None:
    creds = Credentials.from_env({ENV_API_KEY: "k", ENV_API_SECRET: "s3cret-value"})
    assert creds == Credentials("k", "s3cret-value")


def test_from_env_falls_back_to_the_demo_pair() -> None:
    assert Credentials.from_env({}) == DEMO_CREDENTIALS
    assert DEMO_CREDENTIALS == Credentials(DEMO_API_KEY, DEMO_API_SECRET)
    assert Credentials.from_env({}, demo_default=False) is None


@pytest.mark.parametrize(
    "env, missing",
    [
        pytest.param({ENV_API_KEY: "k"}, ENV_API_SECRET, id="key-without-secret"),
        pytest.param({ENV_API_SECRET: "s3cret-value"}, ENV_API_KEY, id="secret-without-key"),
        pytest.param({ENV_TOKEN: "t", ENV_API_KEY: "k"}, ENV_API_SECRET, id="with-a-token-too"),
    ],
)
def test_every_reader_refuses_half_a_pair_with_one_error(env: dict[str, str], missing: str) -> None:
    # The server's, `vlbench token`'s and the client's readings are one function, one error.
    for read in (Credentials.from_env, TokenSource.from_env, read_env_auth):
        with pytest.raises(CredentialsError, match=f"^{missing} is not set") as caught:
            read(env)
        assert caught.value.exit_code == 2
        assert "s3cret-value" not in str(caught.value)


def test_read_env_auth_reads_the_names_given() -> None:
    names = EnvNames(token="MY_TOKEN", api_key="MY_KEY", api_secret="MY_SECRET")
    found = read_env_auth({"MY_TOKEN": "token-abc", ENV_TOKEN: "other"}, names)
    assert found.token == "token-abc" and found.credentials is None
    found = read_env_auth({"MY_KEY": "k", "MY_SECRET": "secret-s", ENV_TOKEN: ""}, names)
    assert found.token is None and found.credentials == Credentials("k", "secret-s")
    assert read_env_auth({ENV_TOKEN: ""}).token is None
    assert "token-abc" not in repr(read_env_auth({ENV_TOKEN: "token-abc"}))
    with pytest.raises(CredentialsError, match="MY_SECRET is not set"):
        read_env_auth({"MY_KEY": "k", ENV_API_SECRET: "secret-s"}, names)


@pytest.mark.parametrize("name", [ENV_TOKEN, ENV_API_SECRET])
@pytest.mark.parametrize("value", ["%", "Zq#9", "@" * (MIN_SECRET_LENGTH - 1)])
def test_a_secret_too_short_to_blank_is_refused(name: str, value: str) -> None:
    # Blanking "e" in every message would garble them all, and "e" cannot be a real secret.
    env = {name: value, ENV_API_KEY: "k"} if name == ENV_API_SECRET else {name: value}
    with pytest.raises(CredentialsError, match=f"^{name} is shorter than") as caught:
        read_env_auth(env)
    assert caught.value.exit_code == 2 and value not in str(caught.value)
    read_env_auth({**env, name: value + "y" * MIN_SECRET_LENGTH})  # long enough: accepted


def test_bearer_header() -> None:
    assert bearer_header("abc") == {"Authorization": "Bearer abc"}


# -- where the token comes from -----------------------------------------------------------------


def test_token_source_from_env() -> None:
    creds = Credentials("k", "s3cret")
    assert TokenSource.from_env({"VL_TOKEN": "token-abc"}).kind == "token"
    env = {"VL_API_KEY": "k", "VL_API_SECRET": "s3cret-value"}
    assert TokenSource.from_env(env).kind == "credentials"
    assert TokenSource.from_env({}).kind == "none"
    assert TokenSource.from_env({}, default=creds).kind == "credentials"
    custom = TokenSource.from_env({"MY_T": "token-abc"}, names=EnvNames(token="MY_T"))
    assert custom.current()[1] == {"Authorization": "Bearer token-abc"}
    with pytest.raises(UsageError, match="VL_API_SECRET is not set"):
        TokenSource.from_env({"VL_API_KEY": "k"})


def test_token_is_minted_again_before_it_expires() -> None:
    now = [1_000_000.0]
    auth = TokenSource(
        credentials=Credentials("k", "s"), ttl_s=600, renew_before_s=60, clock=lambda: now[0]
    )
    generation, first = auth.current()
    now[0] += 600 - 61
    assert auth.current() == (generation, first)
    now[0] += 2  # within a minute of expiry
    assert auth.current()[0] == generation + 1


def test_renew_mints_once_per_generation() -> None:
    auth = TokenSource(credentials=Credentials("k", "s"))
    generation, _ = auth.current()
    assert auth.renew(generation) and auth.renew(generation)  # a second worker, same 401
    assert auth.current()[0] == generation + 1
    assert not TokenSource(token="t").renew(0)
    assert not TokenSource().renew(0)


def test_token_source_repr_hides_token_and_secret() -> None:
    token = mint_token(Credentials("key-1", "top-secret"))
    for auth in (
        TokenSource(token=token),
        TokenSource(credentials=Credentials("key-1", "top-secret")),
    ):
        auth.current()
        for text in (repr(auth), str(auth)):
            assert token not in text and "top-secret" not in text
    assert "top-secret" not in repr(ExploreClient("http://api.test", "ds", auth=auth))
