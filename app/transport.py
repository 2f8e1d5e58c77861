"""Faust's aiokafka transport with a configurable fetch wait, as ``trc-kafka://``.

Faust hard-codes a 1.5 s fetch wait for its stream consumer. A broker that
does not answer a long poll the moment data arrives (Tansu does not) then
holds events for up to that long: measured here, ~500 ms p99 per hop with
1.5 s. The app sets ``FETCH_MAX_WAIT_ATTR`` on the Faust app from the
``fetch_max_wait_ms`` setting.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["FETCH_MAX_WAIT_ATTR", "SCHEME", "Transport"]

SCHEME = "trc-kafka"
FETCH_MAX_WAIT_ATTR = "trc_fetch_max_wait_ms"


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start(); Faust offers no public knob for it.
        consumer._fetch_max_wait_ms = getattr(self.app, FETCH_MAX_WAIT_ATTR, 1500)
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
