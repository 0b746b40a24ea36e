"""Case-insensitive patterns searched on lowered ASCII text (``safety/folding.py``): the same
answers as the pattern under IGNORECASE, for every such pattern the checks use."""

from __future__ import annotations

import random
import re

import pytest

from lqo.processors.safety import hallucination, injection
from lqo.processors.safety.folding import Folded, lowered
from lqo.processors.safety.pii_engine import recognizer_gates


def _patterns() -> list[Folded]:
    found = [p for gate in recognizer_gates().values() for p in gate.folded]
    found += [pattern for _, pattern in injection.FAMILIES.values()]
    found += [v for module in (hallucination, injection) for v in vars(module).values() if isinstance(v, Folded)]
    return found


def _pieces(pattern: Folded) -> list[str]:
    """Words and characters of the pattern itself, in random case, to build text it may match."""
    words = re.findall(r"[a-z_']+", re.sub(r"\\.", " ", pattern.lower.pattern))
    return [*words, *(w.upper() for w in words), *(w.title() for w in words), " ", " ", "\n", ".", ",", ":", "#",
            "<|", "|>", "<", "</", ">", "##", "[", "]", "/", "0", "7", "x", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"]


def test_every_folded_pattern_answers_as_under_ignorecase_on_ascii_text() -> None:
    rng = random.Random(3)
    patterns = _patterns()
    assert len(patterns) >= 15
    for pattern in patterns:
        pieces = _pieces(pattern)
        held = 0
        for _ in range(600):
            text = "".join(rng.choice(pieces) + rng.choice(["", " ", " "]) for _ in range(rng.randint(1, 12)))
            expected = list(pattern.anycase.finditer(text))
            assert pattern.search(text) == bool(expected), (pattern.lower.pattern, text)
            assert pattern.count(text) == len(expected)
            held += bool(expected)
        assert held, pattern.lower.pattern  # the random text does exercise the pattern


def test_text_beyond_ascii_is_matched_case_insensitively() -> None:
    street = Folded(r"\bstreet\b")
    assert street.search("10 Downing ſtreet")  # "ſ" (long s) folds to "s"; str.lower() keeps it
    assert not street.lower.search(lowered("10 Downing ſtreet"))
    assert street.search("10 DOWNING STREET — Zürich") and street.count("Street, STREET, ſtreet") == 3
    assert not street.search("Straße")


def test_a_pattern_not_in_lower_case_is_refused() -> None:
    with pytest.raises(ValueError, match="lower case"):
        Folded(r"\b(?:DAN|stan)\b")
    assert Folded(r"\W\d\S[\U000e0000-\U000e007f]").search("a 1x\U000e0041")  # escapes keep their case


def test_a_pattern_whose_letters_fold_into_ascii_is_never_searched_lowered() -> None:
    """IGNORECASE matches "ſ" to "s": lowering ASCII text cannot find that, so such a pattern
    (an echoed PII value, say) always takes the case-insensitive path."""
    assert Folded(r"\bſam\b").search("ask Sam") and Folded(r"\bſam\b").count("SAM sam ſam") == 3
    assert not Folded(r"\bſam\b").fast("ask Sam") and Folded(r"straße").fast("ask Sam")
