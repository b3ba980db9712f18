"""The attestation nonce as a person types it: hexadecimal, 32, 48 or 64 bytes (RFC 9783)."""

from __future__ import annotations

import click


def hex_nonce(text: str, param_hint: str = "--nonce") -> bytes:
    """The nonce bytes, or a usage error naming the option."""
    try:
        nonce = bytes.fromhex(text.strip())
    except ValueError:
        raise click.BadParameter("the nonce must be hexadecimal", param_hint=param_hint) from None
    if len(nonce) not in (32, 48, 64):
        raise click.BadParameter(f"the nonce must be 32, 48 or 64 bytes, got {len(nonce)}",
                                 param_hint=param_hint)
    return nonce
