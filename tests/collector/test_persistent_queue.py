"""The exporters' persistent sending queue (``sending_queue.storage: file_storage``): spans that
wait for a store that is down survive a stop and a kill of the collector, and are written once
it is back."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import LQO, ROOT, collector_config
from test_bad_input import good_request, grpc_export, post

from lqo.collector.config import ConfigError, load_yaml
from lqo.collector.model.otlp import decode_protobuf
from lqo.collector.model.spanbatch import SpanBatch
from lqo.collector.persistentqueue import PersistentBatchQueue, QueueDirectoryInUse, trim_aside
from lqo.collector.queue import BoundedBatchQueue
from lqo.collector.service import Collector, validate_config
from lqo.collector.telemetry import SelfTelemetry


def _batches(n: int, spans: int = 40) -> list[SpanBatch]:
    from workload import make_request

    return [decode_protobuf(make_request(spans, seed=i).SerializeToString()).batch for i in range(n)]


def _queue(directory: Path, telemetry: SelfTelemetry | None = None, **kwargs) -> PersistentBatchQueue:
    return PersistentBatchQueue("exporter/clickhouse", 10_000, 1 << 30, telemetry or SelfTelemetry(),
                                directory, "clickhouse", **kwargs)


def _filled(directory: Path, batches: list[SpanBatch], **kwargs) -> PersistentBatchQueue:
    queue = _queue(directory, **kwargs)
    queue.open()
    for batch in batches:
        assert queue.put(batch, timeout=1)
    return queue


def _same(got: list[SpanBatch], expected: list[SpanBatch]) -> bool:
    """The same spans, batch by batch: columns, values and the decoded size the bounds count."""
    return len(got) == len(expected) and all(
        g.table.equals(e.table) and g.approx_bytes == e.approx_bytes for g, e in zip(got, expected, strict=True))


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.arrow"))


@pytest.mark.parametrize("compression", ["lz4", "zstd", "none"])
def test_batches_come_back_whole_and_in_order_and_leave_disk_only_when_committed(tmp_path, compression):
    batches = _batches(3)
    queue = _filled(tmp_path, batches, compression=compression)
    assert len(_files(tmp_path)) == 3
    assert not list(tmp_path.glob("*.tmp"))

    first = queue.take(max_spans=40, max_bytes=1 << 30, wait=0)  # one batch's worth
    assert _same(first, batches[:1])
    assert len(_files(tmp_path)) == 3  # taken, not yet written to a store
    queue.commit()
    assert len(_files(tmp_path)) == 2
    rest = queue.take(max_spans=10_000, max_bytes=1 << 30, wait=0)
    assert _same(rest, batches[1:])
    queue.commit()
    assert _files(tmp_path) == []


def test_a_reopened_queue_finds_what_was_left_including_what_was_taken_but_not_committed(tmp_path):
    batches = _batches(4)
    queue = _filled(tmp_path, batches)
    queue.take(max_spans=40, max_bytes=1 << 30, wait=0)
    queue.commit()  # batch 0 was written
    queue.take(max_spans=40, max_bytes=1 << 30, wait=0)  # batch 1 in flight when the collector stopped
    queue.close()
    assert queue.abandon() == 0  # nothing lost: it all stays on disk
    (tmp_path / "00000000000000000099-5-5.arrow.tmp").write_bytes(b"half a write")

    telemetry = SelfTelemetry()
    again = _queue(tmp_path, telemetry)
    again.open()
    assert len(again) == 3
    assert telemetry.registry.get_sample_value("lqo_queue_size", {"queue": "exporter/clickhouse"}) == 120
    assert not list(tmp_path.glob("*.tmp"))  # an interrupted write is cleaned up, never read
    got = again.take(max_spans=10_000, max_bytes=1 << 30, wait=0)
    assert _same(got, batches[1:])
    again.put(batches[0])  # numbering goes on after the files found
    assert _files(tmp_path)[-1].startswith("00000000000000000004-")


def test_one_directory_one_collector(tmp_path):
    first = _queue(tmp_path)
    first.open()
    with pytest.raises(QueueDirectoryInUse, match="in use by another running collector"):
        _queue(tmp_path).open()
    first.close()
    first.abandon()  # releases the lock
    _queue(tmp_path).open()


def test_an_unreadable_file_is_set_aside_and_counted_and_the_rest_is_sent(tmp_path):
    batches = _batches(3)
    queue = _filled(tmp_path, batches)
    queue.close()
    queue.abandon()
    damaged = tmp_path / _files(tmp_path)[1]
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # a torn write
    flipped = tmp_path / _files(tmp_path)[2]  # uncompressed: the span names are in the file as they are
    data = flipped.read_bytes()
    name = batches[2].table.column("SpanName")[0].as_py().encode()
    assert data.count(name) >= 1
    flipped.write_bytes(data.replace(name, b"\xff" + name[1:], 1))  # a flipped bit: not UTF-8 any more
    other_schema = tmp_path / "00000000000000000007-1-10.arrow"  # another version's batch
    with pa.OSFile(str(other_schema), "wb") as sink, pa.ipc.new_file(sink, pa.schema([("x", pa.int8())])) as w:
        w.write_table(pa.table({"x": pa.array([1], pa.int8())}))

    telemetry = SelfTelemetry()
    again = _queue(tmp_path, telemetry)
    again.open()
    got = again.take(max_spans=10_000, max_bytes=1 << 30, wait=0)
    assert _same(got, [batches[0]])
    assert telemetry.registry.get_sample_value(
        "lqo_exporter_send_failed_spans_total", {"exporter": "clickhouse", "reason": "unreadable"}) == 81
    assert sorted(p.name for p in (tmp_path / "unreadable").iterdir()) == sorted(
        [damaged.name, flipped.name, other_schema.name])


def test_unreadable_files_are_kept_within_the_queues_bytes(tmp_path):
    """A failing disk, or a queue of another version's files, must not fill the volume: the
    set-aside folder keeps the newest files within max_bytes (the newest one always)."""
    queue = _filled(tmp_path, _batches(6))
    queue.close()
    queue.abandon()
    names = _files(tmp_path)
    for name in names:  # every file torn
        path = tmp_path / name
        path.write_bytes(path.read_bytes()[:4096])
    telemetry = SelfTelemetry()
    again = PersistentBatchQueue("exporter/clickhouse", 10_000, 3 * 4096 + 100, telemetry, tmp_path, "clickhouse")
    again.open()
    assert again.take(max_spans=10_000, max_bytes=1 << 30, wait=0) == []
    assert sorted(p.name for p in (tmp_path / "unreadable").iterdir()) == names[-3:]
    assert telemetry.registry.get_sample_value(
        "lqo_exporter_send_failed_spans_total", {"exporter": "clickhouse", "reason": "unreadable"}) == 6 * 40
    trim_aside(tmp_path / "unreadable", "exporter/clickhouse", 1)
    assert sorted(p.name for p in (tmp_path / "unreadable").iterdir()) == names[-1:]


def test_a_batch_that_cannot_be_written_is_kept_in_memory(tmp_path, caplog):
    directory = tmp_path / "q"
    queue = _queue(directory)
    queue.open()
    shutil.rmtree(directory)  # the volume went away under the collector
    batches = _batches(2)
    for batch in batches:
        assert queue.put(batch, timeout=1)
    assert "could not write 1 batch(es)" in caplog.text  # logged once, not once per batch
    got = queue.take(max_spans=10_000, max_bytes=1 << 30, wait=0)
    assert _same(got, batches)
    queue.put(batches[0])
    queue.close()
    assert queue.abandon() == 40  # what only memory held is lost at shutdown, and said so


def test_bounds_count_what_waits_on_disk(tmp_path):
    queue = PersistentBatchQueue("exporter/x", 100, 1 << 30, SelfTelemetry(), tmp_path, "x")
    queue.open()
    a, b, c = _batches(3)
    assert queue.offer(a) and queue.offer(b)
    assert not queue.offer(c)  # 120 > 100 spans
    assert not queue.put(c, timeout=0.05)
    queue.take(max_spans=40, max_bytes=1 << 30, wait=0)
    assert queue.offer(c)


def test_the_memory_queue_is_unchanged_by_the_hooks():
    queue = BoundedBatchQueue("pipeline/traces", 100, 1 << 30, SelfTelemetry())
    a, b = _batches(2)
    assert queue.offer(a) and queue.put(b, timeout=0.1)
    assert queue.take(max_spans=100, max_bytes=1 << 30, wait=0) == [a, b]
    queue.put(a)
    queue.close()
    assert queue.abandon() == 40


# -- the collector ---------------------------------------------------------------------------------

def _storage_overrides(ch_server, directory: Path, **queue) -> dict:
    return {
        "extensions": {"file_storage": {"directory": str(directory)}},
        "exporters": {"clickhouse": {
            "endpoint": ch_server.endpoint, "database": ch_server.database,
            "sending_queue": {"storage": "file_storage", **queue},
            "batch": {"max_rows": 1000, "flush_interval": "50ms"},
            "retry_on_failure": {"initial_interval": "50ms", "max_interval": "100ms"},
        }},
        "service": {"extensions": ["file_storage"], "shutdown_timeout": 2},
    }


def _send_spans(collector, requests: int, spans: int = 25) -> int:
    for i in range(requests):
        body = good_request(spans, name=f"queued-{i}").SerializeToString()
        if i % 2:
            grpc_export(collector.grpc_endpoint, body)
        else:
            assert post(f"{collector.http_url}/v1/traces", body, "application/x-protobuf")[0] == 200
    return requests * spans


def _on_disk(directory: Path) -> int:
    return sum(int(name.split("-")[1]) for name in _files(directory))


def _wait_on_disk(directory: Path, spans: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _on_disk(directory) < spans:
        time.sleep(0.05)
    assert _on_disk(directory) == spans


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_spans_queued_while_the_store_is_down_survive_a_restart(make_collector, ch_server, tmp_path, stop):
    directory = tmp_path / "queue"
    ch_server.fail_inserts = True
    overrides = _storage_overrides(ch_server, directory)
    overrides["service"]["queue"] = {"min_batch_spans": 500, "batch_timeout": "10s"}
    c = make_collector(overrides)
    sent = _send_spans(c, 20)
    _wait_on_disk(directory / "exporter_clickhouse", sent)
    # the pipeline gathers small requests for a persistent queue (a file per batch has a cost)
    assert len(_files(directory / "exporter_clickhouse")) == 1
    if stop == "sigterm":
        assert c.stop() == 0
        assert f"{sent} spans stay queued on disk" in c.log()
        assert "dropped" not in c.log()
    else:
        c.proc.send_signal(signal.SIGKILL)
        c.proc.wait(30)
    assert _on_disk(directory / "exporter_clickhouse") == sent

    ch_server.fail_inserts = False
    c.start()  # the same config and directory
    assert ch_server.wait_spans(sent) == (sent, sent)  # every span, each once
    assert f"{sent} spans in" in c.log() and "queued on disk by an earlier run" in c.log()
    deadline = time.monotonic() + 10
    while _files(directory / "exporter_clickhouse") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _files(directory / "exporter_clickhouse") == []


def test_a_stop_writes_what_the_pipeline_still_held_to_the_queue(make_collector, ch_server, tmp_path):
    """Spans accepted but still in the pipeline (gathered for a batch, in a processor) when SIGTERM
    comes go through the processors into the disk queue, and are stored after the next start."""
    directory = tmp_path / "queue"
    ch_server.fail_inserts = True
    overrides = _storage_overrides(ch_server, directory)
    overrides["processors"] = {"genai_normalize": {}}
    overrides["service"]["pipelines"] = {"traces": {"processors": ["genai_normalize"]}}
    overrides["service"]["queue"] = {"min_batch_spans": 20000, "batch_timeout": "60s"}  # held until the stop
    c = make_collector(overrides)
    sent = _send_spans(c, 8)
    time.sleep(0.5)
    assert _on_disk(directory / "exporter_clickhouse") == 0  # still in the pipeline
    assert c.stop() == 0
    assert _on_disk(directory / "exporter_clickhouse") == sent
    assert f"{sent} spans stay queued on disk" in c.log()

    ch_server.fail_inserts = False
    c.start()
    assert ch_server.wait_spans(sent) == (sent, sent)


def test_with_max_elapsed_time_0_the_exporter_retries_until_the_store_is_back(make_collector, ch_server, tmp_path):
    ch_server.fail_inserts = True
    overrides = _storage_overrides(ch_server, tmp_path / "queue")
    overrides["exporters"]["clickhouse"]["retry_on_failure"]["max_elapsed_time"] = 0
    c = make_collector(overrides)
    sent = _send_spans(c, 4)
    time.sleep(2)  # 20+ failed attempts; a limit of 0 would once have dropped at the first
    ch_server.fail_inserts = False
    assert ch_server.wait_spans(sent) == (sent, sent)
    failed = re.findall(r"^lqo_exporter_send_failed_spans_total\{.*\} (\S+)$", c.metrics(), re.M)
    assert failed and {float(v) for v in failed} == {0.0}


def test_two_collectors_cannot_share_a_queue_directory(make_collector, ch_server, tmp_path):
    overrides = _storage_overrides(ch_server, tmp_path / "shared-queue")
    make_collector(overrides)
    second = make_collector(overrides, start=False)
    with pytest.raises(RuntimeError, match="exited") as failed:
        second.start()
    message = str(failed.value)
    assert "is in use by another running collector" in message and "Traceback" not in message


def test_storage_config_errors_name_the_key(tmp_path):
    base = collector_config(4317, 4318, 8888)
    base["exporters"]["clickhouse"]["sending_queue"] = {"storage": "file_storage"}
    with pytest.raises(ConfigError, match=r"exporters.clickhouse.sending_queue.storage: 'file_storage' is not an "
                                          r"extension the service runs"):
        validate_config(base)

    base["extensions"] = {"bearertokenauth/file_storage": {"token": "t0ken"}}
    base["service"]["extensions"] = ["bearertokenauth/file_storage"]
    base["exporters"]["clickhouse"]["sending_queue"]["storage"] = "bearertokenauth/file_storage"
    with pytest.raises(ValueError, match="is not a storage"):
        Collector(base)

    missing = tmp_path / "absent"
    config = collector_config(4317, 4318, 8888, {
        "extensions": {"file_storage": {"directory": str(missing), "create_directory": False}},
        "exporters": {"clickhouse": {"sending_queue": {"storage": "file_storage"}}},
        "service": {"extensions": ["file_storage"]},
    })
    (tmp_path / "lqo.yaml").write_text(__import__("yaml").safe_dump(config))
    out = subprocess.run([LQO, "collector", "--config", str(tmp_path / "lqo.yaml")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"extensions.file_storage.directory: {missing} does not exist" in out.stderr
    assert "Traceback" not in out.stderr
    assert not os.path.exists(missing)


def test_the_docs_example_is_valid():
    text = (ROOT / "docs" / "configuration.md").read_text()
    section = text.split("### A queue that survives restarts", 1)[1]
    example = load_yaml(section.split("```yaml\n", 1)[1].split("```", 1)[0], "docs", {})
    example["receivers"] = {"otlp": {"protocols": {"grpc": {}}}}
    example["service"]["pipelines"] = {"traces": {"receivers": ["otlp"], "exporters": ["clickhouse"]}}
    built = validate_config(example)
    queue = built.components["exporters"]["clickhouse"].sending_queue
    assert (queue.storage, queue.queue_size, queue.max_bytes) == ("file_storage", 5_000_000, 10 * 1024**3)
    assert built.components["extensions"]["file_storage"].compression == "none"
    Collector(built)  # the storage reference resolves to a storage


def test_two_exporters_never_share_a_queue_directory(tmp_path):
    config = collector_config(4317, 4318, 8888, {
        "extensions": {"file_storage": {"directory": str(tmp_path)}},
        "exporters": {f"clickhouse/{name}": {"endpoint": "embedded://./x", "sending_queue": {"storage": "file_storage"}}
                      for name in ("a b", "a:b")},
        "service": {"extensions": ["file_storage"],
                    "pipelines": {"traces": {"exporters": ["clickhouse/a b", "clickhouse/a:b"]}}},
    })
    with pytest.raises(ValueError, match="rename one"):
        Collector(config)
