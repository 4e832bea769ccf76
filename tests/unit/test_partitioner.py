"""Output partitions: exactly the ones Kafka's default partitioner picks (co-partitioning)."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from streams.worker.output import KeyPartitioner, murmur2

_RANDOM = random.Random(20261123)
KEYS = [
    *(_RANDOM.randbytes(n) for n in range(0, 130)),
    *(f"england-premier-league:2019-08-{d:02d}:arsenal:chelsea.t{d}".encode() for d in range(40)),
    "ligue-1:2020-09-12:nîmes:saint-étienne".encode(),
    b"\xff\xff\xff\xff\x80",
]


@pytest.mark.parametrize("key", KEYS, ids=lambda key: f"{len(key)}B")
def test_murmur2_is_kafkas(key: bytes) -> None:
    """The faster murmur2 gives aiokafka's (the Java client's) hash for every key length."""
    assert murmur2(key) == aiokafka_murmur2(key)


def test_keys_land_where_the_default_partitioner_puts_them() -> None:
    """Memoised or not, a key's partition is the one aiokafka's default partitioner picks."""
    partitioner, default = KeyPartitioner(), DefaultPartitioner()
    partitions = list(range(6))
    for key in KEYS * 2:  # the second pass reads the cache
        assert partitioner(key, partitions, partitions) == default(key, partitions, partitions)


def test_the_cache_is_bounded() -> None:
    """A stream of new keys never grows the cache past its limit."""
    partitioner = KeyPartitioner()
    partitioner.MAX_KEYS = 10
    for n in range(25):
        partitioner(f"match-{n}".encode(), [0, 1, 2], [0, 1, 2])
    assert len(partitioner._hashes) <= 10
