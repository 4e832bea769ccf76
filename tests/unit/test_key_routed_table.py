"""A table write on a worker whose producer has no metadata for the changelog topic yet (a
fresh deployment: Faust creates the changelogs after its producer started) picks the record's
partition without that metadata, the one the producer's partitioner would pick."""

from __future__ import annotations

from typing import Any

import faust
import pytest

from streams.settings import Settings
from streams.worker.app import create_app
from streams.worker.tables import KeyRoutedTable

KEYS = [b"england-premier-league", b"england-premier-league:2015-08-08:bournemouth:aston-villa"]


def _app() -> tuple[faust.App, Any]:
    return create_app(Settings.from_env({"TIPSTREAM_DEV_MODE": "1"}))


async def test_every_table_of_the_worker_routes_keys_as_the_runtime_does() -> None:
    app, runtime = _app()
    tables = list(app.tables.values())
    assert {t.name for t in tables} == {"ledgers", "league-books"}
    for table in tables:
        assert isinstance(table, KeyRoutedTable)
        assert table.use_partitioner
        assert [table.partition_for_key(k) for k in KEYS] == [
            runtime.partition_for(k) for k in KEYS
        ]


async def test_a_changelog_write_needs_no_metadata_of_the_changelog_topic() -> None:
    """What failed every reconciler batch of a fresh worker: the producer's cached metadata
    lacks the changelog, so its synchronous partition choice raised a TypeError."""
    app, runtime = _app()
    ledgers = app.tables["ledgers"]
    # Faust's aiokafka producer as its start builds it, before any metadata is fetched.
    faust_producer: Any = app.producer
    producer = faust_producer._producer = faust_producer._new_producer()
    changelog = ledgers.changelog_topic.get_topic_name()
    assert producer._metadata.partitions_for_topic(changelog) is None
    with pytest.raises(TypeError, match="not iterable"):  # Faust's own route, as it failed
        app.producer.key_partition(changelog, KEYS[1])
    sent = ledgers.send_changelog(ledgers.partition_for_key(KEYS[1]), KEYS[1], b"{}")
    assert sent.message.partition == runtime.partition_for(KEYS[1])
