"""The ``toxicity`` processor: Detoxify's classifiers on the model's answers (and, optionally,
the user's latest message), batched over the distinct texts of each batch.

Writes ``lqo.toxicity.score`` (the highest toxicity-class probability of the output),
``lqo.toxicity.class`` (that class), ``lqo.toxicity.input_score`` when inputs are scored, flags
``toxicity`` at ``threshold``, and adds a ``gen_ai.evaluation.result`` event whose attributes
carry every class's score (``lqo.toxicity.<class>``, ``lqo.toxicity.input.<class>``).

The model is a Detoxify checkpoint on local disk (see :mod:`toxicity_model`); without one the
collector does not start. Texts longer than ``max_tokens`` are scored on their first
``max_tokens`` tokens, as Detoxify does.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from lqo.collector.components import ComponentContext, Factory
from lqo.processors.safety.content import INPUT_MESSAGES, OUTPUT_MESSAGES, conversation
from lqo.processors.safety.evaluation import (
    CheckConfig,
    CheckProcessor,
    Sampler,
    TextCache,
    Verdict,
)
from lqo.processors.safety.toxicity_model import (
    BACKENDS,
    HOW_TO,
    PROBE_TEXTS,
    TOXICITY_CLASSES,
    load,
)

log = logging.getLogger(__name__)


class ToxicityConfig(CheckConfig):
    checkpoint: Path | None = Field(None, description=(
        "Detoxify checkpoint file (.ckpt) on local disk; required"))
    config_dir: Path | None = Field(None, description=(
        "folder with the base model's config.json and tokenizer files (save_pretrained output); "
        "default: the checkpoint's folder"))
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="cpu, cuda or cuda:N")
    backend: Literal[BACKENDS] = Field("auto", description=(  # type: ignore[valid-type]
        "auto (fastest backend within tolerance: onnx-int8, onnx, torch on cpu; torch-fp16, torch on cuda), "
        "torch, torch-fp16, onnx, onnx-int8"))
    tolerance: float = Field(0.01, ge=0.0, le=1.0, description=(
        "largest score difference from the float32 torch model, on probe texts, that auto accepts"))
    batch_size: int = Field(32, ge=1, le=4096, description="texts per model call")
    max_tokens: int = Field(512, ge=8, le=8192, description="tokens of a text that are scored (the rest is cut)")
    threads: int | None = Field(None, ge=1, le=256, description="CPU threads for inference (default: all cores)")
    score_input: bool = Field(False, description="also score the user's latest message (lqo.toxicity.input_score)")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="flag toxicity at this score")
    cache_size: int = Field(4096, ge=0, description="distinct texts whose scores are remembered "
                                                        "(and at most 32 M characters of them)")
    cache_dir: Path = Field(Path(".lqo/models"), description="where converted (ONNX) models are kept")
    shed_at_measured_rate: bool = Field(True, description=(
        "without sampling.max_spans_per_second: shed spans above 80% of the scoring rate (measured at start, "
        "then on the batches scored)"))
    allow_pickle: bool = Field(False, description=(
        "accept checkpoints holding Python objects besides tensors (unpickling runs code from the file)"))

    @model_validator(mode="after")
    def _needs_checkpoint(self) -> ToxicityConfig:
        if self.checkpoint is None:
            raise ValueError(f"checkpoint is required: the toxicity check has no model without one. {HOW_TO}")
        if not self.checkpoint.is_file():
            raise ValueError(f"checkpoint {str(self.checkpoint)!r} is not a file. {HOW_TO}")
        config_dir = self.config_dir if self.config_dir is not None else self.checkpoint.parent
        if not (config_dir / "config.json").is_file():
            raise ValueError(f"config_dir {str(config_dir)!r} has no config.json. {HOW_TO}")
        return self


class ToxicityProcessor(CheckProcessor):
    check, flag, prefix = "toxicity", "toxicity", "toxicity"
    read_keys = (OUTPUT_MESSAGES,)
    offloads = True  # inference runs in torch / ONNX Runtime without the GIL: the pipeline overlaps it

    def __init__(self, config: ToxicityConfig, ctx: ComponentContext | None = None) -> None:
        super().__init__(config)
        self.config: ToxicityConfig = config
        if config.score_input:
            self.read_keys = (OUTPUT_MESSAGES, INPUT_MESSAGES)
        loaded = load(config.checkpoint, config.config_dir, device=config.device, backend=config.backend,
                      batch_size=config.batch_size, max_tokens=config.max_tokens, threads=config.threads,
                      tolerance=config.tolerance, cache_dir=config.cache_dir, allow_pickle=config.allow_pickle)
        self.scorer = loaded.scorer
        self.classes = loaded.classes
        self._toxic = np.array([c in TOXICITY_CLASSES for c in self.classes])
        if not self._toxic.any():
            self._toxic[:] = True  # a checkpoint with classes of its own: all of them count
        self._cache: TextCache[np.ndarray] = TextCache(config.cache_size, name="toxicity.scores")
        self._rate = 0.0  # texts/s measured while shedding at the measured rate; 0: a fixed limit (or none)
        if config.sampling.max_spans_per_second is None and config.shed_at_measured_rate:
            self._shed_at_measured_rate()

    def _shed_at_measured_rate(self) -> None:
        """Without a configured limit, shed spans above 80% of the rate this machine scores them
        at, so a model slower than the traffic marks spans skipped instead of stalling the
        pipeline. The rate starts from the probe texts timed at start and then follows the
        batches actually scored (a moving average), whose texts may be longer."""
        texts = list(PROBE_TEXTS) * 2
        self.scorer.scores(texts[:4])  # warm-up
        started = time.perf_counter()
        self.scorer.scores(texts)
        self._rate = len(texts) / max(time.perf_counter() - started, 1e-6)
        self.sampler = Sampler(self.config.sampling.model_copy(update={"max_spans_per_second": self._limit()}))
        log.info("toxicity: %s scores ~%.0f texts/s here; spans above %.1f/s are marked lqo.toxicity.skipped="
                 "sampled, following the measured rate (set sampling.max_spans_per_second, or "
                 "shed_at_measured_rate: false, to change)", self.scorer.backend, self._rate, self._limit())

    def _limit(self) -> float:
        return max(1.0, round(0.8 * self._rate, 1))

    def _observe(self, spans: int, seconds: float) -> None:
        if not self._rate or spans < 8 or seconds <= 0:
            return
        self._rate = 0.7 * self._rate + 0.3 * spans / seconds
        self.sampler.set_limit(self._limit())

    def evaluate(self, spans: list[dict[str, str]]) -> list[Verdict | None]:
        outputs: list[list[str]] = []
        inputs: list[str | None] = []
        for attrs in spans:
            conv = conversation(attrs)
            outputs.append([t for t in conv.output if t.strip()])
            inputs.append(conv.user[-1] if self.config.score_input and conv.user and conv.user[-1].strip() else None)
        started = time.perf_counter()
        scores = self._cache.resolve([t for texts in outputs for t in texts] + [t for t in inputs if t is not None],
                                     self.scorer.scores)
        self._observe(sum(1 for texts, user in zip(outputs, inputs, strict=True) if texts or user is not None),
                      time.perf_counter() - started)
        verdicts: list[Verdict | None] = []
        for texts, user in zip(outputs, inputs, strict=True):
            if not texts and user is None:
                verdicts.append(None)
                continue
            attributes: dict[str, str] = {}
            event: dict[str, str] = {}
            explanation: list[str] = []
            top = input_top = None
            if texts:  # several choices: the worst of them
                top, cls = self._describe(np.max([scores[t] for t in texts], axis=0), "output", "lqo.toxicity.",
                                          event, explanation)
                attributes["lqo.toxicity.score"] = _fmt(top)
                attributes["lqo.toxicity.class"] = cls
            if user is not None:
                input_top, _ = self._describe(scores[user], "input", "lqo.toxicity.input.", event, explanation)
                attributes["lqo.toxicity.input_score"] = _fmt(input_top)
            flagged = any(s is not None and s >= self.config.threshold for s in (top, input_top))
            verdicts.append(Verdict(attributes, top, "toxic" if flagged else "not_toxic", "; ".join(explanation),
                                    flagged, event))
        return verdicts

    def _describe(self, row: np.ndarray, side: str, prefix: str, event: dict[str, str],
                  explanation: list[str]) -> tuple[float, str]:
        """(top toxicity-class score of ``row``, its class); every class's score goes into
        ``event`` under ``prefix``, "<side>: <class> <score>" onto ``explanation``."""
        i = int(np.where(self._toxic, row, -1.0).argmax())
        top = round(float(row[i]), 4)
        event.update({f"{prefix}{c}": _fmt(v) for c, v in zip(self.classes, row.tolist(), strict=True)})
        explanation.append(f"{side}: {self.classes[i]} {_fmt(top)}")
        return top, self.classes[i]


def _fmt(value: float) -> str:
    return f"{round(float(value), 4):g}"


FACTORY = Factory("toxicity", ToxicityConfig, lambda config, ctx: ToxicityProcessor(config, ctx))
