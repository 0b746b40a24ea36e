"""Where message text lives on a GenAI span, and how the safety checks read and rewrite it.

The checks read the current-semconv attributes (``genai_normalize`` runs first and maps
other producers' shapes): ``gen_ai.input.messages``, ``gen_ai.output.messages``,
``gen_ai.system_instructions``, tool-call arguments/results, and retrieved documents. PII
also rewrites the producers' original content attributes that normalize keeps beside them
(``input.value``, ``llm.input_messages.*``, ``gen_ai.prompt.*``, …) and the GenAI events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lqo.processors.normalize.messages import dumps as _dumps
from lqo.processors.normalize.messages import loads as _loads

INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_RESULT = "gen_ai.tool.call.result"
# Retrieved documents on the span: OpenInference retriever spans and the older semconv shape.
DOCUMENT_KEYS = ("retrieval.documents", "gen_ai.retrieval.documents")

SEMCONV_KEYS = (INPUT_MESSAGES, OUTPUT_MESSAGES, SYSTEM_INSTRUCTIONS, TOOL_ARGUMENTS, TOOL_RESULT)
# Every attribute that can hold message text, in any producer's shape.
CONTENT_KEYS = frozenset({
    *SEMCONV_KEYS, "gen_ai.prompt", "gen_ai.completion", "input.value", "output.value",
    "gen_ai.content.prompt", "gen_ai.content.completion", "gen_ai.request.prompt", "gen_ai.response.text",
    "llm.prompts", "traceloop.entity.input", "traceloop.entity.output",
})
CONTENT_PREFIXES = ("gen_ai.prompt.", "gen_ai.completion.", "llm.input_messages.", "llm.output_messages.",
                    "llm.prompts.", "retrieval.documents.", "gen_ai.retrieval.documents")
# JSON object keys whose string values are structure, never free text (not scanned for PII).
STRUCTURAL_KEYS = frozenset({"role", "type", "finish_reason", "id", "name", "mime_type", "modality",
                             "tool_call_id", "call_id", "index", "model"})


def is_content_key(key: str) -> bool:
    return key in CONTENT_KEYS or key.startswith(CONTENT_PREFIXES)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else _dumps(value)


@dataclass
class Conversation:
    """The text of one GenAI call, by where it came from."""

    system: list[str] = field(default_factory=list)
    user: list[str] = field(default_factory=list)
    assistant_history: list[str] = field(default_factory=list)
    tool_results: list[str] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> list[str]:
        """What the caller sent (the injection check's subject): user turns and tool results."""
        return self.user + self.tool_results

    @property
    def grounding(self) -> list[str]:
        """What an answer may rely on: everything the model was given."""
        return self.system + self.user + self.assistant_history + self.tool_results + self.documents


def _parts_text(parts: Any, conv: Conversation, role: str, output: bool) -> None:
    if isinstance(parts, str):
        parts = [{"type": "text", "content": parts}]
    if not isinstance(parts, list):
        return
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind == "tool_call_response":
            conv.tool_results.append(_as_text(part.get("response", part.get("result"))))
        elif kind == "tool_call":
            continue  # the model's own request: not grounding, not a claim
        elif "content" in part or "text" in part:
            text = _as_text(part.get("content", part.get("text")))
            if output:
                conv.output.append(text)
            elif role == "system":
                conv.system.append(text)
            elif role == "tool":
                conv.tool_results.append(text)
            elif role == "assistant":
                conv.assistant_history.append(text)
            else:
                conv.user.append(text)


def conversation(attrs: Mapping[str, str]) -> Conversation:
    """The span's text from its semconv attributes (strings that are not message JSON count as
    one text of that side)."""
    conv = Conversation()
    system = attrs.get(SYSTEM_INSTRUCTIONS)
    if system:
        parsed = _loads(system)
        _parts_text(parsed if parsed is not None else system, conv, "system", False)
    for key, output in ((INPUT_MESSAGES, False), (OUTPUT_MESSAGES, True)):
        raw = attrs.get(key)
        if not raw:
            continue
        parsed = _loads(raw)
        if not isinstance(parsed, list):
            (conv.output if output else conv.user).append(raw)
            continue
        for message in parsed:
            if isinstance(message, Mapping):
                role = str(message.get("role") or "user")
                _parts_text(message.get("parts", message.get("content")), conv, role, output)
            elif isinstance(message, str):
                (conv.output if output else conv.user).append(message)
    if attrs.get(TOOL_RESULT):
        conv.tool_results.append(attrs[TOOL_RESULT])
    for key in DOCUMENT_KEYS:
        if attrs.get(key):
            conv.documents.append(attrs[key])
    conv.documents.extend(v for k, v in attrs.items() if k.startswith("retrieval.documents.") and
                          k.endswith(".document.content"))
    return conv


# --- rewriting text inside attribute values (PII) ---

def text_leaves(value: str) -> list[str]:
    """The free-text pieces of an attribute value: the string leaves of JSON (but structural
    fields such as ``role``), else the value itself."""
    out: list[str] = []
    _walk(_loads(value), value, out.append, None)
    return [t for t in out if t]


def rewrite_leaves(value: str, rewrite: Callable[[str], str]) -> str:
    """``value`` with every free-text piece (what :func:`text_leaves` returns) replaced by
    ``rewrite(piece)``; JSON stays JSON (re-serialized only when a piece changed)."""
    parsed = _loads(value)
    if parsed is None:
        return rewrite(value)
    changed = [False]

    def visit(node: Any, key: str | None) -> Any:
        if isinstance(node, str):
            if not node or key in STRUCTURAL_KEYS:
                return node
            new = rewrite(node)
            changed[0] |= new != node
            return new
        if isinstance(node, list):
            return [visit(x, key) for x in node]
        if isinstance(node, dict):
            return {k: visit(v, k) for k, v in node.items()}
        return node

    result = visit(parsed, None)
    return _dumps(result) if changed[0] else value


def _walk(parsed: Any, raw: str, emit: Callable[[str], None], key: str | None) -> None:
    if parsed is None:
        emit(raw)
        return
    stack: list[tuple[Any, str | None]] = [(parsed, key)]
    while stack:
        node, k = stack.pop()
        if isinstance(node, str):
            if k not in STRUCTURAL_KEYS:
                emit(node)
        elif isinstance(node, list):
            stack.extend((x, k) for x in reversed(node))
        elif isinstance(node, dict):
            stack.extend((v, kk) for kk, v in reversed(list(node.items())))


def unique(texts: Iterable[str]) -> list[str]:
    """Distinct texts, first-seen order (system prompts repeat across calls)."""
    return list(dict.fromkeys(texts))
