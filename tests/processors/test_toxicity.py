"""The toxicity check: a Detoxify-format checkpoint (random weights, the real BERT classes, a
tokenizer built here) loaded from local files, batched inference on each backend, the processor,
and the whole path through a running collector."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from lqo.collector.config import default_config
from lqo.processors.safety import toxicity_model
from lqo.processors.safety.toxicity import ToxicityConfig, ToxicityProcessor
from lqo.processors.safety.toxicity_checkpoint import ORIGINAL_CLASSES, write_checkpoint
from lqo.processors.safety.toxicity_model import (
    PROBE_TEXTS,
    ToxicityModelError,
    load,
    read_checkpoint,
)
from tests.processors.spans import (
    attributes,
    batch_of,
    chat,
    evaluation_events,
    messages,
    otlp_tracer,
)

LQO = str(Path(sys.executable).with_name("lqo"))
TEXTS = ["you are an idiot", "Thanks, that fixed it!", "the meeting moved to thursday and the agenda is attached",
         "shut up", "x", "Hold the button for ten seconds, then pair the device again from the app settings. " * 3]
CLASSES = ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("detoxify"), "tiny", seed=3)


@pytest.fixture(scope="module")
def reference(checkpoint: Path) -> toxicity_model.Scorer:
    """The float32 torch model: what every other path is compared with."""
    return load(checkpoint, backend="torch").scorer


def test_checkpoint_has_detoxify_layout_and_classes_are_renamed_as_detoxify_does(checkpoint: Path) -> None:
    raw = torch.load(checkpoint, weights_only=True)
    assert raw["config"]["arch"]["args"] == {"model_type": "bert-base-uncased",
                                             "model_name": "BertForSequenceClassification",
                                             "tokenizer_name": "BertTokenizer", "num_classes": 6}
    assert raw["config"]["dataset"]["args"]["classes"] == list(ORIGINAL_CLASSES)
    assert read_checkpoint(checkpoint).classes == CLASSES
    # The model files are those of the base model: two labels, not six (loading sets the count).
    base = json.loads((checkpoint.parent / "config.json").read_text())
    assert len(base.get("id2label", ["LABEL_0", "LABEL_1"])) == 2


def test_scores_equal_detoxify_predict(checkpoint: Path, reference: toxicity_model.Scorer, tmp_path: Path) -> None:
    """Detoxify's own class on the same weights. It reads its config from ``model_type`` (the hub
    name in real checkpoints), so it gets a local folder in that field and a config that already
    has six labels, which is what Detoxify's offline path needs."""
    detoxify = pytest.importorskip("detoxify")
    local = tmp_path / "detoxify-offline"
    shutil.copytree(checkpoint.parent, local)
    config = json.loads((local / "config.json").read_text())
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(6)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(6)}
    (local / "config.json").write_text(json.dumps(config))
    raw = torch.load(checkpoint, weights_only=True)
    raw["config"]["arch"]["args"]["model_type"] = str(local)
    torch.save(raw, local / "toxicity.ckpt")
    theirs = detoxify.Detoxify(checkpoint=str(local / "toxicity.ckpt"), huggingface_config_path=str(local))
    expected = theirs.predict(TEXTS)
    ours = reference.scores(TEXTS)
    assert list(expected) == list(CLASSES)
    for j, cls in enumerate(CLASSES):
        np.testing.assert_allclose(ours[:, j], expected[cls], atol=1e-5)
    assert ours.std(axis=0).max() > 0.01  # scores differ between texts: the comparison means something


