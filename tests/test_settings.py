"""Tests for stream.settings: defaults, each kind of bad value, and secret masking in describe()."""

import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from stream.core.events import Kind
from stream.settings import (
    ENVIRONMENT,
    NOT_SETTINGS,
    REMOVED,
    SECRET_FIELDS,
    Settings,
    SettingsError,
    unknown_variables,
)

CHECKOUT = Path(__file__).resolve().parent.parent

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
PASSWORD = "hunter2-S3cret-Xq9"


@pytest.fixture(scope="module")
def defaults():
    return Settings.from_env({})


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bootstrap_servers", ""),
        ("security_protocol", "PLAINTEXT"),
        ("sasl_mechanism", "PLAIN"),
        ("sasl_password", ""),
        ("app_id", "leadgen-kpi"),
        ("web_host", "127.0.0.1"),
        ("web_port", 6066),
        ("window_sizes", (HOUR, DAY)),
        ("allowed_lateness_ms", 10 * MINUTE),
        ("funnel", ("lead", "mql", "sal", "sql", "opportunity", "won")),
        ("topic_page_views", "page-views"),
        ("topic_leads", "leads"),
        ("topic_stage_changes", "stage-changes"),
        ("topic_spend", "spend"),
        ("topic_dead_letters", "kpi-dead-letters"),
        ("kpi_topic_prefix", "kpi-"),
        ("partitions", 4),
        ("replication_factor", 1),
        ("campaign_labels", frozenset()),
        ("campaign_label_limit", 20),
        ("dedup_retention_ms", DAY),
        ("unknown_lead_timeout_ms", HOUR),
        ("idle_partition_timeout_ms", 10 * SECOND),
        ("max_event_bytes", 65_536),
        ("batch_max", 5_000),
        ("stream_buffer", 4096),
        ("stream_buffer_bytes", 1048576),
        ("watermark_interval_ms", 500),
        ("processing_guarantee", "at_least_once"),
        ("store", "disk://"),
        ("data_dir", "./kpi-data"),
        ("standby_replicas", 1),
        ("local_state_max_age_ms", 20 * HOUR),
        ("session_timeout_ms", 6 * SECOND),
        ("heartbeat_interval_ms", SECOND),
        ("log_level", "info"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_default(defaults, name, expected):
    assert getattr(defaults, name) == expected


def test_default_rates(defaults):
    assert defaults.rates.reporting_currency == "USD"
    assert defaults.rates.rates == {}


def test_default_topics(defaults):
    assert defaults.input_topics == {
        Kind.PAGE_VIEW: "page-views",
        Kind.LEAD: "leads",
        Kind.STAGE_CHANGE: "stage-changes",
        Kind.SPEND: "spend",
    }
    assert defaults.kpi_topic("cost-per-lead") == "kpi-cost-per-lead"


@pytest.mark.parametrize(
    ("env", "name", "expected"),
    [
        ({"KPI_WINDOW_SIZES": "1d, 15m,1h"}, "window_sizes", (15 * MINUTE, HOUR, DAY)),
        ({"KPI_WINDOW_SIZES": "2d"}, "window_sizes", (2 * DAY,)),
        ({"KPI_TRAILING_DAYS": "90d, 7d,30"}, "trailing_days", (7, 30, 90)),
        ({"KPI_TRAILING_DAYS": ""}, "trailing_days", ()),
        ({"KPI_WINDOW_SIZES": "30s"}, "window_sizes", (30 * SECOND,)),
        ({"KPI_ALLOWED_LATENESS": "0"}, "allowed_lateness_ms", 0),
        ({"KPI_ALLOWED_LATENESS": "0s"}, "allowed_lateness_ms", 0),
        ({"KPI_ALLOWED_LATENESS": "2h"}, "allowed_lateness_ms", 2 * HOUR),
        ({"KPI_FUNNEL": "lead, mql ,sql"}, "funnel", ("lead", "mql", "sql")),
        ({"KPI_WEB_PORT": " 8080 "}, "web_port", 8080),
        ({"KPI_WEB_PORT": "65535"}, "web_port", 65535),
        ({"KAFKA_SECURITY_PROTOCOL": "sasl_ssl"}, "security_protocol", "SASL_SSL"),
        ({"KPI_LOG_LEVEL": "DEBUG"}, "log_level", "debug"),
        ({"KPI_CAMPAIGN_LABELS": "q4, spring,,q4"}, "campaign_labels", frozenset({"q4", "spring"})),
        ({"KPI_TOPIC_LEADS": "crm.leads"}, "topic_leads", "crm.leads"),
        ({"KPI_VERIFY_CHANGELOG_END": "False"}, "verify_changelog_end", False),
        ({"KPI_VERIFY_CHANGELOG_END": " 1 "}, "verify_changelog_end", True),
    ],
    ids=[
        "sizes-sorted",
        "two-days",
        "trailing-sorted",
        "no-trailing",
        "thirty-seconds",
        "zero-lateness",
        "zero-seconds-lateness",
        "lateness",
        "custom-funnel",
        "port-with-spaces",
        "max-port",
        "protocol-case",
        "log-level-case",
        "campaign-labels",
        "topic",
        "verify-off",
        "verify-on",
    ],
)
def test_override(env, name, expected):
    assert getattr(Settings.from_env(env), name) == expected


def test_rates_and_currency_override():
    settings = Settings.from_env({"KPI_REPORTING_CURRENCY": "eur", "KPI_EXCHANGE_RATES": "USD=0.92,GBP=1.17"})
    assert settings.rates.reporting_currency == "EUR"
    assert settings.rates.rates == {"USD": Decimal("0.92"), "GBP": Decimal("1.17")}


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"KPI_ALLOWED_LATENESS": "ten minutes"}, "KPI_ALLOWED_LATENESS"),
        ({"KPI_VERIFY_CHANGELOG_END": "maybe"}, "KPI_VERIFY_CHANGELOG_END"),
        ({"KPI_DEDUP_RETENTION": "1w"}, "KPI_DEDUP_RETENTION"),
        ({"KPI_UNKNOWN_LEAD_TIMEOUT": "0s"}, "KPI_UNKNOWN_LEAD_TIMEOUT"),
        ({"KPI_BATCH_INTERVAL": "200ms"}, "KPI_BATCH_INTERVAL"),
        ({"KPI_STREAM_BUFFER": "0"}, "KPI_STREAM_BUFFER"),
        ({"KPI_STREAM_BUFFER_BYTES": "1000"}, "KPI_STREAM_BUFFER_BYTES"),
        ({"KPI_WATERMARK_INTERVAL": "-500ms"}, "KPI_WATERMARK_INTERVAL"),  # removed: refused, not ignored
        ({"KPI_IDLE_PARTITION_TIMEOUT": ""}, "KPI_IDLE_PARTITION_TIMEOUT"),
        ({"KPI_WINDOW_SIZES": "7m"}, "KPI_WINDOW_SIZES"),
        ({"KPI_WINDOW_SIZES": "1h,7h"}, "KPI_WINDOW_SIZES"),
        ({"KPI_WINDOW_SIZES": "25h"}, "KPI_WINDOW_SIZES"),
        ({"KPI_WINDOW_SIZES": "1500ms"}, "KPI_WINDOW_SIZES"),
        ({"KPI_WINDOW_SIZES": "1h,1h"}, "KPI_WINDOW_SIZES"),
        ({"KPI_WINDOW_SIZES": "1h,60m"}, "KPI_WINDOW_SIZES"),
        ({"KPI_WINDOW_SIZES": "1d,24h"}, "KPI_WINDOW_SIZES"),
        ({"KPI_TRAILING_DAYS": "7d,7"}, "KPI_TRAILING_DAYS"),
        ({"KPI_TRAILING_DAYS": "1w"}, "KPI_TRAILING_DAYS"),
        ({"KPI_TRAILING_DAYS": "1d"}, "KPI_TRAILING_DAYS"),
        ({"KPI_TRAILING_DAYS": "7d", "KPI_WINDOW_SIZES": "1h,1mo"}, "KPI_TRAILING_DAYS needs 1d"),
        ({"KPI_WINDOW_SIZES": ""}, "KPI_WINDOW_SIZES"),
        ({"KPI_WINDOW_SIZES": "1h,"}, "KPI_WINDOW_SIZES"),
        ({"KPI_FUNNEL": "mql,sql"}, "KPI_FUNNEL"),
        ({"KPI_FUNNEL": "lead"}, "KPI_FUNNEL"),
        ({"KPI_FUNNEL": "lead,mql,mql"}, "KPI_FUNNEL"),
        ({"KPI_FUNNEL": "lead,mql,demo"}, "KPI_FUNNEL"),
        ({"KPI_FUNNEL": "lead,mql,lost"}, "KPI_FUNNEL"),
        ({"KPI_REPORTING_CURRENCY": "DOLLAR"}, "KPI_REPORTING_CURRENCY"),
        ({"KPI_REPORTING_CURRENCY": "U5D"}, "KPI_REPORTING_CURRENCY"),
        ({"KPI_REPORTING_CURRENCY": ""}, "KPI_REPORTING_CURRENCY"),
        ({"KPI_EXCHANGE_RATES": "EUR"}, "KPI_EXCHANGE_RATES"),
        ({"KPI_EXCHANGE_RATES": "EUR=abc"}, "KPI_EXCHANGE_RATES"),
        ({"KPI_EXCHANGE_RATES": "EUR=0"}, "KPI_EXCHANGE_RATES"),
        ({"KPI_EXCHANGE_RATES": "EURO=1.08"}, "KPI_EXCHANGE_RATES"),
        ({"KPI_EXCHANGE_RATES": "EUR=-1"}, "KPI_EXCHANGE_RATES"),
        ({"KPI_WEB_PORT": "http"}, "KPI_WEB_PORT"),
        ({"KPI_WEB_PORT": "65536"}, "KPI_WEB_PORT"),
        ({"KPI_WEB_PORT": "-1"}, "KPI_WEB_PORT"),
        ({"KPI_WEB_PORT": "80.5"}, "KPI_WEB_PORT"),
        ({"KPI_WEB_PORT": ""}, "KPI_WEB_PORT"),
        ({"KPI_PARTITIONS": "0"}, "KPI_PARTITIONS"),
        ({"KPI_MAX_EVENT_BYTES": "63"}, "KPI_MAX_EVENT_BYTES"),
        ({"KPI_MAX_EVENT_BYTES": "262145"}, "KPI_MAX_EVENT_BYTES"),
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
        ({"KPI_PROCESSING_GUARANTEE": "exactly-once"}, "KPI_PROCESSING_GUARANTEE"),
        ({"KPI_LOG_LEVEL": "verbose"}, "KPI_LOG_LEVEL"),
        ({"KPI_APP_ID": "  "}, "KPI_APP_ID"),
        ({"KPI_TOPIC_SPEND": ""}, "KPI_TOPIC_SPEND"),
        ({"KPI_STORE": "rocksdb://"}, "KPI_STORE"),
        ({"KPI_STANDBY_REPLICAS": "-1"}, "KPI_STANDBY_REPLICAS"),
        ({"KPI_STANDBY_REPLICAS": "one"}, "KPI_STANDBY_REPLICAS"),
        ({"KPI_LOCAL_STATE_MAX_AGE": "0"}, "KPI_LOCAL_STATE_MAX_AGE"),
    ],
    ids=[
        "duration-words",
        "verify-not-boolean",
        "duration-weeks",
        "duration-zero",
        "batch-interval-removed",
        "stream-buffer-zero",
        "stream-buffer-bytes-below-1kib",
        "duration-negative",
        "duration-empty",
        "window-7m",
        "window-7h",
        "window-25h",
        "window-fraction-of-second",
        "window-duplicate",
        "window-duplicate-spelled-differently",
        "window-day-twice",
        "trailing-twice",
        "trailing-week",
        "trailing-one-day",
        "trailing-without-days",
        "window-empty",
        "window-trailing-comma",
        "funnel-without-lead",
        "funnel-one-stage",
        "funnel-duplicate",
        "funnel-unknown-stage",
        "funnel-lost",
        "currency-long",
        "currency-digit",
        "currency-empty",
        "rates-no-equals",
        "rates-not-number",
        "rates-zero",
        "rates-code",
        "rates-negative",
        "port-word",
        "port-too-high",
        "port-negative",
        "port-fraction",
        "port-empty",
        "partitions-zero",
        "max-bytes-too-small",
        "max-bytes-too-large-for-an-internal-message",
        "protocol",
        "mechanism",
        "guarantee",
        "log-level",
        "app-id-blank",
        "topic-empty",
        "store-rocksdb",
        "standby-negative",
        "standby-word",
        "local-state-age-zero",
    ],
)
def test_bad_value_names_its_variable(env, variable):
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(env)


