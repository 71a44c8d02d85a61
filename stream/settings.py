"""The one settings object: read from the environment once, at start-up, and passed to everything else.

Each setting is declared once, as one field of ``Settings``: its environment variable, its default (written as
it would be in the environment, which is what the README shows), its meaning and its bounds; the field's type
says how the text is parsed. pydantic-settings reads the variables and validates them; ``from_env`` turns the
first error into a message that names the variable. This module only parses: the stages' configurations are
built from a ``Settings`` where the worker is wired (``stream.stages``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from stream.core.calendar import Calendar, parse_trailing, parse_window_size, size_label
from stream.core.events import Kind
from stream.core.funnel import DEFAULT_FUNNEL
from stream.core.money import RateTable, parse_rate_table
from stream.core.timeutil import format_duration, is_zero_duration, parse_duration_ms
from stream.core.windows import DAY, Windows

# Why KPI_PROCESSING_GUARANTEE=exactly_once is refused: what faust-streaming 0.15.3 does with Kafka transactions, as
# tests against Apache Kafka 4.4 showed (two workers: one exits on ProducerSendError within seconds; the KPI and
# dead-letter topics hold no transaction markers while the internal topics do).
EXACTLY_ONCE_REFUSED = (
    "Faust (faust-streaming 0.15.3) puts each record in the Kafka transaction of the partition it is sent to, not "
    "of the input partition it was made from, whose offsets commit in a transaction of their own: a worker that "
    "does not own every partition cannot send at all (it stops with \"ProducerSendError: No transaction producer "
    "found\"), and a crash between two of those commits loses or repeats input. Records to topics the worker does "
    "not consume (the KPI and dead-letter topics) go outside any transaction, so a read_committed reader sees "
    "records of work that was rolled back. at_least_once (the default) gives exact final KPIs after crashes: every "
    "result is idempotent")
# Largest accepted event: inside an internal message its JSON text takes up to twice its size.
MAX_EVENT_BYTES_LIMIT = 256 * 1024

# The variables ``Settings.from_env`` reads, while it reads them (None: the process environment).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("settings_environ", default=None)

# Variables of earlier versions that no longer have an effect; a deployment that still sets one is told so
# rather than left to believe it is in force.
REMOVED = {
    "KPI_BATCH_INTERVAL": "batches end as soon as no more events are waiting (KPI_BATCH_MAX caps their size)",
}
# KPI_ variables that are not settings of the service but are read by the checkout's own tools, each for a reason
# of its own: not warned about as unknown (``unknown_variables``).
NOT_SETTINGS = {
    "KPI_VENV": "the dev script's virtual environment folder (default .venv)",
    "KPI_KAFKA_CACHE": "where `kpi-stream kafka` keeps the Apache Kafka release it fetched "
                       "(stream.brokers.apache_kafka)",
    "KPI_TEST_BROKER": "the integration tests' broker, kafka or tansu (tests/conftest.py)",
    "KPI_PROPERTY_EXAMPLES": "how many examples each property test tries (tests/pipeline)",
    "KPI_TEST_FLOOD_DISTINCT": "how many distinct labels the resource test floods the worker with (tests/integration)",
}


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def setting(variable: str, default: str, meaning: str, *, ge: int | None = None, le: int | None = None,
            secret: bool = False) -> Any:
    """One setting's field.

    Args:
        variable: the environment variable it is read from.
        default: its value when the variable is unset, as text, parsed like a value that is set.
        meaning: what it does (the README's settings table shows it).
        ge: smallest accepted value (whole numbers).
        le: largest accepted value (whole numbers).
        secret: never shown or logged: left out of ``repr``, masked by ``describe``, redacted from logs.

    Returns:
        The field; typed ``Any`` because the default is text while the field holds the parsed value.
    """
    return Field(default, validation_alias=variable, description=meaning, ge=ge, le=le, repr=not secret)


def _variable(info: ValidationInfo) -> str:
    assert info.field_name is not None  # always set for a field's validator
    return str(Settings.model_fields[info.field_name].validation_alias)


def _boolean(value: str, info: ValidationInfo) -> bool:
    # Not pydantic's bool: it also takes t/f/y/n, which this setting never accepted.
    if value.lower() in ("true", "1", "yes", "on"):
        return True
    if value.lower() in ("false", "0", "no", "off"):
        return False
    raise SettingsError(f"{_variable(info)}={value!r} is not true or false")


def _duration(value: str, info: ValidationInfo) -> int:
    try:
        return parse_duration_ms(value)
    except ValueError as exc:
        raise SettingsError(f"{_variable(info)}: {exc}") from None


def _duration_or_zero(value: str, info: ValidationInfo) -> int:
    return 0 if is_zero_duration(value) else _duration(value, info)


def _distinct_items(value: str, info: ValidationInfo, parse: Callable[[str], int], what: str) -> list[int]:
    """A comma-separated list, each item parsed; refused, naming the setting, unless all differ."""
    var = _variable(info)
    items = []
    for part in value.split(","):
        try:
            items.append(parse(part))
        except ValueError as exc:
            raise SettingsError(f"{var}: {exc}") from None
    if len(set(items)) != len(items):
        raise SettingsError(f"{var} must list distinct {what}")
    return items


def _window_sizes(value: str, info: ValidationInfo) -> tuple[int, ...]:
    return Windows.of(tuple(_distinct_items(value, info, parse_window_size, "sizes")), Calendar("UTC")).sizes


def _trailing_days(value: str, info: ValidationInfo) -> tuple[int, ...]:
    return tuple(sorted(_distinct_items(value, info, parse_trailing, "lengths"))) if value.strip() else ()


def _time_zone(value: str, info: ValidationInfo) -> str:
    name = value.strip()
    try:
        Calendar(name)
    except ValueError as exc:
        raise SettingsError(f"{_variable(info)}: {exc}") from None
    return name


_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _week_start(value: str, info: ValidationInfo) -> int:
    day = value.strip().lower()
    if day not in _WEEKDAYS:
        raise SettingsError(f"{_variable(info)}: {value!r} is not a day of the week: one of {', '.join(_WEEKDAYS)}")
    return _WEEKDAYS.index(day)


def _funnel(value: str, info: ValidationInfo) -> tuple[str, ...]:
    stages = tuple(s.strip() for s in value.split(",") if s.strip())
    if (len(stages) < 2 or stages[0] != "lead" or len(set(stages)) != len(stages)
            or not set(stages) <= set(DEFAULT_FUNNEL)):
        raise SettingsError(f"{_variable(info)}={value!r} must start with lead and list distinct stages among "
                            f"{', '.join(DEFAULT_FUNNEL)}")
    return stages


def _names(value: str) -> frozenset[str]:
    return frozenset(filter(None, (name.strip() for name in value.split(","))))


def _fraction(value: str, info: ValidationInfo) -> Decimal | None:
    if not value:
        return None
    try:
        fraction = Decimal(value)
    except InvalidOperation:
        raise SettingsError(f"{_variable(info)}={value!r} is not a number") from None
    if not fraction.is_finite() or not 0 < fraction <= 1:
        raise SettingsError(f"{_variable(info)}={value!r} must be a fraction above 0 and at most 1")
    return fraction


def _currency(value: str, info: ValidationInfo) -> str:
    if len(value) != 3 or not value.isalpha():
        raise SettingsError(f"{_variable(info)}={value!r} is not an ISO 4217 code")
    return value.upper()


def _rates(value: str, info: ValidationInfo) -> RateTable | None:
    currency = info.data.get("reporting_currency")
    if currency is None:
        return None  # the currency was refused, and that error is the one reported
    try:
        return parse_rate_table(currency, value)
    except ValueError as exc:
        raise SettingsError(f"{_variable(info)}: {exc}") from None


def _guarantee(value: str, info: ValidationInfo) -> str:
    if value.lower() == "exactly_once":
        raise SettingsError(f"{_variable(info)}=exactly_once is refused: {EXACTLY_ONCE_REFUSED}; unset it or set "
                            "at_least_once")
    return value.lower()


def _store(value: str, info: ValidationInfo) -> str:
    if not value:
        raise SettingsError(f"{_variable(info)} must not be empty")
    if value not in ("memory://", "disk://"):
        raise SettingsError(
            f"{_variable(info)}={value!r} is not supported: use memory:// or disk://. Faust's own RocksDB store "
            "(rocksdb://) files each write under the partition of the stream event being processed, and the "
            "agents write whole batches of several partitions at once, so their state would land in the wrong "
            "partitions")
    return value


# The kinds of setting: how the text of a variable becomes a value. Values are stripped first (Settings._strip).
Name = Annotated[str, Field(min_length=1)]
Switch = Annotated[bool, BeforeValidator(_boolean)]
Duration = Annotated[int, BeforeValidator(_duration)]
DurationOrZero = Annotated[int, BeforeValidator(_duration_or_zero)]
WindowSizes = Annotated[tuple[int, ...], BeforeValidator(_window_sizes)]
TrailingDays = Annotated[tuple[int, ...], BeforeValidator(_trailing_days)]
TimeZone = Annotated[str, BeforeValidator(_time_zone)]
WeekStart = Annotated[int, BeforeValidator(_week_start)]
Funnel = Annotated[tuple[str, ...], BeforeValidator(_funnel)]
Names = Annotated[frozenset[str], BeforeValidator(_names)]
Fraction = Annotated[Decimal | None, BeforeValidator(_fraction)]
Currency = Annotated[str, BeforeValidator(_currency)]
Rates = Annotated[RateTable, BeforeValidator(_rates)]
SecurityProtocol = Annotated[Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], BeforeValidator(str.upper)]
SaslMechanism = Annotated[Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], BeforeValidator(str.upper)]
ProcessingGuarantee = Annotated[Literal["at_least_once"], BeforeValidator(_guarantee)]
Store = Annotated[str, BeforeValidator(_store)]
LogLevel = Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(str.lower)]


class Settings(BaseSettings):
    """Every tunable of the service, already parsed and checked."""

    # Read only the variables declared here, by their exact names, and from nothing but the environment given to
    # from_env (no .env file, no secrets directory); defaults go through the same parsing as set values; a value
    # is text for the field's type to parse (enable_decoding off: pydantic-settings would take `1h,1d` for JSON).
    model_config = SettingsConfigDict(frozen=True, case_sensitive=True, validate_default=True, extra="ignore",
                                      enable_decoding=False)

    bootstrap_servers: str = setting(
        "KAFKA_BOOTSTRAP_SERVERS", "",
        "Kafka bootstrap servers (host:port,...). Empty: `kpi-stream demo` starts a local broker.")
    security_protocol: SecurityProtocol = setting(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    sasl_mechanism: SaslMechanism = setting(
        "KAFKA_SASL_MECHANISM", "PLAIN", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    sasl_username: str = setting("KAFKA_SASL_USERNAME", "", "SASL user name.")
    sasl_password: str = setting("KAFKA_SASL_PASSWORD", "", "SASL password (never logged or shown).", secret=True)
    ssl_ca_file: str = setting(
        "KAFKA_SSL_CA_FILE", "", "PEM file of the CA that signed the brokers' certificates.")
    ssl_cert_file: str = setting(
        "KAFKA_SSL_CERT_FILE", "", "PEM client certificate, for brokers that require one.")
    ssl_key_file: str = setting("KAFKA_SSL_KEY_FILE", "", "PEM client key, for brokers that require one.")
    app_id: Name = setting(
        "KPI_APP_ID", "leadgen-kpi", "Faust app id: the consumer group and the prefix of internal topics and tables.")
    web_host: Name = setting("KPI_WEB_HOST", "127.0.0.1", "Address the HTTP server (`/metrics`) binds to.")
    web_port: int = setting("KPI_WEB_PORT", "6066", "Port of the HTTP server that serves `/metrics`.", ge=0, le=65535)
    window_sizes: WindowSizes = setting(
        "KPI_WINDOW_SIZES", "1h,1d",
        "Tumbling event-time window sizes, laid out in `KPI_TIMEZONE`: durations that divide a day (`15m`, `1h`, "
        "`6h`) or are whole days (`1d`, `7d`), and the calendar's `1w`, `1mo`, `1q`, `1y`. Hours follow the local "
        "clock (the repeated hour of a fall-back night is two windows); days, weeks, months, quarters and years "
        "start at local midnight (a day is 23 or 25 hours when the clocks change).")
    trailing_days: TrailingDays = setting(
        "KPI_TRAILING_DAYS", "",
        "Trailing windows, in whole local days (`7d,30d,90d`): the last N days, ending at each local midnight of "
        "`KPI_TIMEZONE` and advancing a day at a time, the current one open. Folded from the `1d` windows, which "
        "must be among `KPI_WINDOW_SIZES`; cohort conversion has none. Empty: no trailing windows.")
    timezone: TimeZone = setting(
        "KPI_TIMEZONE", "UTC",
        "The reporting time zone (an IANA name: `America/New_York`, `Asia/Kolkata`): where days, weeks, months, "
        "quarters and years start, and the offset of the window bounds in KPI records.")
    week_start: WeekStart = setting(
        "KPI_WEEK_START", "monday", "The day `1w` windows start on (`monday` … `sunday`).")
    allowed_lateness_ms: DurationOrZero = setting(
        "KPI_ALLOWED_LATENESS", "10m", "How long after its end (in event time) a window still accepts events.")
    funnel: Funnel = setting("KPI_FUNNEL", ",".join(DEFAULT_FUNNEL), "The funnel stages, in order.")
    reporting_currency: Currency = setting("KPI_REPORTING_CURRENCY", "USD", "Currency all money is reported in.")
    rates: Rates = setting(
        "KPI_EXCHANGE_RATES", "",
        "Rates to the reporting currency, e.g. `EUR=1.08,GBP=1.27` (1 EUR = 1.08 USD). Other currencies are "
        "rejected as `unknown_currency`.")
    topic_page_views: Name = setting("KPI_TOPIC_PAGE_VIEWS", "page-views", "Input topic of page views.")
    topic_leads: Name = setting("KPI_TOPIC_LEADS", "leads", "Input topic of new leads.")
    topic_stage_changes: Name = setting("KPI_TOPIC_STAGE_CHANGES", "stage-changes", "Input topic of stage changes.")
    topic_spend: Name = setting("KPI_TOPIC_SPEND", "spend", "Input topic of spend.")
    topic_dead_letters: Name = setting("KPI_TOPIC_DEAD_LETTERS", "kpi-dead-letters", "Dead-letter topic.")
    kpi_topic_prefix: str = setting(
        "KPI_TOPIC_PREFIX", "kpi-", "Prefix of the KPI output topics (`kpi-<family>`).")
    partitions: int = setting(
        "KPI_PARTITIONS", "4",
        "Partitions of the topics this service creates (internal topics, tables, and any missing input or output "
        "topic).", ge=1, le=10_000)
    replication_factor: int = setting(
        "KPI_REPLICATION_FACTOR", "1", "Replication factor of topics this service creates.", ge=1, le=100)
    campaign_labels: Names = setting(
        "KPI_CAMPAIGN_LABELS", "",
        "Campaigns that keep their own `campaign` label on /metrics (comma-separated). Empty: the first "
        "KPI_CAMPAIGN_LABEL_LIMIT campaigns seen keep theirs.")
    campaign_label_limit: int = setting(
        "KPI_CAMPAIGN_LABEL_LIMIT", "20",
        "With no allow-list, how many campaigns keep their label; the rest are `other`.", ge=0, le=10_000)
    targets_file: str = setting(
        "KPI_TARGETS_FILE", "",
        "A TOML file of targets (README \"Targets and pacing\"): per KPI, period and dimensions, at least or at "
        "most a value. The worker reports each one's attainment and pacing (topic `kpi-targets`, gauges "
        "`leadgen_target_*`), and the cost-per-lead alert reads its cost-per-lead targets. Checked at start; empty: "
        "no targets.")
    value_limit: int = setting(
        "KPI_VALUE_LIMIT", "500",
        "KPI topics: how many channels (campaigns, pages, owners) of one window keep their own records per KPI "
        "family; the values after that are folded into `other`. Bounds memory when a source floods distinct "
        "values.", ge=1, le=100_000)
    dedup_retention_ms: Duration = setting(
        "KPI_DEDUP_RETENTION", "24h",
        "How long (event time, behind the watermark) an event_id is remembered for deduplication.")
    unknown_lead_timeout_ms: Duration = setting(
        "KPI_UNKNOWN_LEAD_TIMEOUT", "1h",
        "How long (event time) a stage change waits for its lead before it is dead-lettered as `unknown_lead`.")
    cohort_window_ms: Duration = setting(
        "KPI_COHORT_WINDOW", "90d",
        "Cohort conversion: how long after entering a stage a lead's next stage still counts.")
    attribution_lookback_ms: Duration = setting(
        "KPI_ATTRIBUTION_LOOKBACK", "90d", "Page views up to this long before a lead was created are its touches.")
    attribution_half_life_ms: Duration = setting(
        "KPI_ATTRIBUTION_HALF_LIFE", "7d", "Half-life of the time-decay attribution model.")
    touch_limit: int = setting(
        "KPI_TOUCH_HISTORY_LIMIT", "100", "Touches kept per visitor (the latest); bounds the state a bot can make.",
        ge=1, le=100_000)
    churn_rate: Fraction = setting(
        "KPI_CHURN_RATE", "",
        "Share of customers lost per period (e.g. `0.03` a month). With KPI_GROSS_MARGIN it enables customer "
        "lifetime value and payback period; empty: off.")
    gross_margin: Fraction = setting(
        "KPI_GROSS_MARGIN", "", "Gross margin as a fraction (e.g. `0.8`); see KPI_CHURN_RATE.")
    idle_partition_timeout_ms: Duration = setting(
        "KPI_IDLE_PARTITION_TIMEOUT", "10s",
        "Processing time after which a caught-up input partition (nothing left to read, no new event) stops "
        "holding the watermark back and advances with the clock. A partition with messages still unread never "
        "counts as idle, however long its fetches take (a backlog read unevenly, a broker that stalls).")
    max_future_skew_ms: Duration = setting(
        "KPI_MAX_FUTURE_SKEW", "7d",
        "Events whose `ts` is further ahead of the processing clock are rejected as `invalid_field`: one event "
        "stamped in year 9999 would otherwise carry its partition's event time, and with it every window, years "
        "ahead.")
    max_event_bytes: int = setting(
        "KPI_MAX_EVENT_BYTES", "65536",
        "Larger input messages are rejected as `too_large`. At most 262144: an accepted event travels inside the "
        "pipeline's internal messages, which must stay under the 1 MB a Kafka message may have by default.",
        ge=64, le=MAX_EVENT_BYTES_LIMIT)
    batch_max: int = setting(
        "KPI_BATCH_MAX", "5000",
        "Most events an agent takes in one batch. A batch ends sooner, as soon as no more events are waiting, so "
        "it never holds an event back for company.", ge=1, le=100_000)
    stream_buffer: int = setting(
        "KPI_STREAM_BUFFER", "4096",
        "Most messages waiting in an agent's queue before its partitions stop being fetched (Faust's default). An "
        "agent takes what waits in its queue as one batch, so this bounds the ingest agent's batches: 256 held it "
        "to about 11,000 events/s, a delivery round trip per 256 events. The memory is bounded by "
        "`KPI_STREAM_BUFFER_BYTES`.", ge=1, le=100_000)
    stream_buffer_bytes: int = setting(
        "KPI_STREAM_BUFFER_BYTES", "1048576",
        "Most bytes of messages waiting in an agent's queue before its partitions stop being fetched, besides "
        "`KPI_STREAM_BUFFER`'s bound in messages; a single larger message still gets in. Bounds the memory a "
        "backlog of internal messages takes.", ge=1024, le=1 << 30)
    fetch_max_wait_ms: Duration = setting(
        "KPI_FETCH_MAX_WAIT", "100ms",
        "Longest a consumer fetch waits for data on an idle topic (Faust hard-codes 1.5 s); bounds the latency of "
        "each hop of the pipeline.")
    verify_changelog_end: Switch = setting(
        "KPI_VERIFY_CHANGELOG_END", "true",
        "Before restoring a table, read past the end offset the broker reports for each changelog partition and "
        "restore up to the last record actually there (`true`), or trust the reported offset (`false`). Needed on "
        "brokers that under-report end offsets (Tansu). Apache Kafka reports them right (35 restores in a test "
        "run, none corrected), yet with `false` one run in four of the two-worker test on Kafka hung in recovery "
        "(a changelog record never delivered), not understood: it stays on. Costs about two fetch waits per "
        "rebalance.")
    idempotent_producer: Switch = setting(
        "KPI_IDEMPOTENT_PRODUCER", "true",
        "The worker's producer is idempotent (`acks=all`, sequence numbers): a send retried after the broker's "
        "answer was lost (a broker stall, a leader change) is written once. Apache Kafka 4.4 answered sends with "
        "NOT_LEADER after a 20 s stall (the node fences itself), and a retried send it had written is otherwise "
        "written twice. The embedded Tansu broker refuses idempotent producers: `kpi-stream demo` turns this off "
        "for it. A worker whose broker refuses one stops at start with status 78, naming this setting.")
    watermark_interval_ms: Duration = setting(
        "KPI_WATERMARK_INTERVAL", "500ms", "How often input progress is sent downstream.")
    record_interval_ms: DurationOrZero = setting(
        "KPI_RECORD_INTERVAL", "500ms",
        "Least processing time between two records of one KPI key. A key's first change after a quiet interval "
        "goes out at once, its later changes together once the interval since its last record has passed (at the "
        "next batch of its cell partition, which gets one at least every interval plus a `KPI_WATERMARK_INTERVAL`, "
        "traffic or not), and a window's final record at once. A busy key (the current hour's all-traffic page "
        "views) changes with nearly every batch: sending each revision was most of the live worker's sends. The "
        "`/metrics` gauges are not held. 0 sends every change at once.")
    processing_guarantee: ProcessingGuarantee = setting(
        "KPI_PROCESSING_GUARANTEE", "at_least_once",
        "`at_least_once`, the only value accepted: every result is idempotent, so input read again after a crash "
        "changes no final KPI. `exactly_once` (Kafka transactions) is refused: Faust puts each record in the "
        "transaction of the partition it is sent to, not of the input it was made from, so a worker that does not "
        "own every partition cannot send, input offsets and their records commit apart, and the KPI and "
        "dead-letter records go outside any transaction.")
    store: Store = setting(
        "KPI_STORE", "disk://",
        "Where the tables' keys and values live: `disk://` (RocksDB files under KPI_DATA_DIR with the changelog "
        "offset they hold: a restarted worker reads only the changelog past it, and worker memory holds only the "
        "stages' indexes) or `memory://` (Python dicts, restored from the changelogs at every start). Faust's "
        "`rocksdb://` is refused: it files each write under the partition of the current stream event, and the "
        "agents write batches of several.")
    data_dir: Name = setting(
        "KPI_DATA_DIR", "./kpi-data",
        "Directory of the `disk://` store's files; keep it on a volume that outlives the worker. Workers sharing it "
        "each take a directory per table no other worker holds, kept for the next worker there.")
    standby_replicas: int = setting(
        "KPI_STANDBY_REPLICAS", "1",
        "Workers besides a partition's owner that keep a copy of its tables warm by reading their changelogs, so "
        "that a failover reads only the changelog's last records, not all of it. Costs each of them the fetches "
        "and the store space of those partitions; 0 turns it off.", ge=0, le=10)
    local_state_max_age_ms: Duration = setting(
        "KPI_LOCAL_STATE_MAX_AGE", "20h",
        "Oldest `disk://` files a worker reuses; older ones are rebuilt from the changelogs. Keep it below the "
        "changelogs' `delete.retention.ms` (Kafka's default: 24 h), the time compaction keeps a tombstone.")
    session_timeout_ms: Duration = setting(
        "KPI_SESSION_TIMEOUT", "6s", "Consumer group session timeout (group joins wait about half of it).")
    heartbeat_interval_ms: Duration = setting(
        "KPI_HEARTBEAT_INTERVAL", "1s", "Consumer group heartbeat interval.")
    stop_timeout_ms: Duration = setting(
        "KPI_STOP_TIMEOUT", "30s",
        "Longest a worker takes to stop on SIGTERM or SIGINT. It normally stops within seconds, its last batches "
        "delivered and committed; when it cannot (Kafka unreachable, so its last sends never complete), it exits "
        "with status 75 at this timeout, and the input it had not committed is read again after a restart.")
    log_level: LogLevel = setting("KPI_LOG_LEVEL", "info", "Log level: debug, info, warning or error.")

    @model_validator(mode="before")
    @classmethod
    def _strip(cls, values: Any) -> Any:
        """Surrounding blanks are not part of a value (``KPI_WEB_PORT=" 8080 "`` is 8080)."""
        if not isinstance(values, dict):
            return values
        return {name: value.strip() if isinstance(value, str) else value for name, value in values.items()}

    @model_validator(mode="after")
    def _trailing_needs_days(self) -> Settings:
        """Trailing windows are folded from the daily ones."""
        if self.trailing_days and DAY not in self.window_sizes:
            raise SettingsError(f"KPI_TRAILING_DAYS needs 1d among KPI_WINDOW_SIZES (the trailing windows are "
                                f"folded from the days); KPI_WINDOW_SIZES lists "
                                f"{','.join(size_label(size) for size in self.window_sizes)}")
        return self

    @property
    def input_topics(self) -> dict[Kind, str]:
        """Input topic name per event kind."""
        return {Kind.PAGE_VIEW: self.topic_page_views, Kind.LEAD: self.topic_leads,
                Kind.STAGE_CHANGE: self.topic_stage_changes, Kind.SPEND: self.topic_spend}

    def kpi_topic(self, family: str) -> str:
        """Output topic of a KPI family."""
        return f"{self.kpi_topic_prefix}{family}"

    def secrets(self) -> list[str]:
        """The values that must never be shown or logged."""
        return [value for name in sorted(SECRET_FIELDS) if (value := getattr(self, name))]

    def describe(self) -> dict[str, Any]:
        """The settings as shown to people: secrets masked."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in SECRET_FIELDS:
                value = "***" if value else ""
            elif isinstance(value, RateTable):
                value = {"reporting_currency": value.reporting_currency,
                         "rates": {code: str(rate) for code, rate in value.rates.items()}}
            elif name.endswith("_ms") and isinstance(value, int):
                value = format_duration(value)
            elif name.endswith("_ms"):
                value = [format_duration(size) for size in value]
            elif name == "window_sizes":
                value = [size_label(size) for size in value]
            elif name == "trailing_days":
                value = [f"{days}d" for days in value]
            elif name == "week_start":
                value = _WEEKDAYS[value]
            elif isinstance(value, frozenset):
                value = sorted(value)
            elif isinstance(value, Decimal):
                value = str(value)
            shown[name] = value
        return shown

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check every setting, from ``environ`` only (default: the process environment).

        Raises:
            SettingsError: naming the first variable with a value that cannot be used.
        """
        env = os.environ if environ is None else environ
        for var, why in REMOVED.items():
            if var in env:
                raise SettingsError(f"{var} is no longer a setting: {why}; unset it")
        token = _ENVIRON.set(env)
        try:
            return cls()
        except ValidationError as exc:
            raise _settings_error(exc, env) from None
        finally:
            _ENVIRON.reset(token)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Values given to the constructor, then the variables ``from_env`` reads (the process environment by
        default): no .env file and no secrets directory, which a worker would otherwise read unannounced."""
        environ = _ENVIRON.get()
        return init_settings, _Variables(settings_cls, os.environ if environ is None else environ)


class _Variables(PydanticBaseSettingsSource):
    """The settings' variables, read from a given mapping: each setting's text under its variable's name (the
    fields parse it; nothing is decoded as JSON)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable = str(field.validation_alias)
        return self.environ.get(variable), variable, False

    def __call__(self) -> dict[str, Any]:
        found = {}
        for name, field in self.settings_cls.model_fields.items():
            value, variable, _ = self.get_field_value(field, name)
            if value is not None:
                found[variable] = value
        return found


SECRET_FIELDS = frozenset(name for name, field in Settings.model_fields.items() if not field.repr)
# name -> (environment variable, default, meaning), in declaration order: the README's settings table, the
# variables a worker's environment passes on.
ENVIRONMENT: dict[str, tuple[str, str, str]] = {
    name: (str(field.validation_alias), str(field.default), str(field.description))
    for name, field in Settings.model_fields.items()
}
_FIELD_OF_VARIABLE = {var: name for name, (var, _, _) in ENVIRONMENT.items()}


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each ``KPI_`` variable of ``environ`` (default: the process environment) that is no setting,
    naming the setting closest to it: pydantic-settings reads only the variables it knows, so a misspelt one
    (``KPI_WINDOW_SIZE``) would otherwise be left out without a word. None for the variables of ``NOT_SETTINGS``,
    nor for those of ``REMOVED``, which ``Settings.from_env`` refuses.
    """
    env = os.environ if environ is None else environ
    known = _FIELD_OF_VARIABLE.keys() | NOT_SETTINGS.keys() | REMOVED.keys()
    # Compared without their KPI_ or KAFKA_ prefix, which would make every name look alike (KPI_FOO and
    # KPI_STORE), and in capitals: names are case-sensitive, and kpi_web_port is KPI_WEB_PORT mistyped.
    by_rest = {var.split("_", 1)[1]: var for var in _FIELD_OF_VARIABLE}
    warnings = []
    for name in sorted(env):
        if not name.upper().startswith("KPI_") or name in known:
            continue
        closest = difflib.get_close_matches(name.upper().split("_", 1)[1], list(by_rest), n=1)
        hint = f"did you mean {by_rest[closest[0]]}?" if closest else "no setting has a similar name"
        warnings.append(f"{name} is not a setting and has no effect: {hint}")
    return warnings


def _settings_error(exc: ValidationError, environ: Mapping[str, str]) -> SettingsError:
    """The first of pydantic's errors, worded as this service words a bad setting; secrets are never shown."""
    error = exc.errors()[0]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, SettingsError):
        return cause
    var = str(error["loc"][0])
    name = _FIELD_OF_VARIABLE[var]
    field = Settings.model_fields[name]
    raw = "***" if name in SECRET_FIELDS else environ.get(var, str(field.default)).strip()
    kind = error["type"]
    if kind == "string_too_short":
        return SettingsError(f"{var} must not be empty")
    if kind in ("int_parsing", "int_from_float", "int_type"):
        return SettingsError(f"{var}={raw!r} is not a whole number")
    if kind in ("greater_than_equal", "less_than_equal"):
        low, high = _bounds(field)
        return SettingsError(f"{var}={error['input']} is outside {low}..{high}")
    if kind == "literal_error":
        return SettingsError(f"{var}={raw!r} is not one of {', '.join(get_args(field.annotation))}")
    return SettingsError(f"{var}={raw!r}: {error['msg']}")


def _bounds(field: FieldInfo) -> tuple[int, int]:
    low = next(item.ge for item in field.metadata if hasattr(item, "ge"))
    high = next(item.le for item in field.metadata if hasattr(item, "le"))
    return low, high
