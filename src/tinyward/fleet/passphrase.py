"""Which new passphrases a fleet accepts, and why one is refused.

The rule (stated in docs/fleet-pki.md too). A new passphrase is refused when:

1. it has fewer than :data:`MIN_CHARS` (14) characters, or fewer than
   :data:`MIN_DISTINCT` (6) different characters;
2. it is one short unit repeated (``abcabcabc…``) or a run along the alphabet, the digits
   or a keyboard row (``qwertyuiop``, ``1234567890…``), forwards or backwards;
3. once lower-cased and stripped of digits, spaces and punctuation (with leetspeak such as
   ``@``→a, ``0``→o undone, and as written), what is left is empty, a run or repeat as in
   2, or (a repetition of) a word of the built-in list of common passwords below:
   ``password1234``, ``P@ssw0rd!2024!!``, ``dragondragon99`` and ``qwertyuiop12345``
   are all refused.

The list is small on purpose (the most common base words of leaked-password lists); it
catches the guesses an attacker tries first, it does not measure entropy. Long random
passphrases or several random words are the real defence: scrypt makes each guess cost
128 MiB and about half a second, it cannot make a guessable passphrase safe.
"""

from __future__ import annotations

import unicodedata

from tinyward.fleet.errors import WeakPassphrase

MIN_CHARS = 14
MIN_DISTINCT = 6

_COMMON = frozenset([
    "password", "passwort", "passw0rd", "pass", "admin", "administrator", "root", "toor",
    "login", "welcome", "letmein", "qwerty", "qwertz", "azerty", "asdf", "asdfgh", "zxcvbn",
    "iloveyou", "love", "monkey", "dragon", "master", "shadow", "sunshine", "princess",
    "football", "baseball", "soccer", "hockey", "superman", "batman", "trustno", "michael",
    "jennifer", "jordan", "hunter", "ranger", "buster", "thomas", "robert", "daniel", "charlie",
    "andrew", "secret", "changeme", "default", "guest", "test", "tester", "testing", "user",
    "hello", "hellothere", "whatever", "freedom", "starwars", "pokemon", "computer", "internet",
    "cookie", "summer", "winter", "spring", "autumn", "flower", "tinyward", "fleet",
    "passphrase", "mypassword", "abc", "abcd", "abcdef", "abcdefg"
])
_RUNS = (
    "abcdefghijklmnopqrstuvwxyz",
    "0123456789012345678901234567890",
    "qwertyuiopasdfghjklzxcvbnm",
    "qwertzuiopasdfghjklyxcvbnm",
    "azertyuiopqsdfghjklmwxcvbn",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
)


def _is_repetition(text: str) -> bool:
    """``text`` is a shorter unit repeated (``abab…``, ``xxxx``)."""
    return any(
        len(text) % size == 0 and text == text[:size] * (len(text) // size)
        for size in range(1, len(text) // 2 + 1)
    )


def _is_run(text: str) -> bool:
    for run in _RUNS:
        for sequence in (run, run[::-1]):
            if text in sequence * 2:
                return True
    return False


_LEET = str.maketrans({"@": "a", "4": "a", "0": "o", "1": "i", "!": "i", "3": "e",
                       "$": "s", "5": "s", "7": "t", "+": "t"})


def _cores(text: str) -> tuple[str, str]:
    """The letters of ``text``, lower-cased: as written, and with leetspeak undone."""
    folded = text.casefold()
    # Undo leetspeak only inside the word: the digits and symbols around it stay junk.
    inner = folded.strip("".join(ch for ch in set(folded) if not ch.isalpha()))
    return (
        "".join(ch for ch in folded if ch.isalpha()),
        "".join(ch for ch in inner.translate(_LEET) if ch.isalpha()),
    )


def _is_common(core: str) -> bool:
    if not core:
        return True
    return any(
        len(core) % len(word) == 0 and core == word * (len(core) // len(word))
        for word in _COMMON
    )


def weakness(text: str) -> str | None:
    """Why ``text`` is refused as a new passphrase, or None if it is accepted.

    Judged in its NFKC form: full-width or other compatibility spellings of a weak
    passphrase (``password123456`` in full-width letters) are the same text to a guesser."""
    text = unicodedata.normalize("NFKC", text)
    if len(text) < MIN_CHARS:
        return f"it has {len(text)} characters; at least {MIN_CHARS} are required"
    if len(set(text)) < MIN_DISTINCT:
        return f"it uses fewer than {MIN_DISTINCT} different characters"
    folded = text.casefold()
    if _is_repetition(folded):
        return "it is a short piece repeated"
    if _is_run(folded.replace(" ", "")):
        return "it is a run along the alphabet, the digits or a keyboard row"
    for core in _cores(text):
        if _is_common(core):
            return "it is a common password with digits or symbols around it"
        if _is_run(core) or _is_repetition(core):
            return "its letters are a keyboard or alphabet run with digits or symbols added"
    return None


def check_new_passphrase(text: str, role: str) -> None:
    """Refuse a weak new passphrase for ``role`` (``CA``, ``update``, ``server``).

    Raises:
        WeakPassphrase: the message says which rule it broke.
    """
    reason = weakness(text)
    if reason is not None:
        raise WeakPassphrase(
            f"the new {role} passphrase is too weak: {reason} (rule: at least {MIN_CHARS} "
            f"characters, {MIN_DISTINCT} different ones, not a common password, run or repeat)"
        )