def test_settings_error_is_a_value_error():
    assert issubclass(SettingsError, ValueError)


@pytest.mark.parametrize("zero", ["0ms", "0h", "0d"], ids=["0ms", "0h", "0d"])
def test_allowed_lateness_zero_in_any_unit(zero):
    assert Settings.from_env({"KPI_ALLOWED_LATENESS": zero}).allowed_lateness_ms == 0


def test_every_variable_is_read_from_the_given_mapping_only(monkeypatch):
    monkeypatch.setenv("KPI_WEB_PORT", "not-a-port")
    assert Settings.from_env({}).web_port == 6066


def test_environment_variable_names_are_unique():
    names = [var for var, _, _ in ENVIRONMENT.values()]
    assert len(names) == len(set(names))


# ------------------------------------------------------------- describe()


@pytest.fixture(scope="module")
def with_secret():
    return Settings.from_env(
        {
            "KAFKA_SASL_PASSWORD": PASSWORD,
            "KAFKA_SASL_USERNAME": "svc-kpi",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        }
    )


def test_describe_masks_the_password(with_secret):
    shown = with_secret.describe()
    assert with_secret.sasl_password == PASSWORD
    assert shown["sasl_password"] == "***"
    assert shown["sasl_username"] == "svc-kpi"
    rendered = json.dumps(shown, default=str)
    assert PASSWORD not in rendered
    assert PASSWORD not in str(shown)
    assert PASSWORD not in repr(shown)
    assert "hunter2" not in rendered


