"""Strict splitting of PEM text (RFC 7468) taken from outside.

``cryptography``'s PEM loaders look for the first block and ignore whatever surrounds it;
for hostile input we want the opposite: the text must be exactly a sequence of blocks
with nothing but whitespace around them, so that nothing is silently skipped.
"""

from __future__ import annotations

import re

from tinyward.errors import BadInput

_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]{1,40})-----\r?\n([A-Za-z0-9+/=\r\n]*?)-----END \1-----"
)


class PemError(BadInput, ValueError):
    """The text is not a clean sequence of PEM blocks (the message says where)."""


def split_pem(data: bytes, max_blocks: int) -> list[tuple[str, bytes]]:
    """Split ``data`` into ``(label, block)`` pairs, each block a complete PEM block.

    Raises:
        PemError: non-ASCII bytes, text outside the blocks, a malformed block, no block at
            all, or more than ``max_blocks`` blocks.
    """
    if not data.isascii():
        raise PemError("not PEM text (it contains non-ASCII bytes)")
    blocks: list[tuple[str, bytes]] = []
    position = 0
    for match in _BLOCK.finditer(data):
        if data[position : match.start()].strip():
            raise PemError(f"unexpected text at byte {position} (outside any PEM block)")
        blocks.append((match.group(1).decode("ascii"), match.group(0)))
        if len(blocks) > max_blocks:
            raise PemError(f"more than {max_blocks} PEM blocks")
        position = match.end()
    if data[position:].strip():
        raise PemError(f"unexpected text at byte {position} (outside any PEM block)")
    if not blocks:
        raise PemError("no PEM block found")
    return blocks
