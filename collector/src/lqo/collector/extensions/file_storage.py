"""The ``file_storage`` extension: a directory where components keep what must outlive a restart.

As the OpenTelemetry Collector contrib's ``file_storage``: an exporter with
``sending_queue: {storage: file_storage}`` keeps its queue under ``directory``, in a
subdirectory of its own (``exporter_clickhouse``, ``exporter_clickhouse_server``, …).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lqo.collector.components import ComponentContext, Factory, register
from lqo.collector.config import StrictModel
from lqo.collector.persistentqueue import Compression


class FileStorageConfig(StrictModel):
    directory: str = "./.lqo/storage"
    create_directory: bool = True  # false: the directory must exist (a mounted volume)
    # fsync each queued batch and the directory before going on: survives a power loss, not just
    # a killed process, at the cost of a disk flush per batch
    fsync: bool = False
    # of the queued batches' Arrow buffers. none: free while the store keeps up (a file lives about
    # a second, in the page cache) but ~1.3x the decoded bytes on disk; lz4 ~0.45x, zstd ~0.3x, for
    # a longer outage in the same disk, at 1-2 us of CPU per span always (bench/BENCHMARKS.md)
    compression: Compression = "none"


class FileStorage:
    def __init__(self, config: FileStorageConfig, context: ComponentContext) -> None:
        self.config = config
        self.key = f"extensions.{context.component_id}"
        self.directory = Path(config.directory)

    def start(self) -> None:
        where = f"{self.key}.directory: {self.directory}"
        if not self.directory.is_dir():
            if self.directory.exists():
                raise ValueError(f"{where} is not a directory")
            if not self.config.create_directory:
                raise ValueError(f"{where} does not exist; create it or set create_directory: true")
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ValueError(f"{where}: cannot create it: {exc.strerror}") from None
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise ValueError(f"{where}: not writable by this user (uid {os.getuid()})")

    def shutdown(self) -> None:
        pass

    def directory_for(self, kind: str, component_id: str) -> Path:
        """The subdirectory of one component (``kind``: ``exporter``, …), named after its id."""
        return self.directory / re.sub(r"[^A-Za-z0-9_.-]", "_", f"{kind}_{component_id.replace('/', '_')}")


def _create(config: FileStorageConfig, context: ComponentContext) -> FileStorage:
    return FileStorage(config, context)


FACTORY = register("extensions", Factory("file_storage", FileStorageConfig, _create,
                                         provides=frozenset({"storage"})))


def resolve_storage(storage: str | None, key: str, context: ComponentContext) -> FileStorage | None:
    if storage is None:
        return None
    extension = context.extensions.get(storage)
    if extension is None:
        raise ValueError(f"{key}: no extension {storage!r} is running; list it in service.extensions")
    if not callable(getattr(extension, "directory_for", None)):
        raise ValueError(f"{key}: extension {storage!r} is not a storage (use file_storage)")
    return extension  # type: ignore[no-any-return]
