"""`vlbench token`: print a fresh JWT for the API key and secret (the one place a token shows)."""

from __future__ import annotations

import typer

from runner.api.auth import DEMO_CREDENTIALS, Credentials, mint_token
from runner.cli._app import command
from runner.errors import UsageError

__all__ = ["token"]


@command()
def token(
    ttl: int = typer.Option(600, help="Seconds until the token expires."),
) -> None:
    """Print a fresh HS256 token from VL_API_KEY/VL_API_SECRET, else the local demo key.

    Printing the token is this command's purpose; nothing else in vlbench shows one.
    Example: curl -H "Authorization: Bearer $(vlbench token)" localhost:8765/api/v1/healthcheck
    """
    if ttl <= 0:
        raise UsageError(f"--ttl: {ttl} is not positive")
    # from_env already falls back to the demo pair; `or` only tells the type checker so.
    typer.echo(mint_token(Credentials.from_env() or DEMO_CREDENTIALS, ttl_s=ttl))
