"""The worker's Faust table class: a key's changelog partition without the producer's metadata.

Our tables route their changelog by key (``use_partitioner=True``: a batch mixes partitions).
Faust 0.15.3 then leaves the partition to its producer, and picks it *synchronously* when a key
is set (``send_soon(eager_partitioning=True)`` -> ``Producer.key_partition`` -> aiokafka's
``_partition``), from whatever topic metadata that producer has cached; it never waits for it.
The producer fetched its metadata when it started, before Faust created the changelog topics,
and refreshes it only every ``producer_metadata_max_age_ms`` (5 minutes) or when a send adds a
topic. So on a fresh deployment the metadata could lack ``ledgers-changelog``, and every
ledger write raised ``TypeError: 'NoneType' object is not iterable``: each reconciler batch of
the worker's first minutes failed with a traceback and was retried event by event, and its
ledgers were never stored (seen in 2 of 5 runs of tests/integration/test_demo.py). Here the
partition is computed as the producer would, by the app's partitioner
(:class:`streams.worker.output.KeyPartitioner`) over the table's partition count, which is the
changelog's: no metadata is needed. The send itself still waits for the metadata (aiokafka's
``send`` does), so a changelog record is never lost to the race either.
"""

from __future__ import annotations

from typing import Any

import faust


class KeyRoutedTable(faust.Table[Any, Any]):
    """A Faust table whose key-routed changelog partition is chosen without metadata."""

    def partition_for_key(self, key: Any) -> int | None:
        if not self.use_partitioner:
            partition: int | None = super().partition_for_key(key)
            return partition
        partitions = list(range(self.partitions or self.app.conf.topic_partitions))
        # The app's producer partitioner (streams/worker/runtime.py), exactly what Faust's
        # producer would call; Faust types it as a method of its settings (see runtime.py).
        conf: Any = self.app.conf
        return int(conf.producer_partitioner(key, partitions, partitions))
