"""Plain Kafka clients (confluent-kafka) for admin work, and the connection settings both clients share."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterable
from typing import Any

import faust
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from stream.core.kpis import FAMILIES
from stream.pipeline.steps import CELL_TABLE, ENTITY_TABLE
from stream.settings import Settings

log = logging.getLogger(__name__)


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


def producer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings of a plain producer (traffic, the bench's input) on the configured cluster.

    Idempotent where the cluster accepts it (``KPI_IDEMPOTENT_PRODUCER``), else one request in flight: with
    librdkafka's defaults (up to a million requests in flight, retries without limit) a batch retried after a
    lost answer lands after a later one, reordering input into late events, or twice.
    """
    if settings.idempotent_producer:
        return {**confluent_config(settings), "enable.idempotence": True}
    return {**confluent_config(settings), "max.in.flight.requests.per.connection": 1}


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
    """Every topic the service reads or writes, with its configuration."""
    compact = {"cleanup.policy": "compact"}
    plan: dict[str, dict[str, str]] = {topic: {} for topic in settings.input_topics.values()}
    # A dead letter carries the refused message whole (a third more as base64): room for a 1 MB one and more.
    plan[settings.topic_dead_letters] = {"max.message.bytes": str(MAX_REQUEST_BYTES)}
    for family in FAMILIES:
        # The last record per key is the current truth, so KPI topics can be compacted.
        plan[settings.kpi_topic(family)] = compact
    plan[internal_topic(settings, "entities")] = {}
    plan[internal_topic(settings, "cells")] = {}
    # The tables' changelogs, as Faust would make them, but here, where the worker waits until the broker lists
    # them: made by Faust as the worker starts, a changelog could still be missing from the metadata of the
    # group's first assignment on Apache Kafka ("Ignoring missing topic"), and its partitions were then never
    # assigned (seen twice in full test runs: the cells stage never restored, the pipeline stalled).
    for table in (ENTITY_TABLE, CELL_TABLE):
        plan[changelog_topic(settings, table)] = compact
    return plan


def changelog_topic(settings: Settings, table: str) -> str:
    """The changelog of a table, named as Faust names it."""
    return internal_topic(settings, f"{table}-changelog")


def _login(settings: Settings) -> str:
    """Who the worker is to the broker, for error messages."""
    if settings.security_protocol.startswith("SASL"):
        return f"the user {settings.sasl_username or '(none)'} ({settings.sasl_mechanism})"
    return f"this {settings.security_protocol} client"


def _needed(settings: Settings, topic: str) -> str:
    """The ACL that lets the worker see ``topic``: READ on inputs, WRITE on the rest (each implies DESCRIBE)."""
    operation = "READ" if topic in settings.input_topics.values() else "WRITE"
    return f"the {operation} (or CREATE, while it is missing)"


# What a broker answers while the group's coordinator moves (a rolling restart, a leader election, a new cluster
# still creating __consumer_offsets): asked again until the check's deadline.
_COORDINATOR_MOVING = frozenset({KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
                                 KafkaError.NOT_COORDINATOR, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
                                 KafkaError._WAIT_COORD})


def check_group_access(settings: Settings, timeout_s: float = 15.0) -> None:
    """Fail unless the worker may use its consumer group.

    Without an ACL on its group, aiokafka's group coordinator hands the worker's consumer an authorization error
    that Faust never collects: the worker stood ready to start forever, with nothing in its log (measured on
    Kafka 4.4). Reading the group's committed offsets needs DESCRIBE on it, which the READ the worker needs
    implies, so a login with no ACL on the group is caught here.

    The offsets are read by a consumer of the group, not by an ``AdminClient``: librdkafka's admin client, which
    has no group of its own, crashes the process (SIGSEGV in ``rd_kafka_cgrp_op``, librdkafka issue 5040, in
    every release up to 2.16) when the answer is NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE, which brokers
    give while the coordinator moves. A consumer looks its coordinator up again, and is asked again here while
    the answer says the coordinator is moving, until ``timeout_s``; past that, the worker's own consumer meets it.

    Raises:
        TopicError: the broker refused the group to this login.
    """
    consumer = Consumer({**confluent_config(settings), "group.id": settings.app_id, "enable.auto.commit": False,
                         "log_level": 0})
    # Any partition will do: the group's ACL is checked before the partitions are looked at.
    partition = TopicPartition(next(iter(settings.input_topics.values())), 0)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                consumer.committed([partition], timeout=max(0.1, min(2.0, deadline - time.monotonic())))
                return
            except KafkaException as exc:
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                code = error.code() if error is not None else None
                if code == KafkaError.GROUP_AUTHORIZATION_FAILED or _group_refused(consumer):
                    raise _group_refused_error(settings) from exc
                if code not in _COORDINATOR_MOVING or time.monotonic() >= deadline:
                    # Anything else (a broker without this request, say) is the worker's consumer's to meet and
                    # report.
                    log.warning("the consumer group %s could not be checked (%s); starting anyway",
                                settings.app_id, exc)
                    return
            time.sleep(0.1)
    finally:
        consumer.close()


