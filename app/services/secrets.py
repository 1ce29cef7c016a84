"""Secrets at rest and in sight: MultiFernet encryption and masking.

Webhook URLs carry a secret, outbound tokens are secrets: both are stored encrypted with
``cryptography``'s MultiFernet (the first key encrypts, every key decrypts, so keys can be rotated by
putting the new one first), and shown with at most 4 of their characters.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

log = logging.getLogger("flask_bitrix24")

KEY_FILE_NAME = "bitrix24_secret.key"


class SecretKeyError(RuntimeError):
    """BITRIX_SECRET_KEY is unusable, or stored secrets cannot be decrypted with it."""


def mask(secret: str | None, show: int = 4) -> str | None:
    """``"mkv9w4dxxvbao7ga"`` -> ``"mkv9…"``; short secrets show less, so at most a quarter leaks."""
    if secret is None:
        return None
    if not secret:
        return ""
    visible = min(show, len(secret) // 4)
    return secret[:visible] + "…"


def mask_url(base: str | None) -> str | None:
    """Mask the secret in ``https://host/rest/1/<secret>/``; keep host and user id for debugging."""
    if base is None:
        return None
    parts = urlsplit(base)
    segments = parts.path.split("/")
    # ["", "rest", "<user_id>", "<secret>", ""]
    if len(segments) >= 4 and segments[1] == "rest":
        segments[3] = mask(segments[3]) or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{'/'.join(segments)}"


def load_cipher(configured: str | None, instance_path: str, cli_group: str = "bitrix24") -> MultiFernet:
    """Build the MultiFernet from ``BITRIX_SECRET_KEY`` (comma-separated Fernet keys, newest first).

    Without it, a key is generated once into the instance folder (mode 0600) so a development setup
    works and stays stable across restarts; production should set the variable (a warning says so).
    """
    if configured and configured.strip():
        raw_keys = [k.strip() for k in configured.split(",") if k.strip()]
    else:
        raw_keys = [_instance_key(instance_path)]
    fernets = []
    for index, key in enumerate(raw_keys):
        try:
            fernets.append(Fernet(key.encode("ascii")))
        except (ValueError, UnicodeEncodeError):
            raise SecretKeyError(
                f"BITRIX_SECRET_KEY entry {index + 1} is not a Fernet key (32 url-safe base64 bytes); "
                f"generate one with `flask {cli_group} generate-key`"
            ) from None
    return MultiFernet(fernets)


def _instance_key(instance_path: str) -> str:
    path = Path(instance_path) / KEY_FILE_NAME
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode("ascii")
    # O_EXCL: two workers starting together must not each write a different key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    log.warning(
        "BITRIX_SECRET_KEY is not set: generated an encryption key for stored Bitrix24 secrets at %s. "
        "Set BITRIX_SECRET_KEY in production and keep it safe; without it stored secrets cannot be read.",
        path,
    )
    return key


def encrypt_json(cipher: MultiFernet, data: dict[str, Any]) -> str:
    return cipher.encrypt(json.dumps(data, separators=(",", ":")).encode("utf-8")).decode("ascii")


def decrypt_json(cipher: MultiFernet, token: str) -> dict[str, Any]:
    try:
        return json.loads(cipher.decrypt(token.encode("ascii")))
    except InvalidToken:
        raise SecretKeyError(
            "stored Bitrix24 credentials cannot be decrypted with BITRIX_SECRET_KEY: "
            "was the key changed without keeping the old one in the list?"
        ) from None