def test_describe_shows_an_empty_password_as_empty(defaults):
    assert defaults.describe()["sasl_password"] == ""


def test_describe_is_human_readable(defaults):
    shown = defaults.describe()
    assert shown["window_sizes"] == ["1h", "1d"]
    assert shown["allowed_lateness_ms"] == "10m"
    assert shown["watermark_interval_ms"] == "500ms"
    assert shown["rates"] == {"reporting_currency": "USD", "rates": {}}
    assert shown["campaign_labels"] == []
    assert shown["web_port"] == 6066
    assert json.loads(json.dumps(shown))["funnel"] == ["lead", "mql", "sal", "sql", "opportunity", "won"]
    assert set(shown) == set(Settings.model_fields)


def test_repr_does_not_show_the_password(with_secret):
    assert PASSWORD not in repr(with_secret)


def test_a_removed_variable_is_refused_with_what_replaced_it():
    with pytest.raises(SettingsError, match="KPI_BATCH_INTERVAL is no longer a setting: batches end as soon as"):
        Settings.from_env({"KPI_BATCH_INTERVAL": "200ms"})


@pytest.mark.parametrize("store", ["memory://", "disk://"])
def test_the_two_stores_are_accepted(store):
    assert Settings.from_env({"KPI_STORE": store}).store == store


