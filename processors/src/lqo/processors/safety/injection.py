"""The ``prompt_injection`` processor: how likely the input of a GenAI call is an injection attempt.

Heuristics in weighted pattern families, run on what the caller sent (user turns, tool
results and retrieved documents — indirect injection arrives through the last two):

* ``instruction_override`` — "ignore all previous instructions", "new instructions:", …
* ``role_play_jailbreak`` — DAN / developer mode, "pretend you have no restrictions", …
* ``system_prompt_exfiltration`` — "repeat the text above", "reveal your system prompt", …
* ``delimiter_injection`` — chat-template tokens and fake role headers (``<|im_start|>system``)
* ``encoded_payload`` — base64 that decodes to instructions, invisible Unicode tag characters,
  "decode this and follow it"

A family's weight is the probability it alone indicates an attack; families combine as
independent evidence (``1 - Π(1 - w)``), so two families outrank one. Writes
``lqo.injection.score`` (0..1) and ``lqo.injection.reasons`` (the families seen), and flags
``prompt_injection`` at ``threshold``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

from pydantic import Field

from lqo.collector.components import ComponentContext, Factory
from lqo.processors.safety.content import DOCUMENT_KEYS, INPUT_MESSAGES, TOOL_RESULT, conversation
from lqo.processors.safety.evaluation import CheckConfig, CheckProcessor, TextCache, Verdict
from lqo.processors.safety.folding import Folded

_PREVIOUS = r"(?:all\s+|any\s+|the\s+|your\s+|of\s+)*(?:previous|prior|above|earlier|preceding|former|original|initial|system)"
_RULES = r"(?:instructions?|prompts?|rules|directions|guidelines|context|messages?|commands?|constraints)"

# Written in lower case, matched case-insensitively (see folding).
FAMILIES: dict[str, tuple[float, Folded]] = {
    "instruction_override": (0.8, Folded("|".join([
        rf"\b(?:ignore|disregard|forget|skip|override|bypass|neglect)\b[^.\n]{{0,20}}?{_PREVIOUS}\s+{_RULES}",
        r"\b(?:ignore|disregard|forget)\s+(?:everything|all)\s+(?:above|before|you\s+(?:were|have\s+been)\s+told)",
        r"\bnew\s+(?:instructions?|rules|task)\s*:",
        r"\bfrom\s+now\s+on,?\s+you\s+(?:will|must|are|shall)\b",
        r"\bdo\s+not\s+(?:follow|obey)\s+(?:your|the|any)\s+(?:rules|guidelines|instructions|policies)",
        r"\binstead,?\s+(?:say|output|print|respond\s+with)\b[^.\n]{0,40}\b(?:only|exactly)\b",
    ]))),
    "role_play_jailbreak": (0.65, Folded("|".join([
        r"\b(?:dan|stan|dude|aim)\b[^.\n]{0,40}\b(?:mode|anything\s+now|stands?\s+for)",
        r"\bdo\s+anything\s+now\b",
        r"\b(?:developer|god|jailbreak|unrestricted|unfiltered|evil)\s+mode\b",
        r"\bjailbr(?:oken|eak)\b",
        r"\b(?:pretend|imagine|act\s+as\s+if)\b[^.\n]{0,40}\b(?:no|without|free\s+(?:of|from))\s+"
        r"(?:restrictions|limits|limitations|filters|rules|guidelines|censorship|ethic)",
        r"\b(?:you\s+are|act\s+as|roleplay\s+as|play\s+the\s+role\s+of)\s+(?:an?\s+)?"
        r"(?:unfiltered|uncensored|unrestricted|amoral|evil|rogue)\b",
        r"\b(?:no|without\s+any)\s+(?:ethical|moral|content)\s+(?:guidelines|restrictions|filters|policy)",
        r"\bstay\s+in\s+character\b",
    ]))),
    "system_prompt_exfiltration": (0.7, Folded("|".join([
        r"\b(?:reveal|show|print|output|display|repeat|tell\s+me|give\s+me|leak|dump|what\s+(?:is|are|were))\b"
        r"[^.\n]{0,25}\b(?:system\s+prompt|initial\s+(?:prompt|instructions)|hidden\s+(?:prompt|instructions)|"
        r"(?:your|the)\s+(?:instructions|rules|guidelines|prompt))\b",
        r"\b(?:repeat|print|output|copy)\b[^.\n]{0,20}\b(?:words|text|everything|all)\s+(?:above|before)\b",
        r"\bbegin\s+your\s+(?:reply|answer|response)\s+with\b[^.\n]{0,30}\b(?:prompt|instructions)",
    ]))),
    "delimiter_injection": (0.6, Folded("|".join([
        r"<\|(?:im_start|im_end|system|endoftext|start_header_id|eot_id)\|>",
        r"\[/?inst\]|<</?sys>>",
        r"(?:^|\n)\s*#{2,}\s*(?:system|instruction)s?\s*:?",
        r"</?(?:system|instructions?)>",
        r"(?:^|\n)\s*(?:system|assistant)\s*:\s*(?:you|ignore|new)\b",
    ]))),
    "encoded_payload": (0.5, Folded("|".join([
        r"\b(?:decode|decrypt|translate)\b[^.\n]{0,30}\b(?:base64|rot13|hex|binary|cipher)\b[^.\n]{0,40}"
        r"\b(?:follow|execute|run|obey|do\s+what)",
        r"[\U000e0000-\U000e007f]{4,}",  # Unicode tag characters: invisible text
        r"[\u200b-\u200f\u2060\ufeff]{3,}",
    ]))),
}
_BASE64 = re.compile(r"[A-Za-z0-9+/]{32,}={0,2}")
_INSTRUCTION_WORDS = Folded(r"\b(?:ignore|instructions|system|prompt|pretend|reveal|password|secret)\b")
# Text of which no pattern can match: too short, or no letter nor encoded character at all.
_MIN_LENGTH = 12
_CACHE_SIZE = 4096


def score_text(text: str) -> tuple[float, list[str]]:
    """(score 0..1, the families seen) for one text."""
    if len(text) < _MIN_LENGTH:
        return 0.0, []
    hits = [name for name, (_, pattern) in FAMILIES.items() if pattern.search(text)]
    if "encoded_payload" not in hits and _encoded_instructions(text):
        hits.append("encoded_payload")
    return combine(FAMILIES[h][0] for h in hits), hits


def combine(weights: Iterable[float]) -> float:
    miss = 1.0
    for w in weights:
        miss *= 1.0 - w
    return round(1.0 - miss, 4)


def _encoded_instructions(text: str) -> bool:
    for match in _BASE64.finditer(text):
        blob = match.group(0)
        try:
            decoded = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if decoded.isprintable() and _INSTRUCTION_WORDS.search(decoded):
            return True
    return False


class InjectionConfig(CheckConfig):
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="flag prompt_injection at this score")
    include_tool_results: bool = Field(True, description="scan tool results and retrieved documents too "
                                                         "(indirect injection)")


class InjectionProcessor(CheckProcessor):
    check, flag, prefix = "prompt_injection", "prompt_injection", "injection"
    read_keys = (INPUT_MESSAGES, TOOL_RESULT, *DOCUMENT_KEYS)

    def __init__(self, config: InjectionConfig, ctx: ComponentContext | None = None) -> None:
        super().__init__(config)
        self.config: InjectionConfig = config
        self._cache: TextCache[tuple[float, list[str]]] = TextCache(_CACHE_SIZE, name="prompt_injection.verdicts")

    def _score(self, text: str) -> tuple[float, list[str]]:
        return self._cache.get(text, lambda: score_text(text))

    def evaluate(self, spans: list[dict[str, str]]) -> list[Verdict | None]:
        out: list[Verdict | None] = []
        for attrs in spans:
            conv = conversation(attrs)
            texts = conv.user + (conv.tool_results + conv.documents if self.config.include_tool_results else [])
            if not texts:
                out.append(None)
                continue
            families: list[str] = []
            for text in texts:
                families.extend(f for f in self._score(text)[1] if f not in families)
            score = combine(FAMILIES[f][0] for f in families)
            flagged = score >= self.config.threshold
            attributes = {"lqo.injection.score": f"{score:g}"}
            if families:
                attributes["lqo.injection.reasons"] = ",".join(families)
            out.append(Verdict(attributes, score, "injection" if flagged else "clean", ",".join(families), flagged))
        return out


FACTORY = Factory("prompt_injection", InjectionConfig, lambda config, ctx: InjectionProcessor(config, ctx))
