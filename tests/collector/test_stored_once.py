"""A batch of spans sent to the store again is stored once: in the spans table and in every table
its views fill (the GenAI calls, their per-minute roll-ups, the trace-id lookup).

A batch goes again when the store took it but its reply was lost (a timeout, a proxy's reset),
and — with the sending queue on disk — when a kill came between the insert and the removal of
its files. Each insert carries a token (``insert_deduplication_token``), the same at every try;
the tables remember their last inserts' tokens (``non_replicated_deduplication_window``). The
disk queue keeps the insert in progress in ``sending.json`` (its files and its token), so that a
restart sends the same files together, with the same token.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_bad_input import post
from test_persistent_queue import _batches, _files, _filled, _queue, _same, _storage_overrides

from lqo.collector.exporters.clickhouse.schema import SchemaSpec

_ALL = dict(max_spans=10_000, max_bytes=1 << 30, wait=0)


def _record(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "sending.json").read_text())


# -- the queue's record of the insert in progress ----------------------------------------------------

def test_an_insert_is_recorded_with_its_files_and_token_until_the_store_has_it(tmp_path):
    queue = _filled(tmp_path, _batches(3))
    queue.take(max_spans=80, max_bytes=1 << 30, wait=0)  # two batches' worth
    token, rows = queue.begin(1000)
    assert rows == 1000
    assert _record(tmp_path) == {"files": _files(tmp_path)[:2], "token": token, "rows": 1000}
    queue.commit()
    assert not (tmp_path / "sending.json").exists() and len(_files(tmp_path)) == 1
    queue.take(**_ALL)
    assert queue.begin(1000)[0] != token  # a new insert, a new token
    queue.commit()
    assert _files(tmp_path) == [] and not (tmp_path / "sending.json").exists()


def test_after_a_kill_the_insert_in_progress_goes_again_as_it_went(tmp_path):
    batches = _batches(4)
    queue = _filled(tmp_path, batches)
    queue.take(max_spans=80, max_bytes=1 << 30, wait=0)
    token, _ = queue.begin(50)  # ... the store takes its inserts; a kill comes before commit()
    queue.close()
    queue.abandon()

    again = _queue(tmp_path)
    again.open()
    first = again.take(max_spans=40, max_bytes=1 << 30, wait=0)  # the same two, whatever the bounds
    assert again.fixed and _same(first, batches[:2])
    assert again.begin(1000) == (token, 50)  # cut as before, whatever max_rows is now
    again.commit()
    rest = again.take(**_ALL)
    assert not again.fixed and _same(rest, batches[2:])
    assert again.begin(1000)[0] != token


def test_an_insert_whose_files_were_partly_removed_was_stored_and_the_rest_of_them_go(tmp_path, caplog):
    caplog.set_level(logging.INFO, "lqo.collector.persistentqueue")
    batches = _batches(4)
    queue = _filled(tmp_path, batches)
    queue.take(max_spans=120, max_bytes=1 << 30, wait=0)
    queue.begin(1000)
    os.unlink(tmp_path / _files(tmp_path)[0])  # commit() cut short by a kill after its first file
    queue.close()
    queue.abandon()

    again = _queue(tmp_path)
    again.open()
    assert "80 spans on disk were stored already" in caplog.text
    assert len(_files(tmp_path)) == 1 and not (tmp_path / "sending.json").exists()
    got = again.take(**_ALL)
    assert not again.fixed and _same(got, batches[3:])


def test_a_record_that_does_not_read_back_costs_only_the_guarantee(tmp_path, caplog):
    batches = _batches(2)
    queue = _filled(tmp_path, batches)
    queue.take(**_ALL)
    token, _ = queue.begin(1000)
    queue.close()
    queue.abandon()
    (tmp_path / "sending.json").write_text('{"files": ["torn')

    again = _queue(tmp_path)
    again.open()
    assert "does not read back" in caplog.text and "may be stored twice" in caplog.text
    assert _same(again.take(**_ALL), batches)  # every span is sent, with a new token
    assert again.begin(1000)[0] != token


def test_an_insert_with_batches_kept_in_memory_has_no_record(tmp_path):
    directory = tmp_path / "q"
    queue = _queue(directory)
    queue.open()
    first, second = _batches(2)
    assert queue.put(first, timeout=1)
    directory.rename(tmp_path / "away")  # the volume went away for a moment: kept in memory
    assert queue.put(second, timeout=1)
    (tmp_path / "away").rename(directory)
    got = queue.take(**_ALL)
    assert _same(got, [first, second])
    queue.begin(1000)  # a record would name one file of two: none at all
    assert not (directory / "sending.json").exists()
    queue.commit()
    assert _files(directory) == []


# -- the store ---------------------------------------------------------------------------------------

def _spans(n: int) -> list[bytes]:
    """``n`` OTLP requests of 40 spans each, half of them GenAI calls."""
    from workload import make_request

    return [make_request(40, seed=100 + i, now_ns=time.time_ns()).SerializeToString() for i in range(n)]


def _counts(ch_server: Any) -> dict[str, int]:
    """Rows in the spans table, distinct span ids, GenAI calls, and the calls the roll-ups count."""
    db = ch_server.database
    sql = (f"SELECT (SELECT count() FROM {db}.otel_traces), (SELECT uniqExact(SpanId) FROM {db}.otel_traces), "
           f"(SELECT count() FROM {db}.otel_traces_genai), (SELECT sum(Calls) FROM {db}.otel_traces_genai_1m)")
    values = ch_server.reader.query(sql, "TSV").bytes().split()
    return dict(zip(("spans", "distinct", "genai", "rolled_up"), (int(v) for v in values), strict=True))


def _wait_for(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_kill_between_the_insert_and_its_files_removal_stores_each_span_once(make_collector, ch_server, tmp_path):
    directory = tmp_path / "storage"
    queue_dir = directory / "exporter_clickhouse"
    overrides = _storage_overrides(ch_server, directory)
    overrides["service"]["queue"] = {"min_batch_spans": 200, "batch_timeout": "10s"}  # one insert of all
    ch_server.hold_insert_replies = True  # the store takes the insert; the collector never hears back
    c = make_collector(overrides)
    for body in _spans(5):
        assert post(f"{c.http_url}/v1/traces", body, "application/x-protobuf")[0] == 200
    _wait_for(lambda: _counts(ch_server)["spans"] == 200)
    assert (queue_dir / "sending.json").exists() and len(_files(queue_dir)) == 1
    c.proc.send_signal(signal.SIGKILL)
    c.proc.wait(30)
    ch_server.hold_insert_replies = False
    ch_server.replies_released.set()

    c.start()  # the same directory: the file goes again, with the same token
    _wait_for(lambda: not _files(queue_dir) and not (queue_dir / "sending.json").exists())
    assert "200 spans in 1 batches queued on disk by an earlier run" in c.log()
    assert _counts(ch_server) == {"spans": 200, "distinct": 200, "genai": 100, "rolled_up": 100}


@pytest.mark.parametrize("storage", [False, True])
def test_inserts_whose_replies_are_lost_are_stored_once(make_collector, ch_server, tmp_path, storage):
    overrides = _storage_overrides(ch_server, tmp_path / "storage")
    if not storage:  # the queue in memory: its tries while the collector runs carry the same token
        del overrides["exporters"]["clickhouse"]["sending_queue"]["storage"]
        overrides.pop("extensions")
        overrides["service"].pop("extensions")
    ch_server.lose_insert_replies = True
    c = make_collector(overrides)
    for body in _spans(3):
        assert post(f"{c.http_url}/v1/traces", body, "application/x-protobuf")[0] == 200
    _wait_for(lambda: _counts(ch_server)["spans"] >= 120)
    time.sleep(0.5)  # a few more tries, each answered with an error
    assert "retryable failure" in c.log()
    ch_server.lose_insert_replies = False
    _wait_for(lambda: 'lqo_exporter_sent_spans_total{exporter="clickhouse"} 120.0' in c.metrics())  # heard back
    assert _counts(ch_server) == {"spans": 120, "distinct": 120, "genai": 60, "rolled_up": 60}


def test_an_older_store_learns_to_store_a_batch_sent_twice_once(ch_server):
    """Tables made by a version before tokens get the setting by which they remember them."""
    from lqo.collector.exporters.clickhouse.factory import (
        ClickHouseExporter,
        ClickHouseExporterConfig,
    )
    from lqo.collector.model.spanbatch import SpanBatch

    spec = SchemaSpec(database=ch_server.database)
    for statement in spec.statements():
        ch_server.writer.query(statement.replace(", non_replicated_deduplication_window = 1000", ""))
    exporter = ClickHouseExporter(ClickHouseExporterConfig(endpoint=ch_server.endpoint, database=ch_server.database))
    exporter.start()
    try:
        engines = dict(line.split("\t", 1) for line in ch_server.reader.query(
            f"SELECT name, engine_full FROM system.tables WHERE database = '{ch_server.database}' "
            "AND engine LIKE '%MergeTree'", "TSVRaw").bytes().decode().splitlines())
        assert sorted(engines) == sorted(spec.token_tables())
        assert all("non_replicated_deduplication_window = 1000" in engine for engine in engines.values())
        batch = SpanBatch.concat(_batches(2))
        for token in ("t-0-80", "t-0-80", "u-0-80"):
            batch.insert_token = token
            assert exporter.export(batch).status.name == "SUCCESS"
        assert _counts(ch_server) == {"spans": 160, "distinct": 80, "genai": 80, "rolled_up": 80}
    finally:
        exporter.shutdown()


def test_every_table_written_with_the_spans_remembers_tokens():
    for spec in (SchemaSpec(), SchemaSpec(cluster_name="prod")):
        creates = {m.group(1): s for s in spec.statements()
                   if (m := re.match(r"CREATE TABLE IF NOT EXISTS `[^`]+`\.`([^`]+)`", s))}
        assert sorted(creates) == sorted(spec.token_tables())
        assert all("non_replicated_deduplication_window = 1000" in s for s in creates.values())


_EMBEDDED = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from workload import make_request
from lqo.collector.exporters.clickhouse.factory import ClickHouseExporter, ClickHouseExporterConfig
from lqo.collector.model.otlp import decode_protobuf
from lqo.collector.model.spanbatch import SpanBatch
from lqo.collector.persistentqueue import PersistentBatchQueue
from lqo.collector.telemetry import SelfTelemetry

store, directory = sys.argv[1], Path(sys.argv[2])
exporter = ClickHouseExporter(ClickHouseExporterConfig(endpoint="embedded://" + store))
exporter.start()
queue = PersistentBatchQueue("exporter/clickhouse", 10_000, 1 << 30, SelfTelemetry(), directory, "clickhouse")
queue.open()
if not len(queue):  # the first run: two batches queued, sent, and a kill before commit()
    for i in range(2):
        queue.put(decode_protobuf(make_request(40, seed=i).SerializeToString()).batch, timeout=1)
batch = SpanBatch.concat(queue.take(max_spans=10_000, max_bytes=1 << 30, wait=0))
batch.insert_token = queue.begin(10_000)[0] + "-0-" + str(len(batch))
assert exporter.export(batch).status.name == "SUCCESS"
if queue.fixed:
    queue.commit()
print(exporter.backend.query(
    "SELECT (SELECT count() FROM otel_traces), (SELECT count() FROM otel_traces_genai), "
    "(SELECT sum(Calls) FROM otel_traces_genai_1m)", "TSVRaw").decode().split())
exporter.shutdown()
"""


def test_the_embedded_store_stores_a_batch_sent_again_after_a_kill_once(tmp_path):
    """The same on the embedded engine, in processes of their own (chdb opens one store per
    process): the first sends two batches and exits before its queue forgets them."""
    bench = Path(__file__).resolve().parents[2] / "bench"
    args = [str(tmp_path / "store"), str(tmp_path / "queue"), str(bench)]
    runs = [subprocess.run([sys.executable, "-c", _EMBEDDED, *args], capture_output=True, text=True, timeout=180)
            for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    assert [run.stdout.strip() for run in runs] == ["['80', '40', '40']"] * 2
    assert _files(tmp_path / "queue") == [] and not (tmp_path / "queue" / "sending.json").exists()


def test_nothing_taken_nothing_recorded(tmp_path):
    queue = _queue(tmp_path)
    queue.open()
    assert not queue.fixed
    assert queue.begin(1000)[0]  # nothing taken: a token, and no record
    assert not (tmp_path / "sending.json").exists()
