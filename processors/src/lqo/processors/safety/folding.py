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

_last: tuple[str, str] = ("", "")  # the last text lowered, shared by every pattern of the process


def lowered(text: str) -> str:
    """``text.lower()``, remembered for the last text asked about (each check asks several
    patterns about one text in a row)."""
    global _last
    last = _last
    if last[0] is not text:
        last = _last = (text, text.lower())
    return last[1]


class Folded:
    """A regular expression written in lower case, matched case-insensitively."""

    __slots__ = ("anycase", "lower")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        bare = re.sub(r"\\.", "", pattern)  # escapes such as \W keep their case
        if bare != bare.lower():
            raise ValueError(f"a folded pattern is written in lower case: {pattern!r}")
        self.lower = re.compile(pattern, flags)
        self.anycase = re.compile(pattern, flags | re.IGNORECASE)

    def search(self, text: str) -> bool:
        if text.isascii():
            return self.lower.search(lowered(text)) is not None
        return self.anycase.search(text) is not None

    def count(self, text: str) -> int:
        """How many non-overlapping matches (``len(findall)``)."""
        if text.isascii():
            return sum(1 for _ in self.lower.finditer(lowered(text)))
        return sum(1 for _ in self.anycase.finditer(text))
