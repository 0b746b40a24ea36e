"""Case-insensitive patterns, searched fast.

``re`` under IGNORECASE is slow on the alternations of words the checks look for (a hedge list,
street words, name cues): it folds case at every position it tries (the street words took ~100 µs
per 160-character text, hedges ~18 µs per answer). ASCII text is lowered once instead (one
cached copy per text, shared by every pattern) and searched case-sensitively with the pattern
written in lower case, which for ASCII text is the same test. Other text, where case folding
reaches beyond ASCII ("ſ" is "s", the Kelvin sign "k"), gets the pattern under IGNORECASE.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_last: tuple[str, str] = ("", "")  # the last text lowered, shared by every pattern of the process


def lowered(text: str) -> str:
    """``text.lower()``, remembered for the last text asked about (each check asks several
    patterns about one text in a row)."""
    global _last
    last = _last
    if last[0] is not text:
        last = _last = (text, text.lower())
    return last[1]


def _folds_into_ascii(char: str) -> bool:
    """Does IGNORECASE let this non-ASCII character match an ASCII one ("ſ" and "s", "ı" and "i")?"""
    return any(len(c) == 1 and c.isascii() for c in (char.upper(), char.lower(), char.casefold()))


class Folded:
    """A regular expression written in lower case, matched case-insensitively. (A pattern with a
    character that IGNORECASE matches to an ASCII one, such as "ſ", always takes the slow path.)"""

    __slots__ = ("anycase", "lower")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        bare = re.sub(r"\\.", "", pattern)  # escapes such as \W keep their case
        if bare != bare.lower():
            raise ValueError(f"a folded pattern is written in lower case: {pattern!r}")
        folds = any(not c.isascii() and _folds_into_ascii(c) for c in bare)
        self.lower = None if folds else re.compile(pattern, flags)
        self.anycase = re.compile(pattern, flags | re.IGNORECASE)

    def fast(self, text: str) -> bool:
        """Is ``text`` searched lowered (positions are the same as in ``text``)?"""
        return self.lower is not None and text.isascii()

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        """The matches; on the lowered text where :meth:`fast`, so ``group()`` is lower case there."""
        if self.fast(text):
            assert self.lower is not None
            return self.lower.finditer(lowered(text))
        return self.anycase.finditer(text)

    def search(self, text: str) -> bool:
        return next(self.finditer(text), None) is not None

    def count(self, text: str) -> int:
        """How many non-overlapping matches (``len(findall)``)."""
        return sum(1 for _ in self.finditer(text))
