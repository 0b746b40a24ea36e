"""Users' feedback and evaluators' scores on a call, as the semantic conventions send them.

``record_evaluation`` emits one ``gen_ai.evaluation.result`` event (a log record, through the
OpenTelemetry Logs API) about one LLM call, named by its response id (what an app keeps with an
answer it showed, e.g. ``completion.id``) or by the call's span in ``context``. Feedback usually
comes in a later request than the call, so the response id is the usual way. The collector
stores it in its evaluations table, joined to the call (docs/configuration.md, "Evaluation
results and user feedback")::

    from lqo.instrumentation.httpx import record_evaluation

    answer = client.chat.completions.create(...)
    ...  # later, when the user clicks thumbs-down
    record_evaluation("user_feedback", label="thumbs_down", score=0.0, response_id=answer.id)

Under ``lqo-instrument`` the log records go to the collector with the spans. Like the
instrumentation, it never raises into the application: a call it cannot send (no name, nothing
naming the call, a score that is not a number) is logged once and dropped.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import get_logger
from opentelemetry.context import Context

from .version import __version__

_log = logging.getLogger("lqo.instrumentation.httpx")
EVENT = "gen_ai.evaluation.result"
_SCOPE = "lqo.instrumentation.httpx.feedback"
_warned: set[str] = set()


def _warn_once(what: str) -> None:
    if what not in _warned:
        _warned.add(what)
        _log.warning("record_evaluation: %s; not sent", what)


def record_evaluation(name: str, *, score: float | None = None, label: str | None = None,
                      explanation: str | None = None, response_id: str | None = None,
                      context: Any = None, attributes: dict[str, Any] | None = None,
                      logger_provider: Any = None) -> bool:
    """Sends one evaluation result about one call; True if it was handed to the Logs API.

    ``name``: what was evaluated (``user_feedback``, ``relevance``…); ``score`` and/or ``label``:
    the verdict; ``explanation``: why (a user's comment: the collector keeps 4 KiB of it);
    ``response_id`` and/or ``context`` (a context whose current span is the call's, e.g.
    ``trace.set_span_in_context(span)``): which call. ``attributes``: more of your own.
    """
    try:
        if not isinstance(name, str) or not name:
            _warn_once("an evaluation needs a name")
            return False
        span_context = trace.get_current_span(context).get_span_context() if context is not None else None
        if not response_id and not (span_context and span_context.is_valid):
            _warn_once("it names no call (give response_id, or a context with the call's span)")
            return False
        event: dict[str, Any] = dict(attributes or {})
        event["gen_ai.evaluation.name"] = name
        if score is not None:
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                _warn_once("score must be a finite number")
                return False
            event["gen_ai.evaluation.score.value"] = float(score)
        if label:
            event["gen_ai.evaluation.score.label"] = str(label)
        if explanation:
            event["gen_ai.evaluation.explanation"] = str(explanation)
        if response_id:
            event["gen_ai.response.id"] = str(response_id)
        # No context given: no span, not the current one's (the request that brought the feedback,
        # say), which the collector would take for the call's. (An empty Context is falsy, and the
        # Logs API then takes the current one: an explicitly invalid span it is.)
        if context is None:
            context = trace.set_span_in_context(trace.INVALID_SPAN, Context())
        get_logger(_SCOPE, __version__, logger_provider).emit(event_name=EVENT, attributes=event, context=context)
        return True
    except Exception as exc:  # never into the application
        _warn_once(f"failed ({type(exc).__name__})")
        return False