def _group_refused(consumer: Consumer) -> bool:
    """Whether the consumer was told it may not use its group: a refused coordinator lookup reaches the
    application as a consumer error, while the offset request waits for a coordinator."""
    while (message := consumer.poll(0)) is not None:
        error = message.error()
        if error is not None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
            return True
    return False


def _group_refused_error(settings: Settings) -> TopicError:
    return TopicError(f"{_login(settings)} may not use the consumer group {settings.app_id}: it needs "
                      "the READ ACL on that group (`kpi-stream acls` lists them all)")


def prepare_cluster(settings: Settings) -> dict[str, int]:
    """What the worker does on the cluster before Faust starts: create the missing topics, check its group.

    Returns:
        The partition count of every planned topic.

    Raises:
        TopicError: the cluster cannot be reached, a topic is unusable, or the group is refused.
    """
    counts = ensure_topics(settings)
    check_group_access(settings)
    return counts


def _listed(admin: AdminClient, names: Iterable[str], deadline: float) -> dict[str, Any]:
    """The cluster's topic metadata once it lists every one of ``names`` with its partitions, or at ``deadline``.

    Apache Kafka answers CreateTopics once its controller committed the topics, before the broker answering
    metadata requests has them: a listing right after the creation missed a topic just created (measured on
    Kafka 4.4, once in a full test run: "topic …-page-views is missing after creation"). Tansu lists at once.
    """
    while True:
        existing: dict[str, Any] = admin.list_topics(timeout=max(0.5, deadline - time.monotonic())).topics
        if all(name in existing and existing[name].partitions for name in names) or time.monotonic() >= deadline:
            return existing
        time.sleep(0.1)


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
                reason = f"the login of {_login(settings)} was refused: {refused[-1]}" if refused else str(exc)
                raise TopicError(f"cannot reach Kafka at {settings.bootstrap_servers}: {reason}") from exc
    missing = [NewTopic(name, num_partitions=settings.partitions, replication_factor=settings.replication_factor,
                        config=config) for name, config in plan.items() if name not in existing]
    if missing:
        for name, future in admin.create_topics(missing, request_timeout=timeout_s).items():
            try:
                future.result()
            except Exception as exc:
                if "TOPIC_AUTHORIZATION_FAILED" in str(exc):
                    raise TopicError(f"topic {name} is not visible to {_login(settings)} and it may not create it: "
                                     f"it needs {_needed(settings, name)} ACL (`kpi-stream acls` lists them "
                                     "all)") from exc
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise TopicError(f"cannot create topic {name}: {exc}") from exc
        existing = _listed(admin, plan, deadline=time.monotonic() + timeout_s)
    counts = {}
    for name in plan:
        metadata = existing.get(name)
        if metadata is None or not metadata.partitions:
            # Created (or there already), yet not in the metadata after waiting: the authorizer hides it.
            raise TopicError(f"topic {name} is missing after creation: if it exists, {_login(settings)} may not "
                             f"see it and needs {_needed(settings, name)} ACL (`kpi-stream acls` lists them all)")
        counts[name] = len(metadata.partitions)
    for name in (internal_topic(settings, "entities"), internal_topic(settings, "cells"),
                 *(changelog_topic(settings, table) for table in (ENTITY_TABLE, CELL_TABLE))):
        if counts[name] != settings.partitions:
            raise TopicError(f"internal topic {name} has {counts[name]} partitions but KPI_PARTITIONS is "
                             f"{settings.partitions}: use a new KPI_APP_ID or the matching KPI_PARTITIONS")
    return counts
