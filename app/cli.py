"""``flask bitrix24 ...`` commands."""

from __future__ import annotations

import click
from cryptography.fernet import Fernet
from flask.cli import AppGroup, with_appcontext

bitrix24_cli = AppGroup("bitrix24", help="Bitrix24 integration: setup and maintenance.")


@bitrix24_cli.command("setup")
@with_appcontext
def setup_command() -> None:
    """Create the integration's tables and the Bitrix24 CRM row (idempotent)."""
    from .services.setup import run_setup

    report = run_setup()
    for line in report.lines():
        click.echo(line)


@bitrix24_cli.command("generate-key")
def generate_key_command() -> None:
    """Print a new key for BITRIX_SECRET_KEY (put it first in the list to rotate)."""
    click.echo(Fernet.generate_key().decode("ascii"))
