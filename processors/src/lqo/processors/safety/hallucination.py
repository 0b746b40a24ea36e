"""The ``hallucination`` processor: how likely an answer says things its context does not support.

No model: the answer's claims are compared with what the model was given (system and user
messages, earlier turns, tool results, retrieved documents on the span). Signals:

* ``unsupported_entities`` — names (capitalized words), numbers, dates and quoted strings in
  the answer that appear nowhere in the context;
* ``unsupported_terms`` — the share of the answer's content words (stemmed, no stop words)
  absent from the context;
* ``numeric_contradiction`` — a number next to a context word that the context pairs with a
  different number;
* ``self_contradiction`` — the answer asserts and negates the same statement;
* ``unsupported_specificity`` — many specific details, none of them grounded;
* claim volume — more content words, more room to be wrong (saturating at a dozen);
* ``hedging`` raises the score a little; a ``refusal`` ("I don't know") lowers it: declining is
  not making things up.

The signals are combined by a fixed logistic function into ``lqo.hallucination.score`` (0..1);
``lqo.hallucination.reasons`` lists the signals that fired, with counts, never the text. The
weights were set by hand on reasoning about the signals, not fitted to the benchmark set
(``bench/detect_quality.py`` reports AUROC on HaluEval next to a length-only baseline).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

from pydantic import Field

from lqo.collector.components import ComponentContext, Factory
from lqo.collector.telemetry import watch_cache
from lqo.processors.safety.content import (
    DOCUMENT_KEYS,
    INPUT_MESSAGES,
    OUTPUT_MESSAGES,
    SYSTEM_INSTRUCTIONS,
    TOOL_RESULT,
    conversation,
)
from lqo.processors.safety.evaluation import CheckConfig, CheckProcessor, TextCache, Verdict
from lqo.processors.safety.folding import Folded

STOP_WORDS = frozenset(["a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself", "yourselves", "yes", "one", "ones", "also", "well", "known", "named", "called", "first", "started", "based", "answer", "question", "following", "however"])
# What a chat answer says around its claims, not a claim: "Sure.", "Certainly! …", "Happy to help."
# ("Sure" as a sentence's first word was an unsupported name, and a one-word answer all
# unsupported terms: flagged.)
STOP_WORDS |= frozenset(["sure", "certainly", "absolutely", "definitely", "course", "ok", "okay", "alright", "great",
                         "thanks", "thank", "hello", "hi", "hey", "sorry", "please", "welcome", "glad", "happy",
                         "help", "let", "indeed"])
# Words of at most 64 characters (a longer run, an id or an encoded blob, is taken in pieces):
# their stems are cached, and distinct 200k-character "words" would keep GBs alive.
_WORD = re.compile(r"[^\W_]{1,64}(?:['’][^\W_]{1,64})?", re.UNICODE)
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?(?![\w])")
_QUOTED = re.compile(r"[\"“”]([^\"“”]{2,80})[\"“”]")
_CAPITALIZED = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:of|the|de|van|von|and|&)?\s*[A-Z][\w'’-]*)*")
_HEDGES = Folded(r"\b(?:i think|i believe|probably|possibly|perhaps|maybe|might be|may be|it seems|likely|"
                     r"not sure|i guess|as far as i know|if i recall|approximately|around|roughly)\b")
_REFUSAL = Folded(r"\b(?:i (?:do not|don't|cannot|can't|am unable to) (?:know|answer|find|determine|say)|"
                      r"(?:not|no) (?:enough|sufficient) information|unable to (?:answer|determine)|"
                      r"the (?:context|text|passage|document)s? (?:does|do) not (?:say|mention|state|contain))\b")
_NEGATION_WORDS = frozenset(["not", "no", "never", "neither", "nor", "isn't", "wasn't", "aren't", "weren't", "doesn't",
                             "didn't"])
_NEGATION = Folded(r"\b(?:" + "|".join(sorted(_NEGATION_WORDS)) + r"|n't)\b")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_CACHE_SIZE = 2048


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A crude suffix-stripping stem: enough to match plurals and tenses across texts. Cached:
    words repeat across answers, and this was ~40% of the check's time."""
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    for suffix in ("ingly", "edly", "ing", "ies", "ied", "es", "ed", "ly", "s"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix):
            return w[: -len(suffix)] + ("y" if suffix in ("ies", "ied") else "")
    return w


watch_cache(stem, "hallucination.stems", lambda f: ((info := f.cache_info()).currsize, info.maxsize or 0))


