"""Red-team variant of issue 12, item 8: the weak-passphrase rule in other spellings.

``password123456`` is refused; typed in full-width forms (what an East Asian input method
gives in full-width mode: U+FF50 U+FF41 …) it was accepted, though Unicode
says it is the same text (NFKC) and a guesser tries exactly that. The rule now judges the
NFKC form of a passphrase (the passphrase itself is used as typed).
"""

from __future__ import annotations

import unicodedata

import pytest

from tinyward.fleet.passphrase import weakness


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


@pytest.mark.parametrize("weak", ["password123456", "qwertyuiop12345", "dragondragon99",
                                  "P@ssw0rd!2024!!"])
def test_a_weak_passphrase_in_full_width_forms_is_refused(weak: str) -> None:
    spelt = _fullwidth(weak)
    assert spelt != weak and unicodedata.normalize("NFKC", spelt) == weak
    assert weakness(weak) is not None
    assert weakness(spelt) is not None, spelt


def test_a_strong_passphrase_with_non_ascii_letters_is_still_accepted() -> None:
    assert weakness("Gr\u00fc\u00dfe aus K\u00f6ln, 7 Br\u00fccken") is None
    assert weakness(_fullwidth("trombone velvet quill")) is None
