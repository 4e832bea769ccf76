"""Faust's RocksDB table store (``rocksdict``), with each key in its own partition's database.

``TIPSTREAM_TABLE_STORE=rocksdb`` keeps a table as one RocksDB database per partition, each
holding the offset of the last changelog record it applied, so a restarted worker reads only
the changelog past it. Faust 0.15.3's store does not work with our agents as it is: its
``Store._set`` takes the database from the partition of the *event being processed*
(``current_event()``), and asserts there is one. Our agents write their tables while handling
a batch, outside Faust's per-event context, so every ledger write failed with a bare
``AssertionError`` (seen in tests/integration/test_table_store.py with the stock store: the
reconciler's batches failed, retried event by event, and the stopped worker's databases held
no ledger). Even with an event, it would be the wrong database: our tables route their
changelog by key (``use_partitioner=True``) and a batch mixes partitions, so a ledger of
partition 2 could land in the database of partition 0, lost when 0 moves to another worker and
stale when it comes back. Here a key goes to the database of the partition its changelog
record goes to, so a partition's database is exactly its changelog partition, wherever it is
opened.
"""

from __future__ import annotations

from typing import Any

from faust.stores import STORES
from faust.stores.rocksdb import Store as RocksDBStore

SCHEME = "tipstream-rocksdb"
"""The store URL scheme (``tipstream-rocksdb://``) under which Faust finds :class:`Store`."""


class Store(RocksDBStore):
    """RocksDB store keyed by the partition of the key, as the changelog is."""

    def _set(self, key: bytes, value: bytes | None) -> None:
        partitions = list(range(self.table.partitions or self.app.conf.topic_partitions))
        # The app's producer partitioner (streams/worker/runtime.py), which routes this key's
        # changelog record; Faust types it as a method of its settings (see runtime.py).
        conf: Any = self.app.conf
        partition = int(conf.producer_partitioner(key, partitions, partitions))
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)


def register() -> str:
    """Make the store known to Faust; its URL."""
    STORES.aliases[SCHEME] = f"{__name__}:Store"
    return f"{SCHEME}://"
