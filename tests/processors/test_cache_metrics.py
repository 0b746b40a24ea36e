"""``lqo_cache_entries`` / ``lqo_cache_capacity{cache}``: how full the processors' bounded caches
are, read from the collector's own registry as a scrape reads it."""

from __future__ import annotations

import gc

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lqo.collector.telemetry import SelfTelemetry
from lqo.processors.normalize import NormalizeConfig, NormalizeProcessor
from lqo.processors.safety import hallucination
from lqo.processors.safety.evaluation import TextCache
from lqo.processors.safety.hallucination import HallucinationConfig, HallucinationProcessor
from lqo.processors.safety.injection import InjectionConfig, InjectionProcessor
from tests.processors.spans import batch_of, chat


def scrape() -> dict[str, dict[str, float]]:
    """{cache: {"entries": …, "capacity": …}} from one scrape of a collector's registry."""
    text = generate_latest(SelfTelemetry().registry).decode()
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("lqo_cache_entries", "lqo_cache_capacity"):
            for sample in family.samples:
                out.setdefault(sample.labels["cache"], {})[family.name.rsplit("_", 1)[1]] = sample.value
    return out


def test_a_named_cache_is_reported_while_it_lives_and_instances_are_summed() -> None:
    first, second = TextCache[int](5, name="test.summed"), TextCache[int](7, name="test.summed")
    unnamed = TextCache[int](3)
    for i in range(3):
        first.get(f"a{i}", lambda i=i: i)
    second.resolve(["x", "y", "x"], lambda todo: [len(t) for t in todo])
    unnamed.get("z", lambda: 1)
    assert scrape()["test.summed"] == {"entries": 5.0, "capacity": 12.0}
    for i in range(10):  # bounded: the least recently used go
        first.get(f"b{i}", lambda i=i: i)
    assert scrape()["test.summed"] == {"entries": 7.0, "capacity": 12.0}
    del first, second
    gc.collect()
    assert "test.summed" not in scrape()  # held weakly: a processor shut down is not reported


def test_the_checks_report_their_caches_as_they_fill() -> None:
    before = scrape()
    injection, check = InjectionProcessor(InjectionConfig()), HallucinationProcessor(HallucinationConfig())
    normalize = NormalizeProcessor(NormalizeConfig())
    answers = [f"The order {n} shipped on Tuesday from the Denver warehouse and arrives within {n % 9 + 2} days."
               for n in range(40)]
    spans = [chat(user=f"Where is order {n}?", output=answer,
                  system=f"Order {n} shipped Tuesday from Denver; delivery in {n % 9 + 2} days.")
             for n, answer in enumerate(answers)]
    batch = normalize.process(batch_of(spans))
    for proc in (injection, check):
        batch = proc.process(batch)
    after = scrape()
    for name in ("prompt_injection.verdicts", "hallucination.groundings", "hallucination.stems"):
        grew = after[name]["entries"] - before.get(name, {}).get("entries", 0.0)
        assert grew > 0, name
        assert after[name]["entries"] <= after[name]["capacity"], name
    assert after["prompt_injection.verdicts"]["entries"] - before.get("prompt_injection.verdicts", {}).get(
        "entries", 0.0) >= 40  # (each distinct text once: the 40 questions at least)
    assert after["hallucination.stems"]["capacity"] == hallucination.stem.cache_info().maxsize
    assert "genai_normalize.calls" in after  # (empty: these spans have no parents to count)
    assert after["genai_normalize.calls"]["capacity"] >= 2 * 16_384
