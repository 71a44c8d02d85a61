"""Plain Kafka clients (confluent-kafka) for admin work, and the connection settings both clients share."""

from __future__ import annotations

import ssl
import time
from typing import Any

import faust
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from stream.core.kpis import FAMILIES
from stream.settings import Settings


class TopicError(RuntimeError):
    """Topics could not be created or described."""


def confluent_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings for the configured cluster, security options passed through."""
    config: dict[str, Any] = {"bootstrap.servers": settings.bootstrap_servers,
                              "security.protocol": settings.security_protocol.lower()}
    if settings.security_protocol.startswith("SASL"):
        config.update({"sasl.mechanism": settings.sasl_mechanism, "sasl.username": settings.sasl_username,
                       "sasl.password": settings.sasl_password})
    if settings.ssl_ca_file:
        config["ssl.ca.location"] = settings.ssl_ca_file
    if settings.ssl_cert_file:
        config["ssl.certificate.location"] = settings.ssl_cert_file
    if settings.ssl_key_file:
        config["ssl.key.location"] = settings.ssl_key_file
    return config


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """The same security options in the form Faust's aiokafka transport takes."""
    context = None
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.ssl_ca_file or None)
        if settings.ssl_cert_file:
            context.load_cert_chain(settings.ssl_cert_file, settings.ssl_key_file or None)
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(username=settings.sasl_username, password=settings.sasl_password,
                                     mechanism=settings.sasl_mechanism, ssl_context=context)
    if context is not None:
        return faust.SSLCredentials(context)
    return None


# Largest message the worker's producer sends (faust's default is 1,000,000): dead letters of input messages
# near Kafka's default 1 MB limit are larger than that.
MAX_REQUEST_BYTES = 4 * 1024 * 1024


def internal_topic(settings: Settings, name: str) -> str:
    """Internal topics are named after the app id, so a new app id never reads an old one's records."""
    return f"{settings.app_id}-{name}"


def topic_plan(settings: Settings) -> dict[str, dict[str, str]]:
    """Every topic the service reads or writes (but Faust's changelogs), with its configuration."""
    compact = {"cleanup.policy": "compact"}
    plan: dict[str, dict[str, str]] = {topic: {} for topic in settings.input_topics.values()}
    # A dead letter carries the refused message whole (a third more as base64): room for a 1 MB one and more.
    plan[settings.topic_dead_letters] = {"max.message.bytes": str(MAX_REQUEST_BYTES)}
    for family in FAMILIES:
        # The last record per key is the current truth, so KPI topics can be compacted.
        plan[settings.kpi_topic(family)] = compact
    plan[internal_topic(settings, "entities")] = {}
    plan[internal_topic(settings, "cells")] = {}
    return plan


def ensure_topics(settings: Settings, timeout_s: float = 15.0) -> dict[str, int]:
    """Create whatever topic is missing and return the partition count of every planned topic.

    Internal topics must have exactly ``settings.partitions`` partitions.

    Raises:
        TopicError: when the cluster cannot be reached or a topic is unusable.
    """
    problems: list[KafkaError] = []  # what the client met on the way (a refused login, say)
    client: dict[str, Any] = {**confluent_config(settings), "error_cb": problems.append}
    admin = AdminClient(client)
    plan = topic_plan(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            existing = admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic()))).topics
            break
        except Exception as exc:  # librdkafka raises KafkaException with the broker's reason
            admin.poll(0)  # serves the error callbacks
            # A failed metadata request says only "transport failure"; a refused login is the reason to show,
            # at once: waiting longer will not change it.
            refused = [problem.str() for problem in problems if problem.code() == KafkaError._AUTHENTICATION]
            if refused or time.monotonic() >= deadline:
                reason = refused[-1] if refused else str(exc)
                raise TopicError(f"cannot reach Kafka at {settings.bootstrap_servers}: {reason}") from exc
    missing = [NewTopic(name, num_partitions=settings.partitions, replication_factor=settings.replication_factor,
                        config=config) for name, config in plan.items() if name not in existing]
    if missing:
        for name, future in admin.create_topics(missing, request_timeout=timeout_s).items():
            try:
                future.result()
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise TopicError(f"cannot create topic {name}: {exc}") from exc
        existing = admin.list_topics(timeout=timeout_s).topics
    counts = {}
    for name in plan:
        metadata = existing.get(name)
        if metadata is None or not metadata.partitions:
            raise TopicError(f"topic {name} is missing after creation")
        counts[name] = len(metadata.partitions)
    for name in (internal_topic(settings, "entities"), internal_topic(settings, "cells")):
        if counts[name] != settings.partitions:
            raise TopicError(f"internal topic {name} has {counts[name]} partitions but KPI_PARTITIONS is "
                             f"{settings.partitions}: use a new KPI_APP_ID or the matching KPI_PARTITIONS")
    return counts
