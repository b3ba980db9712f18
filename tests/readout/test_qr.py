"""The readout's QR code fits an 80-column terminal and still decodes.

Each rendering is read back two ways: module for module against segno's own matrix (so
no module is lost or moved), and as a picture — the characters rasterised as a terminal
draws them (a cell twice as tall as wide, light ink on a dark background) — decoded by
zxing-cpp, a real QR reader, to the very text.
"""

from __future__ import annotations

import base64
import os

import numpy as np
import pytest
import segno

from tinyward.readout.offline import OFFLINE_REPORT_SIZE, TEXT_PREFIX
from tinyward.readout.qr import (
    HALF_BLOCKS,
    QUADRANTS,
    QUIET_ZONE,
    half_block_lines,
    light_matrix,
    quadrant_lines,
    terminal_lines,
)

zxingcpp = pytest.importorskip("zxingcpp", reason="zxing-cpp (dev extra) decodes the QR code")

CELL_W, CELL_H = 8, 16  # pixels of one character cell: twice as tall as wide


def _report_text(seed: int) -> str:
    data = np.random.default_rng(seed).bytes(OFFLINE_REPORT_SIZE)  # like a signed report
    return TEXT_PREFIX + base64.urlsafe_b64encode(data).decode().rstrip("=")


def _is_quadrants(lines: list[str]) -> bool:
    # Two lines per 2 module rows either way; quadrants also halve the columns, so the
    # code is (nearly) square in characters, while half blocks are twice as wide as tall.
    return len(lines[0]) < 1.5 * len(lines)


def _modules_of(lines: list[str]) -> list[list[bool]]:
    """Characters back to light modules (the inverse of the renderings)."""
    quadrant = {char: bits for bits, char in enumerate(QUADRANTS)}
    half = {char: pair for pair, char in HALF_BLOCKS.items()}
    if not _is_quadrants(lines):
        rows: list[list[bool]] = []
        for line in lines:
            rows.append([half[c][0] for c in line])
            rows.append([half[c][1] for c in line])
        return rows
    rows = []
    for line in lines:
        bits = [quadrant[c] for c in line]
        rows.append([bool(b & m) for b in bits for m in (8, 4)])
        rows.append([bool(b & m) for b in bits for m in (2, 1)])
    return rows


def _picture(lines: list[str]) -> np.ndarray:
    """What a terminal shows: white ink on black, each cell CELL_W x CELL_H pixels."""
    modules = np.array(_modules_of(lines), dtype=bool)
    per_char_x = 2 if _is_quadrants(lines) else 1
    module_w, module_h = CELL_W // per_char_x, CELL_H // 2
    image = np.kron(modules, np.ones((module_h, module_w), dtype=bool))
    return np.where(image, 255, 0).astype(np.uint8)


def _decoded(lines: list[str]) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(_picture(lines))]


@pytest.mark.parametrize("seed", range(5))
def test_signed_report_fits_80_columns_and_decodes(seed: int) -> None:
    text = _report_text(seed)
    lines = terminal_lines(text)
    assert max(len(line) for line in lines) <= 80
    want = light_matrix(segno.make(text, error="l", micro=False))
    got = _modules_of(lines)
    assert [row[: len(want[0])] for row in got[: len(want)]] == want  # module for module
    assert all(all(row[len(want[0]):]) for row in got) and all(all(r) for r in got[len(want):])
    assert _decoded(lines) == [text]


def test_quiet_zone_is_kept() -> None:
    lines = quadrant_lines(light_matrix(segno.make(_report_text(0), error="l")))
    modules = _modules_of(lines)
    for row in modules[:QUIET_ZONE] + modules[-QUIET_ZONE:]:
        assert all(row)
    for row in modules:
        assert all(row[:QUIET_ZONE]) and all(row[-QUIET_ZONE:])


def test_the_old_rendering_was_too_wide_for_80_columns() -> None:
    # The reason for quadrant blocks: half blocks (segno's compact) need 97 columns here.
    qr = segno.make(_report_text(0), error="l")
    assert len(half_block_lines(light_matrix(qr))[0]) > 80
    assert _decoded(half_block_lines(light_matrix(qr))) == [_report_text(0)]  # the test reads


def test_short_text_keeps_square_half_blocks() -> None:
    text = "otpauth://totp/tinyward:device?secret=JBSWY3DPEHPK3PXP&issuer=tinyward"
    lines = terminal_lines(text, error="m")
    assert all(c in HALF_BLOCKS.values() for line in lines for c in line)
    assert _decoded(lines) == [text]


def test_a_corrupted_rendering_is_not_read_as_the_text() -> None:
    # The decoder check can fail: blank a third of the code and it no longer decodes.
    lines = terminal_lines(_report_text(1))
    damaged = [line if i % 3 else " " * len(line) for i, line in enumerate(lines)]
    assert _report_text(1) not in _decoded(damaged)


def test_ansi_colours_wrap_each_line() -> None:
    lines = terminal_lines(_report_text(2), ansi=True)
    assert all(line.startswith("\x1b[97;40m") and line.endswith("\x1b[0m") for line in lines)
    assert os.linesep not in "".join(lines)