@pytest.mark.parametrize("value", ["exactly_once", "EXACTLY_ONCE", " exactly_once "])
def test_exactly_once_is_refused_naming_the_reason(value):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"KPI_PROCESSING_GUARANTEE": value})
    message = str(refused.value)
    assert message.startswith("KPI_PROCESSING_GUARANTEE=exactly_once is refused: Faust")
    # The reason: records join the transaction of the partition they are sent to, not of the input they came from.
    assert "transaction of the partition it is sent to" in message
    assert "No transaction producer found" in message
    assert "KPI and dead-letter topics" in message
    assert message.endswith("unset it or set at_least_once")


@pytest.mark.parametrize("value", ["at_least_once", "AT_LEAST_ONCE"])
def test_at_least_once_is_accepted(value):
    assert Settings.from_env({"KPI_PROCESSING_GUARANTEE": value}).processing_guarantee == "at_least_once"


def test_the_guarantee_setting_says_exactly_once_is_refused():
    meaning = ENVIRONMENT["processing_guarantee"][2]
    assert "`exactly_once` (Kafka transactions) is refused" in meaning


def test_settings_import_nothing_from_the_pipeline():
    # Settings only parse; the stages' configurations are built where the worker is wired (stream.stages).
    code = "import sys, stream.settings; print(sorted(m for m in sys.modules if m.startswith('stream.pipeline')))"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert shown.strip() == "[]"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KPI_WEB_PORT": "65536"}, "KPI_WEB_PORT=65536 is outside 0..65535"),
        ({"KPI_PARTITIONS": "0"}, "KPI_PARTITIONS=0 is outside 1..10000"),
        ({"KPI_WEB_PORT": " http "}, "KPI_WEB_PORT='http' is not a whole number"),
        ({"KPI_WEB_PORT": "80.5"}, "KPI_WEB_PORT='80.5' is not a whole number"),
        ({"KPI_APP_ID": "  "}, "KPI_APP_ID must not be empty"),
        ({"KPI_STORE": ""}, "KPI_STORE must not be empty"),
        ({"KAFKA_SECURITY_PROTOCOL": "tls"},
         "KAFKA_SECURITY_PROTOCOL='tls' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        ({"KPI_LOG_LEVEL": "Verbose"}, "KPI_LOG_LEVEL='Verbose' is not one of debug, info, warning, error"),
        ({"KPI_VERIFY_CHANGELOG_END": "t"}, "KPI_VERIFY_CHANGELOG_END='t' is not true or false"),
        ({"KPI_REPORTING_CURRENCY": "U5D", "KPI_EXCHANGE_RATES": "EUR"}, "KPI_REPORTING_CURRENCY='U5D' is not an ISO "
         "4217 code"),
        ({"KPI_CHURN_RATE": "2"}, "KPI_CHURN_RATE='2' must be a fraction above 0 and at most 1"),
    ],
    ids=["above-bound", "below-bound", "not-a-number", "fraction", "blank", "empty-store", "choice", "choice-case",
         "boolean", "first-error-wins", "fraction-above-one"],
)
def test_bad_value_message_is_worded_as_before(env, message):
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    assert str(refused.value) == message


