"""Faust's aiokafka transport with a short fetch wait, registered as ``trc-kafka://``.

Faust hard-codes a 1.5 s fetch wait for its stream consumer. A broker that
does not answer a long poll the moment data arrives (Tansu does not) then
holds events for up to that long; measured here, a p99 of ~500 ms per hop
with 1.5 s and ~15 ms with 100 ms. Kafka answers early either way, so the
shorter wait costs it only a few more empty fetches on idle partitions.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["SCHEME", "Transport"]

SCHEME = "trc-kafka"
FETCH_MAX_WAIT_MS = 100


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by start(); no public knob
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
