"""A small reader of CBOR diagnostic notation (RFC 8949 §8, RFC 8610 Appendix G), for tests.

Only what the PSA token vectors use, and refused loudly otherwise: unsigned and negative
integers (decimal or 0x hex), text strings, ``h'…'`` byte strings (whitespace inside
allowed), arrays, maps, tags ``N(…)``, ``true``/``false``/``null``, and ``/ comments /``.
Returns the Python values that ``cbor2`` uses (``CBORTag`` for tags), so a parsed
document can be compared with, or encoded by, ``cbor2``. Not shipped: a test helper.
"""

from __future__ import annotations

import json
import re
from typing import Any

import cbor2

__all__ = ["DiagError", "loads_diag"]


class DiagError(ValueError):
    """The text is not diagnostic notation this reader understands."""


_INT = re.compile(r"-?(0x[0-9a-fA-F]+|[0-9]+)")
_WORDS = {"true": True, "false": False, "null": None}
_MAX_DEPTH = 64


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, what: str) -> DiagError:
        line = self.text.count("\n", 0, self.pos) + 1
        return DiagError(f"line {line}: {what}")

    def skip(self) -> None:
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char.isspace():
                self.pos += 1
            elif char == "/":
                end = self.text.find("/", self.pos + 1)
                if end < 0:
                    raise self.error("unterminated / comment /")
                self.pos = end + 1
            elif char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end + 1
            else:
                return

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.error(f"expected {char!r}, found {self.peek()!r}")
        self.pos += 1

    def value(self, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise self.error("nested too deeply")
        char = self.peek()
        if char == "[":
            return self.sequence("[", "]", depth)
        if char == "{":
            return self.mapping(depth)
        if char == '"':
            return self.text_string()
        if char == "h" and self.text.startswith("h'", self.pos):
            return self.hex_string()
        for word, result in _WORDS.items():
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return result
        match = _INT.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            number = int(match.group(0), 0)
            if self.peek() == "(":
                if number < 0:
                    raise self.error("a tag number cannot be negative")
                self.pos += 1
                inner = self.value(depth + 1)
                self.expect(")")
                return cbor2.CBORTag(number, inner)
            if self.pos < len(self.text) and self.text[self.pos] in ".eE":
                raise self.error("floating-point numbers are not supported")
            return number
        raise self.error(f"unexpected {char!r}" if char else "unexpected end of text")

    def sequence(self, open_: str, close: str, depth: int) -> list[Any]:
        self.expect(open_)
        if self.peek() == "_":
            raise self.error("indefinite-length items are not supported")
        items: list[Any] = []
        while self.peek() != close:
            if items:
                self.expect(",")
            items.append(self.value(depth + 1))
        self.pos += 1
        return items

    def mapping(self, depth: int) -> dict[Any, Any]:
        self.expect("{")
        if self.peek() == "_":
            raise self.error("indefinite-length items are not supported")
        result: dict[Any, Any] = {}
        first = True
        while self.peek() != "}":
            if not first:
                self.expect(",")
            first = False
            key = self.value(depth + 1)
            self.expect(":")
            if key in result:
                raise self.error(f"duplicate map key {key!r}")
            result[key] = self.value(depth + 1)
        self.pos += 1
        return result

    def text_string(self) -> str:
        # Diagnostic-notation text strings use JSON's escapes (RFC 8949 §8).
        match = re.compile(r'"(?:[^"\\\n]|\\.)*"').match(self.text, self.pos)
        if not match:
            raise self.error("unterminated text string")
        self.pos = match.end()
        value: str = json.loads(match.group(0))
        return value

    def hex_string(self) -> bytes:
        end = self.text.find("'", self.pos + 2)
        if end < 0:
            raise self.error("unterminated h'…' byte string")
        digits = "".join(self.text[self.pos + 2 : end].split())
        self.pos = end + 1
        try:
            return bytes.fromhex(digits)
        except ValueError:
            raise self.error("h'…' holds something other than pairs of hex digits") from None


def loads_diag(text: str) -> Any:
    """Parse one data item in diagnostic notation. Raises :class:`DiagError`."""
    reader = _Reader(text)
    result = reader.value()
    if reader.peek():
        raise reader.error("trailing text after the data item")
    return result