def test_no_argument_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("KPI_WEB_PORT", "7070")
    assert Settings.from_env().web_port == 7070


def test_nothing_but_the_given_environment_is_read(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("KPI_WEB_PORT=7070\n")
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({"kpi_web_port": "7070"}).web_port == 6066  # names are case-sensitive, .env unread


def test_settings_are_frozen(defaults):
    with pytest.raises(ValueError, match="frozen"):
        defaults.web_port = 1


def test_every_field_is_a_documented_variable():
    assert list(ENVIRONMENT) == list(Settings.model_fields)
    for var, _, meaning in ENVIRONMENT.values():
        assert var.startswith(("KPI_", "KAFKA_")) and meaning.endswith(".")


def test_the_password_is_the_one_secret(with_secret):
    assert SECRET_FIELDS == {"sasl_password"}
    assert with_secret.secrets() == [PASSWORD]
    assert Settings.from_env({}).secrets() == []


def test_the_reporting_currency_is_shown_on_its_own_too():
    assert Settings.from_env({"KPI_REPORTING_CURRENCY": "gbp"}).describe()["reporting_currency"] == "GBP"


@pytest.mark.parametrize(
    ("variable", "closest"),
    [
        ("KPI_WINDOW_SIZE", "KPI_WINDOW_SIZES"),
        ("KPI_PARTITION", "KPI_PARTITIONS"),
        ("KPI_BATCH_SIZE", "KPI_BATCH_MAX"),
        ("kpi_web_port", "KPI_WEB_PORT"),  # names are case-sensitive
        ("KPI_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
    ],
)
def test_an_unknown_kpi_variable_is_warned_about_naming_the_closest_setting(variable, closest):
    assert unknown_variables({variable: "1h"}) == [
        f"{variable} is not a setting and has no effect: did you mean {closest}?"]


def test_an_unknown_variable_like_no_setting_is_warned_about_too():
    assert unknown_variables({"KPI_FOO": "1"}) == [
        "KPI_FOO is not a setting and has no effect: no setting has a similar name"]


def test_each_unknown_variable_has_its_own_warning():
    warnings = unknown_variables({"KPI_WINDOW_SIZE": "1h", "KPI_FOO": "1", "KPI_WEB_PORT": "80"})
    assert [warning.split()[0] for warning in warnings] == ["KPI_FOO", "KPI_WINDOW_SIZE"]


def test_settings_variables_other_tools_read_and_other_prefixes_give_no_warning():
    env = {var: "1" for var, _, _ in ENVIRONMENT.values()}
    env |= dict.fromkeys(NOT_SETTINGS, "1") | dict.fromkeys(REMOVED, "1")
    env |= {"KAFKA_HEAP_OPTS": "-Xmx1g", "PATH": "/usr/bin", "MY_KPI_NOTE": "1"}
    assert unknown_variables(env) == []


def test_no_argument_looks_for_unknown_variables_in_the_process_environment(monkeypatch):
    monkeypatch.setenv("KPI_WINDOW_SIZE", "1h")
    assert any(warning.startswith("KPI_WINDOW_SIZE ") for warning in unknown_variables())


def test_every_kpi_variable_the_checkout_reads_is_a_setting_or_listed_as_not_one():
    # A new KPI_ variable read by a tool or a test goes into NOT_SETTINGS with why, or every start warns of it.
    reads = re.compile(r"""environ(?:\.get)?[(\[]\s*["'](KPI_\w+)|getenv\(\s*["'](KPI_\w+)|\$\{?(KPI_\w+)""")
    files = [CHECKOUT / "dev", CHECKOUT / "Dockerfile", CHECKOUT / ".ci" / "run"]
    for folder in ("stream", "tests", "deploy"):
        files += [path for path in (CHECKOUT / folder).rglob("*") if path.suffix in (".py", ".sh", ".yml", ".yaml")]
    read = {name for path in files for match in reads.findall(path.read_text()) for name in match if name}
    assert {"KPI_VENV", "KPI_TEST_BROKER", "KPI_KAFKA_CACHE"} <= read  # the pattern finds what it looks for
    assert unknown_variables(dict.fromkeys(read, "1")) == []


def test_the_command_warns_of_an_unknown_variable_at_start_and_goes_on():
    env = {name: value for name, value in os.environ.items() if not name.startswith(("KPI_", "KAFKA_"))}
    env |= {"KPI_WINDOW_SIZE": "1h", "KPI_TEST_BROKER": "tansu"}
    shown = subprocess.run([sys.executable, "-m", "stream", "settings"], env=env, capture_output=True, text=True,
                           check=True)
    assert shown.stderr.splitlines() == [
        "kpi-stream: warning: KPI_WINDOW_SIZE is not a setting and has no effect: did you mean KPI_WINDOW_SIZES?"]
    assert json.loads(shown.stdout)["window_sizes"] == ["1h", "1d"]  # the default, as before
