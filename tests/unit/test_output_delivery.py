"""The output producer's delivery future: one per send, resolved once librdkafka has reported
every message, failed with the first error; reports may come before or after the send has
queued its last message."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.worker.output import Delivery


async def test_resolves_only_after_every_report() -> None:
    delivery = Delivery(asyncio.get_running_loop())
    delivery.report(None, None)  # type: ignore[arg-type]
    delivery.expect(3)
    await asyncio.sleep(0)
    assert not delivery.future.done()
    delivery.report(None, None)  # type: ignore[arg-type]
    delivery.report(None, None)  # type: ignore[arg-type]
    await asyncio.wait_for(delivery.future, 1.0)


async def test_reports_before_the_last_message_is_queued_resolve_at_expect() -> None:
    """Small sends are often delivered before ``send`` returns: ``expect`` resolves them."""
    delivery = Delivery(asyncio.get_running_loop())
    for _ in range(2):
        delivery.report(None, None)  # type: ignore[arg-type]
    assert not delivery.future.done()
    delivery.expect(2)
    assert delivery.future.done()
    assert delivery.future.result() is None


async def test_the_first_error_fails_the_send() -> None:
    delivery = Delivery(asyncio.get_running_loop())
    delivery.expect(3)
    delivery.report(None, None)  # type: ignore[arg-type]
    delivery.report(KafkaError(KafkaError._MSG_TIMED_OUT), None)  # type: ignore[arg-type]
    delivery.report(KafkaError(KafkaError._PURGE_QUEUE), None)  # type: ignore[arg-type]
    with pytest.raises(KafkaException) as failure:
        await asyncio.wait_for(delivery.future, 1.0)
    assert failure.value.args[0].code() == KafkaError._MSG_TIMED_OUT