def _number_value(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


@dataclass
class Grounding:
    """The context's words (stems), lowercased text and numbers, built once per distinct text."""

    stems: frozenset[str]
    text: str
    numbers: frozenset[float]
    number_neighbours: dict[str, frozenset[float]]

    @classmethod
    def of(cls, text: str) -> Grounding:
        numbers, neighbours = _numbers_with_neighbours(text)
        return cls(frozenset(stem(w) for w in _WORD.findall(text)), text.lower(), frozenset(numbers), neighbours)

    @classmethod
    def merge(cls, parts: list[Grounding]) -> Grounding:
        """The grounding of several texts from each one's own (a system prompt's is built once,
        not once per user message it comes with)."""
        if len(parts) == 1:
            return parts[0]
        near = dict(parts[0].number_neighbours)
        for part in parts[1:]:
            for word, values in part.number_neighbours.items():
                near[word] = near[word] | values if word in near else values
        return cls(frozenset().union(*(p.stems for p in parts)), "\n".join(p.text for p in parts),
                   frozenset().union(*(p.numbers for p in parts)), near)


def _numbers_with_neighbours(text: str) -> tuple[list[float], dict[str, frozenset[float]]]:
    """Numbers in ``text``, and per content word the numbers within three words of it."""
    tokens = _WORD.findall(text.replace(",", ""))
    numbers: list[float] = []
    near: dict[str, set[float]] = {}
    for i, token in enumerate(tokens):
        value = _number_value(token) if token[0].isdigit() else None
        if value is None:
            continue
        numbers.append(value)
        for other in tokens[max(0, i - 3): i + 4]:
            if not other[0].isdigit() and other.lower() not in STOP_WORDS:
                near.setdefault(stem(other), set()).add(value)
    return numbers, {k: frozenset(v) for k, v in near.items()}


@dataclass
class Signals:
    unsupported_entities: int = 0
    entities: int = 0
    unsupported_terms: float = 0.0
    terms: int = 0
    numeric_contradiction: int = 0
    self_contradiction: int = 0
    hedging: int = 0
    refusal: bool = False

    def score(self) -> float:
        if self.refusal and self.unsupported_entities == 0:
            return 0.05
        # More claims, more room to be wrong: the volume term saturates at a dozen content words,
        # so a long answer that is all grounded stays well under the default threshold (0.7).
        z = -3.0 + 0.8 * math.log1p(min(self.terms, 12))
        z += 2.5 * self.unsupported_terms
        z += 1.0 * min(self.unsupported_entities, 3)
        if self.entities >= 3 and self.unsupported_entities == self.entities:
            z += 0.6  # not one specific detail is grounded
        z += 1.5 * min(self.numeric_contradiction, 2)
        z += 1.2 * min(self.self_contradiction, 1)
        z += 0.4 * min(self.hedging, 2)
        if self.refusal:
            z -= 1.5
        return 1.0 / (1.0 + math.exp(-z))

    def reasons(self) -> list[str]:
        out = []
        if self.unsupported_entities:
            out.append(f"unsupported_entities={self.unsupported_entities}/{self.entities}")
        if self.terms and self.unsupported_terms >= 0.34:
            out.append(f"unsupported_terms={self.unsupported_terms:.2f}")
        if self.entities >= 3 and self.unsupported_entities == self.entities:
            out.append("unsupported_specificity")
        if self.numeric_contradiction:
            out.append(f"numeric_contradiction={self.numeric_contradiction}")
        if self.self_contradiction:
            out.append("self_contradiction")
        if self.hedging:
            out.append("hedging")
        if self.refusal:
            out.append("refusal")
        return out


def signals(answer: str, grounding: Grounding) -> Signals:
    s = Signals()
    if _REFUSAL.search(answer):
        s.refusal = True
    s.hedging = _HEDGES.count(answer)
    claims = _claims(answer)
    s.entities = len(claims)
    s.unsupported_entities = sum(1 for c in claims if not _supported_claim(c, grounding))
    words = [w for w in _WORD.findall(answer) if w.lower() not in STOP_WORDS and not w[0].isdigit()]
    stems = {stem(w) for w in words}
    s.terms = len(stems)
    if stems:
        s.unsupported_terms = sum(1 for st in stems if st not in grounding.stems) / len(stems)
    s.numeric_contradiction = _numeric_contradictions(answer, grounding)
    s.self_contradiction = _self_contradictions(answer)
    return s


def _claims(answer: str) -> list[str]:
    """Specific details: quoted strings, numbers, and capitalized names (a sentence's first word
    only when it is not a stop word)."""
    claims = [m.group(1).strip() for m in _QUOTED.finditer(answer)]
    claims += [m.group(0) for m in _NUMBER.finditer(answer)]
    for m in _CAPITALIZED.finditer(answer):
        name = m.group(0).strip()
        first = name.split()[0].lower()
        if first in STOP_WORDS and " " not in name:
            continue
        claims.append(name)
    return list(dict.fromkeys(claims))


def _supported_claim(claim: str, grounding: Grounding) -> bool:
    value = _number_value(claim) if claim[:1].isdigit() or claim[:1] in "+-" else None
    if value is not None:
        return value in grounding.numbers or claim.lower() in grounding.text
    if claim.lower() in grounding.text:
        return True
    # A multi-word name is supported when each of its words is (names are often reordered or
    # abbreviated: "President Nixon" for "Richard Nixon, the President").
    words = [w for w in _WORD.findall(claim) if w.lower() not in STOP_WORDS]
    return bool(words) and all(stem(w) in grounding.stems for w in words)


def _numeric_contradictions(answer: str, grounding: Grounding) -> int:
    """Numbers of the answer absent from the context while a word next to them is, in the
    context, next to another number ("330 metres" there, "300 metres" here)."""
    if not grounding.number_neighbours:
        return 0
    tokens = _WORD.findall(answer.replace(",", ""))
    found = 0
    for i, token in enumerate(tokens):
        value = _number_value(token) if token[0].isdigit() else None
        if value is None or value in grounding.numbers:
            continue
        near = (stem(t) for t in tokens[max(0, i - 3): i + 4] if not t[0].isdigit() and t.lower() not in STOP_WORDS)
        if any(grounding.number_neighbours.get(w) for w in near):
            found += 1
    return found


def _self_contradictions(answer: str) -> int:
    """Two sentences of the answer with the same content words, one negated and one not."""
    if not _NEGATION.search(answer):
        return 0  # nothing negated, nothing contradicted
    seen: dict[frozenset[str], bool] = {}
    found = 0
    for sentence in _SENTENCE.split(answer):
        words = frozenset(stem(w) for w in _WORD.findall(sentence)
                          if (lower := w.lower()) not in STOP_WORDS and lower not in _NEGATION_WORDS)
        if len(words) < 2:
            continue
        negated = _NEGATION.search(sentence)
        if words in seen and seen[words] != negated:
            found += 1
        seen.setdefault(words, negated)
    return found


class HallucinationConfig(CheckConfig):
    threshold: float = Field(0.7, ge=0.0, le=1.0, description="flag hallucination at this score")
    min_answer_chars: int = Field(1, ge=1, description="answers shorter than this are not scored")


class HallucinationProcessor(CheckProcessor):
    check, flag, prefix = "hallucination", "hallucination", "hallucination"
    read_keys = (INPUT_MESSAGES, OUTPUT_MESSAGES, SYSTEM_INSTRUCTIONS, TOOL_RESULT, *DOCUMENT_KEYS)

    def __init__(self, config: HallucinationConfig, ctx: ComponentContext | None = None) -> None:
        super().__init__(config)
        self.config: HallucinationConfig = config
        self._groundings: TextCache[Grounding] = TextCache(_CACHE_SIZE, name="hallucination.groundings")

    def _grounding(self, texts: list[str]) -> Grounding:
        return Grounding.merge([self._groundings.get(text, lambda t=text: Grounding.of(t)) for text in texts])

    def evaluate(self, spans: list[dict[str, str]]) -> list[Verdict | None]:
        out: list[Verdict | None] = []
        for attrs in spans:
            conv = conversation(attrs)
            answer = "\n".join(conv.output).strip()
            if len(answer) < self.config.min_answer_chars or not conv.grounding:
                out.append(None)  # nothing said, or nothing to check it against
                continue
            found = signals(answer, self._grounding(conv.grounding))
            score = round(found.score(), 4)
            reasons = ",".join(found.reasons())
            flagged = score >= self.config.threshold
            attributes = {"lqo.hallucination.score": f"{score:g}", "lqo.hallucination.reasons": reasons}
            out.append(Verdict(attributes, score, "unsupported" if flagged else "supported", reasons, flagged))
        return out


FACTORY = Factory("hallucination", HallucinationConfig, lambda config, ctx: HallucinationProcessor(config, ctx))