def test_batched_inference_equals_text_by_text(checkpoint: Path, reference: toxicity_model.Scorer) -> None:
    small_batches = load(checkpoint, backend="torch", batch_size=2).scorer
    together = small_batches.scores(TEXTS)
    alone = np.vstack([reference.scores([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)  # padding and sorting change nothing
    assert reference.scores([]).shape == (0, 6)


def test_long_texts_are_cut_at_max_tokens(checkpoint: Path) -> None:
    scorer = load(checkpoint, backend="torch", max_tokens=16).scorer
    assert scorer.max_tokens == 16
    head = "the meeting moved to thursday and the agenda is attached " * 2
    assert len(scorer.tokenizer(head)["input_ids"]) > 16
    # What lies past the first 16 tokens does not change the scores; what lies inside does.
    a, b, c = scorer.scores([head + "thanks", head + "you are an idiot " * 50, "shut up " + head])
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.abs(a - c).max() > 1e-4
    # A text far longer than the model's positions is cut, not an error.
    assert load(checkpoint, backend="torch").scorer.scores(["word " * 20000]).shape == (1, 6)


def test_onnx_backends_are_checked_against_torch(checkpoint: Path, reference: toxicity_model.Scorer,
                                                 tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    onnx = load(checkpoint, backend="onnx", cache_dir=tmp_path)
    assert onnx.scorer.backend == "onnx" and onnx.probe_difference < 1e-4
    np.testing.assert_allclose(onnx.scorer.scores(TEXTS), reference.scores(TEXTS), atol=1e-4)
    exported = sorted(tmp_path.glob("*.onnx"))
    assert len(exported) == 1
    before = exported[0].stat().st_mtime_ns
    load(checkpoint, backend="onnx", cache_dir=tmp_path)
    assert exported[0].stat().st_mtime_ns == before  # the cached export is reused

    # int8 on this tiny random model moves scores by more than the tolerance: named explicitly it
    # is used with a warning; auto passes over it to the first backend within tolerance.
    with caplog.at_level(logging.INFO, "lqo.processors.safety.toxicity_model"):
        int8 = load(checkpoint, backend="onnx-int8", cache_dir=tmp_path)
        auto = load(checkpoint, backend="auto", cache_dir=tmp_path)
    measured = np.abs(int8.scorer.scores(list(PROBE_TEXTS)) - reference.scores(list(PROBE_TEXTS))).max()
    assert int8.probe_difference == pytest.approx(measured, abs=1e-6)
    assert int8.probe_difference > 0.01
    assert any(r.levelno == logging.WARNING and "onnx-int8" in r.message for r in caplog.records)
    assert auto.scorer.backend == "onnx" and auto.probe_difference <= 0.01
    loose = load(checkpoint, backend="auto", cache_dir=tmp_path, tolerance=1.0)
    assert loose.scorer.backend == "onnx-int8"


def test_unusable_checkpoints_get_clear_errors(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ToxicityModelError, match=r"is not a file.*Detoxify"):
        read_checkpoint(tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00not a checkpoint" * 100)
    with pytest.raises(ToxicityModelError, match="not a torch checkpoint file"):
        read_checkpoint(junk)
    torch.save({"state_dict": {}}, tmp_path / "bare.ckpt")
    with pytest.raises(ToxicityModelError, match="not in Detoxify's format"):
        read_checkpoint(tmp_path / "bare.ckpt")
    raw = torch.load(checkpoint, weights_only=True)
    raw["config"]["arch"]["args"]["model_name"] = "pipeline"
    torch.save(raw, tmp_path / "odd.ckpt")
    with pytest.raises(ToxicityModelError, match="not a transformers sequence-classification model"):
        read_checkpoint(tmp_path / "odd.ckpt")
    # Python objects in the file: refused unless the user trusts it.
    raw = torch.load(checkpoint, weights_only=True)
    raw["hyper_parameters"] = argparse.Namespace(lr=1e-4)
    torch.save(raw, tmp_path / "pickled.ckpt")
    with pytest.raises(ToxicityModelError, match="allow_pickle"):
        read_checkpoint(tmp_path / "pickled.ckpt")
    assert read_checkpoint(tmp_path / "pickled.ckpt", allow_pickle=True).classes == CLASSES
    # Model files that do not fit the checkpoint, or are missing.
    with pytest.raises(ToxicityModelError, match=r"no config\.json"):
        load(checkpoint, tmp_path, backend="torch")
    other = tmp_path / "other"
    shutil.copytree(checkpoint.parent, other)
    config = json.loads((other / "config.json").read_text())
    config["hidden_size"] = 48
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ToxicityModelError, match="does not fit the model files"):
        load(checkpoint, other, backend="torch")
    (other / "config.json").write_text((checkpoint.parent / "config.json").read_text())
    for f in other.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(ToxicityModelError, match="BertTokenizer"):
        load(checkpoint, other, backend="torch")
    with pytest.raises(ToxicityModelError, match="needs device: cuda"):
        load(checkpoint, backend="torch-fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ToxicityModelError, match="sees no CUDA device"):
            load(checkpoint, device="cuda")


def _processor(checkpoint: Path, **config: Any) -> ToxicityProcessor:
    return ToxicityProcessor(ToxicityConfig(checkpoint=checkpoint, backend="torch", **config))


def test_processor_scores_outputs_and_writes_attributes_and_events(checkpoint: Path,
                                                                   reference: toxicity_model.Scorer) -> None:
    spans = [chat(user="hello", output=TEXTS[0]), chat(user=TEXTS[3], output=TEXTS[1]),
             chat(user="no answer"), {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                                      "gen_ai.output.messages": json.dumps([
                                          {"role": "assistant", "parts": [{"type": "text", "content": TEXTS[2]}]},
                                          {"role": "assistant", "parts": [{"type": "text", "content": TEXTS[3]}]}])}]
    proc = _processor(checkpoint, threshold=0.0)
    batch = proc.process(batch_of(spans))
    attrs, events = attributes(batch), evaluation_events(batch, "toxicity")
    expected = reference.scores([TEXTS[0], TEXTS[1], TEXTS[2], TEXTS[3]])
    outputs = [expected[0], expected[1], None, np.maximum(expected[2], expected[3])]  # two choices: the worst
    for a, evs, row in zip(attrs, events, outputs, strict=True):
        if row is None:
            assert "lqo.toxicity.score" not in a and evs == []
            continue
        top = int(row.argmax())
        assert float(a["lqo.toxicity.score"]) == pytest.approx(row[top], abs=1e-4)
        assert a["lqo.toxicity.class"] == CLASSES[top]
        assert json.loads(a["lqo.flags"]) == ["toxicity"]
        [event] = evs
        assert float(event["gen_ai.evaluation.score.value"]) == pytest.approx(row[top], abs=1e-4)
        assert event["gen_ai.evaluation.score.label"] == "toxic"
        for j, cls in enumerate(CLASSES):
            assert float(event[f"lqo.toxicity.{cls}"]) == pytest.approx(row[j], abs=1e-4)
        assert "lqo.toxicity.input_score" not in a  # inputs are scored only when asked

    # The threshold decides the flag and the label.
    high = _processor(checkpoint, threshold=1.0).process(batch_of(spans[:1]))
    assert "lqo.flags" not in attributes(high)[0]
    assert evaluation_events(high, "toxicity")[0][0]["gen_ai.evaluation.score.label"] == "not_toxic"


def test_input_scoring_uses_the_latest_user_message(checkpoint: Path, reference: toxicity_model.Scorer) -> None:
    span = chat(output=TEXTS[1])
    span["gen_ai.input.messages"] = messages(("user", TEXTS[2]), ("assistant", "ok"), ("user", TEXTS[0]))
    only_input = chat(user=TEXTS[3])
    batch = _processor(checkpoint, score_input=True, threshold=1.0).process(batch_of([span, only_input]))
    a, b = attributes(batch)
    assert float(a["lqo.toxicity.input_score"]) == pytest.approx(reference.scores([TEXTS[0]]).max(), abs=1e-4)
    assert float(a["lqo.toxicity.score"]) == pytest.approx(reference.scores([TEXTS[1]]).max(), abs=1e-4)
    assert float(b["lqo.toxicity.input_score"]) == pytest.approx(reference.scores([TEXTS[3]]).max(), abs=1e-4)
    assert "lqo.toxicity.score" not in b
    event = evaluation_events(batch, "toxicity")[0][0]
    assert set(event) >= {f"lqo.toxicity.input.{c}" for c in CLASSES} | {f"lqo.toxicity.{c}" for c in CLASSES}


def test_repeated_texts_are_scored_once(checkpoint: Path) -> None:
    proc = _processor(checkpoint)
    seen: list[list[str]] = []
    scores = proc.scorer.scores
    proc.scorer.scores = lambda texts: (seen.append(list(texts)), scores(texts))[1]  # type: ignore[method-assign]
    spans = [chat(output=TEXTS[i % 2]) for i in range(10)]
    first = attributes(proc.process(batch_of(spans)))
    second = attributes(proc.process(batch_of(spans)))
    assert seen == [[TEXTS[0], TEXTS[1]]]  # one model call with the two distinct texts, then the cache
    assert first == second
    assert first[0]["lqo.toxicity.score"] == first[2]["lqo.toxicity.score"] != first[1]["lqo.toxicity.score"]


def test_sampling_marks_skipped_spans(checkpoint: Path) -> None:
    proc = _processor(checkpoint, sampling={"max_spans_per_second": 2})
    assert proc.sampler.config.max_spans_per_second == 2  # a configured limit is kept
    out = attributes(proc.process(batch_of([chat(output=t) for t in TEXTS])))
    assert sum("lqo.toxicity.score" in a for a in out) == 2
    assert sum(a.get("lqo.toxicity.skipped") == "sampled" for a in out) == len(TEXTS) - 2


def test_without_a_limit_spans_above_the_measured_rate_are_shed(checkpoint: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "lqo.processors.safety.toxicity"):
        proc = _processor(checkpoint)
    limit = proc.sampler.config.max_spans_per_second
    assert limit is not None and limit >= 1
    assert any("texts/s here" in r.message and "skipped=sampled" in r.message for r in caplog.records)
    # More spans than one second of the bucket holds: the rest are marked, none is lost.
    many = [chat(output=f"{TEXTS[0]} {i}") for i in range(int(limit) + 5)]
    out = attributes(proc.process(batch_of(many)))
    scored = sum("lqo.toxicity.score" in a for a in out)
    assert scored <= limit + 1 and scored + sum(a.get("lqo.toxicity.skipped") == "sampled" for a in out) == len(many)
    assert _processor(checkpoint, shed_at_measured_rate=False).sampler.config.max_spans_per_second is None
    # The limit follows the rate of the batches actually scored: here a model that scores a tenth
    # of the measured rate (an absolute rate, so the outcome does not hang on how much faster a
    # batch of 20 is than the probe texts on this machine).
    scores, slow_rate, before = proc.scorer.scores, proc._rate / 10, proc.sampler.config.max_spans_per_second

    def slow(texts: list[str]) -> np.ndarray:
        started = time.perf_counter()
        out = scores(texts)
        time.sleep(max(0.0, len(texts) / slow_rate - (time.perf_counter() - started)))
        return out

    proc.scorer.scores = slow  # type: ignore[method-assign]
    for round_ in range(6):
        time.sleep(1.0)  # a second's tokens
        proc.process(batch_of([chat(output=f"{TEXTS[1]} {round_} {i}") for i in range(20)]))
    assert proc.sampler.config.max_spans_per_second < before / 2


def test_config_without_checkpoint_is_refused_with_how_to(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(ValidationError, match=r"checkpoint is required.*config_dir"):
        ToxicityConfig()
    with pytest.raises(ValidationError, match="is not a file"):
        ToxicityConfig(checkpoint=tmp_path / "nope.ckpt")
    with pytest.raises(ValidationError, match=r"has no config\.json"):
        ToxicityConfig(checkpoint=checkpoint, config_dir=tmp_path)
    with pytest.raises(ValidationError, match="device"):
        ToxicityConfig(checkpoint=checkpoint, device="tpu")


def test_collector_refuses_to_start_without_a_checkpoint(tmp_path: Path) -> None:
    config = default_config({})
    config["processors"] = {"toxicity": {}}
    config["service"]["pipelines"]["traces"]["processors"] = ["toxicity"]
    path = tmp_path / "lqo.yaml"
    path.write_text(json.dumps(config))
    for extra in ([], ["--validate"]):
        out = subprocess.run([LQO, "collector", "--config", str(path), *extra], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert "processors.toxicity" in out.stderr and "checkpoint is required" in out.stderr
        assert "save_pretrained" in out.stderr and "Traceback" not in out.stderr


def test_default_pipeline_takes_the_checkpoint_from_the_environment(checkpoint: Path) -> None:
    plain = default_config({})["service"]["pipelines"]["traces"]["processors"]
    assert "toxicity" not in plain
    config = default_config({"LQO_TOXICITY_CHECKPOINT": str(checkpoint)})
    pipeline = config["service"]["pipelines"]["traces"]["processors"]
    assert pipeline.index("toxicity") == pipeline.index("pii") + 1  # after PII: it never sees raw values
    assert config["processors"]["toxicity"] == {"checkpoint": str(checkpoint)}


def test_through_the_collector(make_collector: Any, checkpoint: Path, reference: toxicity_model.Scorer) -> None:
    # As in the default pipeline, pii starts first (loading spaCy and Presidio without torch) and
    # toxicity then loads torch in the same process; `detect` leaves the scored text as it is.
    col = make_collector({
        "processors": {"genai_normalize": {}, "pii": {"action": "detect"},
                       "toxicity": {"checkpoint": str(checkpoint), "batch_size": 4, "threshold": 0.6}},
        "service": {"pipelines": {"traces": {"processors": ["genai_normalize", "pii", "toxicity"]}}},
    })
    provider, tracer = otlp_tracer(col.http_url, "toxicity-e2e")
    for i, text in enumerate(TEXTS):
        with tracer.start_as_current_span("chat gpt-4o") as span:
            span.set_attributes({**chat(user=f"question {i}", output=text), "case": i})
    with tracer.start_as_current_span("not genai"):
        pass
    provider.shutdown()
    col.wait_stored(len(TEXTS) + 1)
    rows = col.query("SELECT SpanAttributes AS a, Events.Name AS n, Events.Attributes AS e FROM otel_traces "
                     "WHERE SpanAttributes['case'] != '' ORDER BY toInt32(SpanAttributes['case'])")
    assert len(rows) == len(TEXTS)
    expected = reference.scores(TEXTS)
    # The collector chose its own backend (auto); the scores stay within its tolerance of torch.
    for row, want in zip(rows, expected, strict=True):
        top = int(want.argmax())
        assert float(row["a"]["lqo.toxicity.score"]) == pytest.approx(want[top], abs=0.0101)
        assert ("toxicity" in json.loads(row["a"].get("lqo.flags", "[]"))) == (float(row["a"]["lqo.toxicity.score"])
                                                                            >= 0.6)
        event, = [e for n, e in zip(row["n"], row["e"], strict=True)
                  if n == "gen_ai.evaluation.result" and e["gen_ai.evaluation.name"] == "toxicity"]
        for j, cls in enumerate(CLASSES):
            assert float(event[f"lqo.toxicity.{cls}"]) == pytest.approx(want[j], abs=0.0101)
    assert list((col.workdir / ".lqo" / "models").glob("*.onnx"))  # auto converted once, into the cache
