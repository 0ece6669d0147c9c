"""`vlbench token`: print a fresh JWT for the API key and secret (the one place a token shows)."""

from __future__ import annotations

import typer

from runner.api.auth import Credentials, mint_token
from runner.cli._app import app, fail
from runner.errors import UsageError, VlbenchError

__all__ = ["token"]


@app.command()
def token(
    ttl: int = typer.Option(600, help="Seconds until the token expires."),
) -> None:
    """Print a fresh HS256 token from VL_API_KEY/VL_API_SECRET, else the local demo key.

    Printing the token is this command's purpose; nothing else in vlbench shows one.
    Example: curl -H "Authorization: Bearer $(vlbench token)" localhost:8765/api/v1/healthcheck
    """
    if ttl <= 0:
        fail(UsageError(f"--ttl: {ttl} is not positive"))
    try:
        creds = Credentials.from_env()
    except VlbenchError as exc:
        fail(exc)
    if creds is None:  # from_env falls back to the demo pair, so this is defensive
        fail(UsageError("no API key: set VL_API_KEY and VL_API_SECRET"))
    typer.echo(mint_token(creds, ttl_s=ttl))
