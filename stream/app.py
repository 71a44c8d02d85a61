"""The Faust app: three agents driving the pipeline stages, their tables, the timers, and ``/metrics``.

input topics --ingest--> <app>-entities --entities--> <app>-cells --cells--> kpi-* topics
                   \\--> kpi-dead-letters <--/

This module only wires: the settings into a Faust app (``faust_app``), topics and tables into the stages'
routes, and the stages into agents (``stream.runtime.worker``). Where the rules live:

- the order of each stage's sends, writes and waits: ``stream.pipeline.steps``;
- how a batch is taken, checked, handled and acked: ``stream.runtime.batches``;
- offsets handled, to read again after a rebalance or a jump, and caught up: ``stream.runtime.offsets``;
- every private Faust, mode and aiokafka name relied on: ``stream.runtime.faust_internals``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, cast

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from stream.core.kpis import FAMILIES
from stream.kafka.clients import MAX_REQUEST_BYTES, faust_credentials, internal_topic
from stream.kafka.partitioner import KeyPartitioner
from stream.pipeline.steps import CELL_TABLE, CELLS, DEAD_LETTERS, ENTITIES, ENTITY_TABLE, kpi_route
from stream.runtime.faust_internals import KpiApp, QuietWorker
from stream.runtime.faust_output import Routes, TableView
from stream.runtime.metrics import Metrics
from stream.runtime.worker import Worker
from stream.settings import Settings
from stream.stages import build_stages

# Loggers that write whole message values at DEBUG. Input payloads may hold personal data (e-mail addresses,
# names), so these never log below INFO, whatever KPI_LOG_LEVEL says.
PAYLOAD_LOGGERS = ("faust.topics", "faust.transport.drivers.aiokafka", "aiokafka.producer.producer")
# Topics and tables carry bytes: the stages encode and decode their own messages.
RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def faust_app(settings: Settings) -> KpiApp:
    """The Faust app configured from the settings, without agents."""
    return KpiApp(
        settings.app_id,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        verify_changelog_end=settings.verify_changelog_end,
        idempotent_producer=settings.idempotent_producer,
        stream_buffer_bytes=settings.stream_buffer_bytes,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(settings),
        store="partitioned://" if settings.store == "memory://" else settings.store,  # stream.state.memory.MemoryStore
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        processing_guarantee=settings.processing_guarantee,
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.heartbeat_interval_ms / 1000,
        consumer_auto_offset_reset="earliest",
        producer_linger=0.005,  # faust's default of 0 sends tiny batches
        producer_partitioner=KeyPartitioner(),
        producer_max_request_size=MAX_REQUEST_BYTES,
        table_standby_replicas=settings.standby_replicas,
        local_state_max_age_ms=settings.local_state_max_age_ms,
        # A batch cut short by shutdown was not acked, so it is processed again after the restart; results are
        # idempotent, so there is no need to wait for in-flight events (which hangs when an agent failed).
        stream_wait_empty=False,
        stream_buffer_maxsize=settings.stream_buffer,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        Worker=type("QuietWorker", (QuietWorker,), {"stop_timeout_s": settings.stop_timeout_ms / 1000}),
    )


def build_app(settings: Settings, input_partitions: dict[str, int], registry: CollectorRegistry | None = None,
              clock: Callable[[], float] = time.time) -> faust.App:
    """Create the app with its agents, tables, timers and web page.

    Args:
        settings: the service settings.
        input_partitions: partition count of each input topic (the watermark waits for all of them).
        registry: where metrics are registered (a new one by default).
        clock: processing-time clock in seconds, injected for tests.
    """
    registry = registry or CollectorRegistry()
    for name in PAYLOAD_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    app, n = faust_app(settings), settings.partitions
    tables = {name: cast(faust.Table[bytes, bytes], app.Table(name, key_type=bytes, value_type=bytes, partitions=n))
              for name in (ENTITY_TABLE, CELL_TABLE)}
    routes = Routes(
        topics={ENTITIES: app.topic(internal_topic(settings, "entities"), partitions=n, **RAW),
                CELLS: app.topic(internal_topic(settings, "cells"), partitions=n, **RAW),
                DEAD_LETTERS: app.topic(settings.topic_dead_letters, **RAW)},
        raw_topics={kpi_route(family): settings.kpi_topic(family) for family in FAMILIES},
        tables=tables, producer=app.maybe_start_producer)
    stages = build_stages(settings, input_partitions, TableView(tables[ENTITY_TABLE]), TableView(tables[CELL_TABLE]))
    metrics = Metrics.create(registry, settings.campaign_labels, settings.campaign_label_limit)
    metrics.declare_targets(stages.cells.config.targets)
    Worker(app, settings, stages, routes, inputs=app.topic(*settings.input_topics.values(), **RAW),
           input_kinds={topic: kind for kind, topic in settings.input_topics.items()},
           metrics=metrics, clock=clock).install()

    async def metrics_page(self: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return self.bytes(generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    app.page("/metrics")(metrics_page)
    return app
