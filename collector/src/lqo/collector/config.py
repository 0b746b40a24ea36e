"""Collector configuration: YAML in the OpenTelemetry Collector's shape.

``receivers``, ``processors`` and ``exporters`` map component ids (``type`` or
``type/name``) to their settings; ``service.pipelines.traces`` wires them. String values
may use ``${env:VAR}`` or ``${env:VAR:-default}``. Every error names the offending key
and says how to fix it (:class:`ConfigError`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

DEFAULT_CONFIG_YAML = """\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
      http:
        endpoint: 127.0.0.1:4318
processors: {}
exporters:
  clickhouse:
    endpoint: embedded://./.lqo/clickhouse
  prometheus: {}
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: []
      exporters: [clickhouse, prometheus]
  telemetry:
    metrics:
      address: 127.0.0.1:8888
"""


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who wrote the file."""


# --------------------------------------------------------------------------- units

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3,
}


def parse_duration(value: Any) -> float:
    """``"250ms"``, ``"5s"``, ``"72h"`` or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '5s', '250ms' or '72h'")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration; use e.g. '5s', '250ms', '72h' or '7d'")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]


def parse_size(value: Any) -> int:
    """``"20MiB"``, ``"512KB"`` or a number of bytes → bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as '20MiB' or a number of bytes")
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size; use e.g. '20MiB', '512KB' or a byte count")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
ByteSize = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- env vars

_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(node: Any, path: str, env: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, f"{path}.{k}" if path else str(k), env) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, f"{path}[{i}]", env) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def lookup(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{path}: environment variable {name} is not set; export it, or write "
            f"${{env:{name}:-DEFAULT}} to give a default"
        )

    whole = _ENV_REF.fullmatch(node)
    if whole:
        # A value that is exactly one reference takes the variable's YAML type (as in
        # the OTel Collector), so `port: ${env:PORT}` yields an int.
        text = lookup(whole)
        try:
            return yaml.safe_load(text) if text.strip() else text
        except yaml.YAMLError:
            return text
    if "${" in _ENV_REF.sub("", node):
        raise ConfigError(f"{path}: malformed reference in {node!r}; write ${{env:NAME}}")
    return _ENV_REF.sub(lookup, node)


# --------------------------------------------------------------------------- loading


def load_yaml(text: str, source: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with receivers/exporters/service")
    return _substitute(doc, "", os.environ if env is None else env)


def load_file(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from None
    return load_yaml(text, str(p), env)


# Processors the default pipeline runs, in order, when their distribution (and its optional
# dependencies) is installed: the ones that need nothing but the span and installed packages (no
# model files to provide, no network). redaction (credentials in URLs, headers and error text)
# runs first, then PII, so none of the others, and no exporter, sees a raw value. toxicity needs
# a model checkpoint on disk: it joins the default pipeline (after pii) when
# LQO_TOXICITY_CHECKPOINT names one, and is configured by hand otherwise.
DEFAULT_PROCESSORS = ("redaction", "genai_normalize", "pii", "cost", "hallucination", "prompt_injection")
TOXICITY_CHECKPOINT_ENV = "LQO_TOXICITY_CHECKPOINT"


def default_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    from lqo.collector.components import factories

    config = load_yaml(DEFAULT_CONFIG_YAML, "built-in default config", env)
    registered = factories("processors")
    installed = [p for p in DEFAULT_PROCESSORS if p in registered and registered[p].available()]
    config["processors"] = {p: {} for p in installed}
    checkpoint = (os.environ if env is None else env).get(TOXICITY_CHECKPOINT_ENV)
    if checkpoint and "toxicity" in registered:
        at = installed.index("pii") + 1 if "pii" in installed else len(installed)
        installed.insert(at, "toxicity")
        config["processors"]["toxicity"] = {"checkpoint": checkpoint}
    config["service"]["pipelines"]["traces"]["processors"] = installed
    return config


def format_validation_error(prefix: str, exc: ValidationError, model: type[BaseModel]) -> str:
    """pydantic's errors → one line per problem: the full key, what is wrong, the fix."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        key = f"{prefix}.{loc}" if loc else prefix
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, err["loc"][:-1])
            if parent is None:
                lines.append(f"{key}: unknown key (docs/configuration.md lists the settings)")
                continue
            near = get_close_matches(str(err["loc"][-1]), parent.model_fields, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            lines.append(f"{key}: unknown key; {hint}valid keys here are: {', '.join(sorted(parent.model_fields))}")
        elif err["type"] == "missing":
            lines.append(f"{key}: required but not set")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            if isinstance(value, dict):
                shown = ""  # a whole section: may hold secrets, and the key already points at it
            elif _SECRET_KEYS.intersection(str(p) for p in err["loc"]):
                shown = " (value not shown: it is a secret)"
            else:
                shown = f" (got {value!r})"
            lines.append(f"{key}: {msg}{shown}")
    return "\n".join(lines)


# Settings whose values error messages never repeat.
_SECRET_KEYS = frozenset({"password", "token", "tokens"})


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The settings model at ``loc``: through optional sections (``X | None``), mappings of
    sections (``dict[str, X]``, whose keys are names, not settings) and lists of them."""
    current: Any = model
    for part in loc:
        current = _required(current)
        if get_origin(current) in (dict, list):  # ``part`` is a name or an index
            current = get_args(current)[-1]
            continue
        field = current.model_fields.get(part) if _is_model(current) else None
        if field is None:
            return None
        current = field.annotation
    current = _required(current)
    return current if _is_model(current) else None


def _required(annotation: Any) -> Any:
    """``X | None`` → ``X``; anything else as it is."""
    args = get_args(annotation)
    rest = [a for a in args if a is not type(None)]
    return rest[0] if len(rest) == 1 and len(args) == 2 else annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def validate_section(prefix: str, model: type[BaseModel], raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix}: expected a mapping of settings, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(prefix, exc, model)) from None
