"""A run's own settings: fresh names so runs never mix, and the environment its workers get."""

from __future__ import annotations

import os
from pathlib import Path

from stream.settings import ENVIRONMENT, Settings


def bench_settings(settings: Settings, run_id: str) -> Settings:
    """The settings with a fresh app id and fresh topic names, so that runs never read each other's data."""
    return settings.model_copy(update={
        "app_id": run_id, "topic_page_views": f"{run_id}-page-views", "topic_leads": f"{run_id}-leads",
        "topic_stage_changes": f"{run_id}-stage-changes", "topic_spend": f"{run_id}-spend",
        "topic_dead_letters": f"{run_id}-kpi-dead-letters", "kpi_topic_prefix": f"{run_id}-kpi-",
        "web_host": "127.0.0.1"})


def settings_env(settings: Settings, web_port: int, data_dir: Path) -> dict[str, str]:
    """The environment of a subprocess that must see ``settings`` (the rest comes from this process)."""
    values = {"bootstrap_servers": settings.bootstrap_servers, "app_id": settings.app_id,
              "topic_page_views": settings.topic_page_views, "topic_leads": settings.topic_leads,
              "topic_stage_changes": settings.topic_stage_changes, "topic_spend": settings.topic_spend,
              "topic_dead_letters": settings.topic_dead_letters, "kpi_topic_prefix": settings.kpi_topic_prefix,
              "partitions": str(settings.partitions), "web_host": settings.web_host, "web_port": str(web_port),
              "data_dir": str(data_dir), "idempotent_producer": str(settings.idempotent_producer).lower(),
              "verify_changelog_end": str(settings.verify_changelog_end).lower()}
    env = {**os.environ, **{ENVIRONMENT[name][0]: value for name, value in values.items()}}
    rates_var = ENVIRONMENT["rates"][0]
    if not env.get(rates_var, "").strip():
        env[rates_var] = "EUR=1.08"  # the traffic model has EUR deals
    return env
