"""The function put in place of ``Client.send`` / ``AsyncClient.send``: every request goes through it.

It is generated (as ``dataclasses`` generates ``__init__``) with the parameters of the ``send``
it replaces — same names, kinds and defaults — and forwards them one by one. A wrapper taking
``*args, **kwargs`` builds a tuple and a dict on every request and unpacks them again: ~0.7 µs
of the ~1 µs a pass-through costs, for every request the application makes, LLM call or not.
Where the original's signature cannot be read or reproduced, the generic wrapper is used.

With the API's default runtime context (``contextvars``), the span is made current by setting
that ``ContextVar`` directly: the API's ``get_current`` / ``attach`` / ``detach`` and
``set_span_in_context`` are eight Python frames around four C calls (~1 µs). Any other runtime
context (``OTEL_PYTHON_CONTEXT``) goes through the API.
"""

from __future__ import annotations

import functools
import inspect
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

from ._call import start_call
from ._telemetry import Telemetry

try:  # the key get_current_span() reads; without it, the API's own functions
    from opentelemetry.trace.propagation import _SPAN_KEY  # type: ignore[attr-defined]
except ImportError:
    _SPAN_KEY = None  # type: ignore[assignment]
try:  # the keys is_instrumentation_enabled() reads, looked up in the context send() already has
    from opentelemetry.instrumentation.utils import (  # type: ignore[attr-defined]
        _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS,
    )
except ImportError:  # a future opentelemetry-instrumentation that moved it: the plain key below
    _SUPPRESS = "suppress_instrumentation"  # type: ignore[assignment]
_SUPPRESS_PLAIN = "suppress_instrumentation"  # suppress_instrumentation() sets it too (compatibility)

_TEMPLATE = """\
{async_}def send({params}):
    ctx = _get_current()
    call = None
    if _tel.enabled and not (ctx.get(_SUPPRESS) or ctx.get(_SUPPRESS_PLAIN)):
        try:
            call = _start_call(_tel, {request}, ctx)
        except Exception as exc:
            _tel.internal_error("request", exc)
    if call is None:  # not an LLM call, suppressed, uninstrumented, or failed
        return {await_}_original({forward})
    {attach}
    try:
        response = {await_}_original({forward})
    except BaseException as exc:
        call.end(exc)
        raise
    finally:
        {detach}
    try:
        call.on_response(response, _stream_base, {is_async})
    except Exception as exc:
        _tel.internal_error("response", exc)
        call.end(None)
    return response
"""
# Making the call's span current: through the API, or (contextvars runtime) setting its variable.
_API_ATTACH = ("token = _attach(_set_span_in_context(call.span, ctx))", "_detach(token)")
_VAR_ATTACH = ("token = _var_set(_Context({**ctx, _SPAN_KEY: call.span}))",
               "try:\n            _var_reset(token)\n        except Exception:\n            _detach(token)  # logs, as the API does")
_GENERIC = ("self, *args, **kwargs", "self, *args, **kwargs", 'args[0] if args else kwargs.get("request")')
# Names the template uses: a parameter named like one of them would shadow it.
_RESERVED = frozenset({"ctx", "call", "exc", "token", "response", "_get_current", "_tel", "_SUPPRESS",
                       "_SUPPRESS_PLAIN", "_start_call", "_original", "_attach", "_set_span_in_context",
                       "_detach", "_stream_base", "_var_set", "_var_reset", "_Context", "_SPAN_KEY"})
_P = inspect.Parameter


def _signature(original: Any, defaults: dict[str, Any]) -> tuple[str, str, str]:
    """(parameters, forwarded arguments, the request expression) for the template."""
    try:
        params = list(inspect.signature(original).parameters.values())
    except (TypeError, ValueError):
        return _GENERIC
    positional = (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)
    if len(params) < 2 or params[0].kind not in positional or params[1].kind not in positional:
        return _GENERIC  # not (self, request, …)
    if any(p.name in _RESERVED for p in params):
        return _GENERIC
    decl: list[str] = []
    forward: list[str] = []
    star = False
    for i, p in enumerate(params):
        if i and p.kind is not _P.POSITIONAL_ONLY and params[i - 1].kind is _P.POSITIONAL_ONLY:
            decl.append("/")
        if p.kind is _P.KEYWORD_ONLY and not star:
            decl.append("*")
            star = True
        default = ""
        if p.default is not _P.empty:
            defaults[f"_default_{i}"] = p.default
            default = f"=_default_{i}"
        if p.kind is _P.VAR_POSITIONAL:
            decl.append(f"*{p.name}")
            forward.append(f"*{p.name}")
            star = True
        elif p.kind is _P.VAR_KEYWORD:
            decl.append(f"**{p.name}")
            forward.append(f"**{p.name}")
        elif p.kind is _P.KEYWORD_ONLY:
            decl.append(f"{p.name}{default}")
            forward.append(f"{p.name}={p.name}")
        else:
            decl.append(f"{p.name}{default}")
            forward.append(p.name)
    if params[-1].kind is _P.POSITIONAL_ONLY:
        decl.append("/")
    return ", ".join(decl), ", ".join(forward), params[1].name


def _context_var() -> ContextVar[Context] | None:
    """The API's context variable, when the runtime context is the default contextvars one."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if _SPAN_KEY is not None and type(runtime) is ContextVarsRuntimeContext and isinstance(var, ContextVar):
        return var
    return None


def make_send(tel: Telemetry, original: Any, stream_base: type, is_async: bool, direct: bool = True) -> Any:
    """The instrumented ``send``: a GenAI span around LLM calls, every other request straight through.

    ``direct``: set the API's context variable directly where it is the runtime context."""
    var = _context_var() if direct else None
    attach, detach = _VAR_ATTACH if var is not None else _API_ATTACH
    namespace: dict[str, Any] = {
        "_get_current": var.get if var is not None else otel_context.get_current,
        "_var_set": var.set if var is not None else None,
        "_var_reset": var.reset if var is not None else None,
        "_Context": Context,
        "_SPAN_KEY": _SPAN_KEY,
        "_attach": otel_context.attach,
        "_detach": otel_context.detach,
        "_set_span_in_context": trace.set_span_in_context,
        "_SUPPRESS": _SUPPRESS,
        "_SUPPRESS_PLAIN": _SUPPRESS_PLAIN,
        "_start_call": start_call,
        "_tel": tel,
        "_original": original,
        "_stream_base": stream_base,
    }
    params, forward, request = _signature(original, namespace)
    source = _TEMPLATE.format(async_="async " if is_async else "", await_="await " if is_async else "",
                              params=params, forward=forward, request=request, is_async=is_async,
                              attach=attach, detach=detach)
    exec(compile(source, f"<lqo send for {getattr(original, '__qualname__', 'send')}>", "exec"), namespace)
    return functools.wraps(original)(namespace["send"])
