"""QR codes for a terminal, narrow enough for 80 columns.

A signed offline report (512 bytes, ``TW1:`` + base64url) needs a version 18 QR code:
89 modules, 97 with the 4-module quiet zone the standard asks for. Half blocks (two module
rows per text line, segno's ``compact``) keep one column per module: 97 columns, wider
than an 80-column terminal, so the code was cut and could not be scanned. Quadrant blocks
(U+2596..U+259F) draw 2 x 2 modules per character: 49 columns and 49 lines, quiet zone
kept. A terminal cell is about twice as tall as wide, so each module is drawn twice as tall
as wide; QR readers sample the grid through a perspective transform from the finder
patterns and read it all the same (tests/readout/test_qr.py decodes the rendering
rasterised at that aspect with zxing-cpp). When half blocks fit, they are used: square
modules.

"Ink" is a light module, drawn as a block; a dark module is a space. With ``ansi`` the
lines carry white-on-black colours, so the code reads right on a light terminal too.
"""

from __future__ import annotations

from collections.abc import Sequence

import segno

QUIET_ZONE = 4  # modules, as ISO/IEC 18004 asks
TERMINAL_COLUMNS = 80

# Bit 8: upper left, 4: upper right, 2: lower left, 1: lower right; a set bit is a light module.
QUADRANTS = (" ", "\u2597", "\u2596", "\u2584", "\u259d", "\u2590", "\u259e", "\u259f",
             "\u2598", "\u259a", "\u258c", "\u2599", "\u2580", "\u259c", "\u259b", "\u2588")
HALF_BLOCKS = {(False, False): " ", (True, False): "\u2580", (False, True): "\u2584",
               (True, True): "\u2588"}
_ANSI_ON, _ANSI_OFF = "\x1b[97;40m", "\x1b[0m"


def light_matrix(qr: segno.QRCode, border: int = QUIET_ZONE) -> list[list[bool]]:
    """The symbol with its quiet zone, ``True`` for a light module."""
    return [[not dark for dark in row] for row in qr.matrix_iter(scale=1, border=border)]


def _padded(rows: list[list[bool]], width: int, height: int) -> list[list[bool]]:
    # Pad to whole characters with light modules: more quiet zone, never less.
    out = [row + [True] * (width - len(row)) for row in rows]
    return out + [[True] * width for _ in range(height - len(out))]


def quadrant_lines(light: Sequence[Sequence[bool]]) -> list[str]:
    """2 x 2 modules per character."""
    width, height = len(light[0]) + len(light[0]) % 2, len(light) + len(light) % 2
    m = _padded([list(r) for r in light], width, height)
    return ["".join(QUADRANTS[8 * m[y][x] + 4 * m[y][x + 1] + 2 * m[y + 1][x] + m[y + 1][x + 1]]
                    for x in range(0, width, 2))
            for y in range(0, height, 2)]


def half_block_lines(light: Sequence[Sequence[bool]]) -> list[str]:
    """1 x 2 modules per character (square modules on a usual terminal)."""
    width, height = len(light[0]), len(light) + len(light) % 2
    m = _padded([list(r) for r in light], width, height)
    return ["".join(HALF_BLOCKS[(m[y][x], m[y + 1][x])] for x in range(width))
            for y in range(0, height, 2)]


def terminal_lines(text: str, max_columns: int = TERMINAL_COLUMNS, error: str = "l",
                   ansi: bool = False) -> list[str]:
    """``text`` as a QR code in lines of at most ``max_columns`` characters.

    Half blocks when they fit, else quadrant blocks.

    Raises:
        ValueError: even quadrant blocks would be wider than ``max_columns``.
    """
    light = light_matrix(segno.make(text, error=error, micro=False))
    if len(light[0]) <= max_columns:
        lines = half_block_lines(light)
    else:
        lines = quadrant_lines(light)
        if len(lines[0]) > max_columns:
            raise ValueError(f"a QR code of {len(light[0])} modules is wider than "
                             f"{max_columns} columns even at 2 modules per column")
    return [f"{_ANSI_ON}{line}{_ANSI_OFF}" for line in lines] if ansi else lines
