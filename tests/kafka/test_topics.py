"""Topic setup fails with a clear message, within its timeout, when no broker answers."""

from __future__ import annotations

import time

import pytest

from stream.brokers.embedded import free_port
from stream.kafka.clients import TopicError, ensure_topics
from stream.settings import Settings


def test_no_broker_is_reported_within_the_timeout() -> None:
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"})
    started = time.monotonic()
    with pytest.raises(TopicError, match=r"cannot reach Kafka at 127\.0\.0\.1:\d+: .*transport failure"):
        ensure_topics(settings, timeout_s=2.0)
    assert 1.5 <= time.monotonic() - started < 10


def test_the_plan_holds_the_tables_changelogs_named_as_faust_names_them_and_compacted() -> None:
    from stream.app import build_app
    from stream.kafka.clients import topic_plan

    settings = Settings.from_env({"KPI_APP_ID": "plan-app", "KPI_STORE": "memory://"})
    app = build_app(settings, dict.fromkeys(settings.input_topics.values(), 1))
    changelogs = {table.changelog_topic.get_topic_name() for table in app.tables.values()}
    plan = topic_plan(settings)
    assert changelogs == {"plan-app-entity-state-changelog", "plan-app-cells-changelog"}
    assert {name: plan.get(name) for name in changelogs} == dict.fromkeys(changelogs, {"cleanup.policy": "compact"})
