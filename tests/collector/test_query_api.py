"""``POST /api/v1/query`` runs beside OTLP/HTTP intake on one server: a long query must not hold
up the spans that arrive meanwhile."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

from test_bad_input import good_request, post

PROTOBUF = "application/x-protobuf"


def test_a_long_query_does_not_hold_up_intake(collector: Any) -> None:
    finished: list[str] = []
    answers: list[Any] = []

    def long_query() -> None:  # ~2 s of ClickHouse time
        request = urllib.request.Request(
            f"{collector.http_url}/api/v1/query",
            data=json.dumps({"sql": "SELECT sum(sleepEachRow(0.5)) AS s FROM numbers(4)"}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answers.append(json.loads(response.read()))
        finished.append("query")

    thread = threading.Thread(target=long_query)
    thread.start()
    time.sleep(0.3)  # the query is running
    status, _, _ = post(f"{collector.http_url}/v1/traces", good_request(3, "svc").SerializeToString(), PROTOBUF)
    finished.append("spans")
    thread.join(60)
    assert status == 200
    assert finished == ["spans", "query"]  # answered while the query ran, not after it
    assert answers == [{"s": 0}]
    assert collector.wait_stored(3) == 3
