"""The one settings object: read from the environment once, at start-up, and passed to everything else."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from typing import Any

from stream.core.events import Kind
from stream.core.money import RateTable, parse_rate_table
from stream.core.timeutil import format_duration, is_zero_duration, parse_duration_ms

SECRET_FIELDS = frozenset({"sasl_password"})
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
PROCESSING_GUARANTEES = ("at_least_once",)
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

# name -> (environment variable, default, meaning); the README's settings table is generated from this.
ENVIRONMENT: dict[str, tuple[str, str, str]] = {
    "bootstrap_servers": ("KAFKA_BOOTSTRAP_SERVERS", "",
                          "Kafka bootstrap servers (host:port,...). Empty: `kpi-stream demo` starts a local broker."),
    "security_protocol": ("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."),
    "sasl_mechanism": ("KAFKA_SASL_MECHANISM", "PLAIN", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."),
    "sasl_username": ("KAFKA_SASL_USERNAME", "", "SASL user name."),
    "sasl_password": ("KAFKA_SASL_PASSWORD", "", "SASL password (never logged or shown)."),
    "ssl_ca_file": ("KAFKA_SSL_CA_FILE", "", "PEM file of the CA that signed the brokers' certificates."),
    "ssl_cert_file": ("KAFKA_SSL_CERT_FILE", "", "PEM client certificate, for brokers that require one."),
    "ssl_key_file": ("KAFKA_SSL_KEY_FILE", "", "PEM client key, for brokers that require one."),
    "app_id": ("KPI_APP_ID", "leadgen-kpi",
               "Faust app id: the consumer group and the prefix of internal topics and tables."),
    "web_host": ("KPI_WEB_HOST", "127.0.0.1", "Address the HTTP server (`/metrics`) binds to."),
    "web_port": ("KPI_WEB_PORT", "6066", "Port of the HTTP server that serves `/metrics`."),
    "window_sizes": ("KPI_WINDOW_SIZES", "1h,1d", "Tumbling event-time window sizes, UTC-aligned."),
    "allowed_lateness": ("KPI_ALLOWED_LATENESS", "10m",
                         "How long after its end (in event time) a window still accepts events."),
    "funnel": ("KPI_FUNNEL", "lead,mql,sal,sql,opportunity,won", "The funnel stages, in order."),
    "reporting_currency": ("KPI_REPORTING_CURRENCY", "USD", "Currency all money is reported in."),
    "exchange_rates": ("KPI_EXCHANGE_RATES", "",
                       "Rates to the reporting currency, e.g. `EUR=1.08,GBP=1.27` (1 EUR = 1.08 USD). "
                       "Other currencies are rejected as `unknown_currency`."),
    "topic_page_views": ("KPI_TOPIC_PAGE_VIEWS", "page-views", "Input topic of page views."),
    "topic_leads": ("KPI_TOPIC_LEADS", "leads", "Input topic of new leads."),
    "topic_stage_changes": ("KPI_TOPIC_STAGE_CHANGES", "stage-changes", "Input topic of stage changes."),
    "topic_spend": ("KPI_TOPIC_SPEND", "spend", "Input topic of spend."),
    "topic_dead_letters": ("KPI_TOPIC_DEAD_LETTERS", "kpi-dead-letters", "Dead-letter topic."),
    "kpi_topic_prefix": ("KPI_TOPIC_PREFIX", "kpi-", "Prefix of the KPI output topics (`kpi-<family>`)."),
    "partitions": ("KPI_PARTITIONS", "4",
                   "Partitions of the topics this service creates (internal topics, tables, and any missing "
                   "input or output topic)."),
    "replication_factor": ("KPI_REPLICATION_FACTOR", "1", "Replication factor of topics this service creates."),
    "campaign_labels": ("KPI_CAMPAIGN_LABELS", "",
                        "Campaigns that keep their own `campaign` label on /metrics (comma-separated). "
                        "Empty: the first KPI_CAMPAIGN_LABEL_LIMIT campaigns seen keep theirs."),
    "campaign_label_limit": ("KPI_CAMPAIGN_LABEL_LIMIT", "20",
                             "With no allow-list, how many campaigns keep their label; the rest are `other`."),
    "value_limit": ("KPI_VALUE_LIMIT", "500",
                    "KPI topics: how many channels (campaigns, pages, owners) of one window keep their own "
                    "records per KPI family; the values after that are folded into `other`. Bounds memory "
                    "when a source floods distinct values."),
    "dedup_retention": ("KPI_DEDUP_RETENTION", "24h",
                        "How long (event time, behind the watermark) an event_id is remembered for deduplication."),
    "unknown_lead_timeout": ("KPI_UNKNOWN_LEAD_TIMEOUT", "1h",
                             "How long (event time) a stage change waits for its lead before it is dead-lettered "
                             "as `unknown_lead`."),
    "cohort_window": ("KPI_COHORT_WINDOW", "90d",
                      "Cohort conversion: how long after entering a stage a lead's next stage still counts."),
    "attribution_lookback": ("KPI_ATTRIBUTION_LOOKBACK", "90d",
                             "Page views up to this long before a lead was created are its touches."),
    "attribution_half_life": ("KPI_ATTRIBUTION_HALF_LIFE", "7d", "Half-life of the time-decay attribution model."),
    "touch_limit": ("KPI_TOUCH_HISTORY_LIMIT", "100",
                    "Touches kept per visitor (the latest); bounds the state a bot can make."),
    "churn_rate": ("KPI_CHURN_RATE", "",
                   "Share of customers lost per period (e.g. `0.03` a month). With KPI_GROSS_MARGIN it enables "
                   "customer lifetime value and payback period; empty: off."),
    "gross_margin": ("KPI_GROSS_MARGIN", "", "Gross margin as a fraction (e.g. `0.8`); see KPI_CHURN_RATE."),
    "idle_partition_timeout": ("KPI_IDLE_PARTITION_TIMEOUT", "10s",
                               "Processing time after which a caught-up input partition (nothing left to "
                               "read, no new event) stops holding the watermark back and advances with the "
                               "clock. A partition with messages still unread never counts as idle, however "
                               "long its fetches take (a backlog read unevenly, a broker that stalls)."),
    "max_future_skew": ("KPI_MAX_FUTURE_SKEW", "7d",
                        "Events whose `ts` is further ahead of the processing clock are rejected as "
                        "`invalid_field`: one event stamped in year 9999 would otherwise carry its partition's "
                        "event time, and with it every window, years ahead."),
    "max_event_bytes": ("KPI_MAX_EVENT_BYTES", "65536", "Larger input messages are rejected as `too_large`. At "
                        "most 262144: an accepted event travels inside the pipeline's internal messages, which "
                        "must stay under the 1 MB a Kafka message may have by default."),
    "batch_max": ("KPI_BATCH_MAX", "5000",
                  "Most events an agent takes in one batch. A batch ends sooner, as soon as no more events are "
                  "waiting, so it never holds an event back for company."),
    "stream_buffer": ("KPI_STREAM_BUFFER", "256",
                      "Most messages waiting in an agent's queue before its partitions stop being fetched (Faust's "
                      "default is 4096). Internal messages carry up to about a thousand events each, so this bounds "
                      "the memory a backlog takes: 344 MB instead of 503 MB peak replaying a million events."),
    "stream_buffer_bytes": ("KPI_STREAM_BUFFER_BYTES", "1048576",
                            "Most bytes of messages waiting in an agent's queue before its partitions stop being "
                            "fetched, besides `KPI_STREAM_BUFFER`'s bound in messages; a single larger message still "
                            "gets in. Bounds the memory a backlog of internal messages takes."),
    "fetch_max_wait": ("KPI_FETCH_MAX_WAIT", "100ms",
                       "Longest a consumer fetch waits for data on an idle topic (Faust hard-codes 1.5 s); "
                       "bounds the latency of each hop of the pipeline."),
    "verify_changelog_end": ("KPI_VERIFY_CHANGELOG_END", "true",
                             "Before restoring a table, read past the end offset the broker reports for each "
                             "changelog partition and restore up to the last record actually there (`true`), "
                             "or trust the reported offset (`false`). Needed on brokers that under-report end "
                             "offsets (Tansu). Apache Kafka reports them right (35 restores in a test run, none "
                             "corrected), yet with `false` one run in four of the two-worker test on Kafka hung in "
                             "recovery (a changelog record never delivered), not understood: it stays on. Costs "
                             "about two fetch waits per rebalance."),
    "idempotent_producer": ("KPI_IDEMPOTENT_PRODUCER", "true",
                            "The worker's producer is idempotent (`acks=all`, sequence numbers): a send retried "
                            "after the broker's answer was lost (a broker stall, a leader change) is written once. "
                            "Apache Kafka 4.4 answered sends with NOT_LEADER after a 20 s stall (the node fences "
                            "itself), and a retried send it had written is otherwise written twice. The embedded "
                            "Tansu broker refuses idempotent producers: `kpi-stream demo` turns this off for it."),
    "watermark_interval": ("KPI_WATERMARK_INTERVAL", "500ms", "How often input progress is sent downstream."),
    "processing_guarantee": ("KPI_PROCESSING_GUARANTEE", "at_least_once",
                             "`at_least_once`, the only value accepted: every result is idempotent, so input read "
                             "again after a crash changes no final KPI. `exactly_once` (Kafka transactions) is "
                             "refused: Faust puts each record in the transaction of the partition it is sent to, "
                             "not of the input it was made from, so a worker that does not own every partition "
                             "cannot send, input offsets and their records commit apart, and the KPI and "
                             "dead-letter records go outside any transaction."),
    "store": ("KPI_STORE", "memory://",
              "Where the tables' keys and values live: `memory://` (Python dicts) or `disk://` (RocksDB files "
              "under KPI_DATA_DIR, emptied at start and restored from the changelogs like memory, so worker "
              "memory holds only the stages' indexes). Faust's `rocksdb://` is refused: it files each write "
              "under the partition of the current stream event, and the agents write batches of several."),
    "data_dir": ("KPI_DATA_DIR", "./kpi-data", "Directory for table stores that keep files."),
    "session_timeout": ("KPI_SESSION_TIMEOUT", "6s",
                        "Consumer group session timeout (group joins wait about half of it)."),
    "heartbeat_interval": ("KPI_HEARTBEAT_INTERVAL", "1s", "Consumer group heartbeat interval."),
    "stop_timeout": ("KPI_STOP_TIMEOUT", "30s",
                     "Longest a worker takes to stop on SIGTERM or SIGINT. It normally stops within seconds, its "
                     "last batches delivered and committed; when it cannot (Kafka unreachable, so its last sends "
                     "never complete), it exits with status 75 at this timeout, and the input it had not "
                     "committed is read again after a restart."),
    "log_level": ("KPI_LOG_LEVEL", "info", "Log level: debug, info, warning or error."),
}


# Variables of earlier versions that no longer have an effect; a deployment that still sets one is told so
# rather than left to believe it is in force.
REMOVED = {
    "KPI_BATCH_INTERVAL": "batches end as soon as no more events are waiting (KPI_BATCH_MAX caps their size)",
}


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Every tunable of the service, already parsed and checked."""

    bootstrap_servers: str
    security_protocol: str
    sasl_mechanism: str
    sasl_username: str
    sasl_password: str = field(repr=False)
    ssl_ca_file: str
    ssl_cert_file: str
    ssl_key_file: str
    app_id: str
    web_host: str
    web_port: int
    window_sizes_ms: tuple[int, ...]
    allowed_lateness_ms: int
    funnel: tuple[str, ...]
    rates: RateTable
    topic_page_views: str
    topic_leads: str
    topic_stage_changes: str
    topic_spend: str
    topic_dead_letters: str
    kpi_topic_prefix: str
    partitions: int
    replication_factor: int
    campaign_labels: frozenset[str]
    campaign_label_limit: int
    value_limit: int
    dedup_retention_ms: int
    unknown_lead_timeout_ms: int
    cohort_window_ms: int
    attribution_lookback_ms: int
    attribution_half_life_ms: int
    touch_limit: int
    churn_rate: Decimal | None
    gross_margin: Decimal | None
    idle_partition_timeout_ms: int
    max_future_skew_ms: int
    max_event_bytes: int
    batch_max: int
    stream_buffer: int
    stream_buffer_bytes: int
    fetch_max_wait_ms: int
    verify_changelog_end: bool
    idempotent_producer: bool
    watermark_interval_ms: int
    processing_guarantee: str
    store: str
    data_dir: str
    session_timeout_ms: int
    heartbeat_interval_ms: int
    stop_timeout_ms: int
    log_level: str

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
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in SECRET_FIELDS:
                value = "***" if value else ""
            elif item.name == "rates":
                value = {"reporting_currency": value.reporting_currency,
                         "rates": {code: str(rate) for code, rate in value.rates.items()}}
            elif item.name.endswith("_ms") and isinstance(value, int):
                value = format_duration(value)
            elif item.name.endswith("_ms"):
                value = [format_duration(size) for size in value]
            elif isinstance(value, frozenset):
                value = sorted(value)
            elif isinstance(value, Decimal):
                value = str(value)
            shown[item.name] = value
        return shown

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check every setting.

        Raises:
            SettingsError: naming the first variable with a value that cannot be used.
        """
        env = os.environ if environ is None else environ
        for var, why in REMOVED.items():
            if var in env:
                raise SettingsError(f"{var} is no longer a setting: {why}; unset it")
        raw = {name: env.get(var, default).strip() for name, (var, default, _) in ENVIRONMENT.items()}
        return cls(
            bootstrap_servers=raw["bootstrap_servers"],
            security_protocol=_choice(raw, "security_protocol", SECURITY_PROTOCOLS, upper=True),
            sasl_mechanism=_choice(raw, "sasl_mechanism", SASL_MECHANISMS, upper=True),
            sasl_username=raw["sasl_username"],
            sasl_password=raw["sasl_password"],
            ssl_ca_file=raw["ssl_ca_file"],
            ssl_cert_file=raw["ssl_cert_file"],
            ssl_key_file=raw["ssl_key_file"],
            app_id=_nonempty(raw, "app_id"),
            web_host=_nonempty(raw, "web_host"),
            web_port=_integer(raw, "web_port", 0, 65535),
            window_sizes_ms=_window_sizes(raw),
            allowed_lateness_ms=_duration(raw, "allowed_lateness", allow_zero=True),
            funnel=_funnel(raw),
            rates=_rates(raw),
            topic_page_views=_nonempty(raw, "topic_page_views"),
            topic_leads=_nonempty(raw, "topic_leads"),
            topic_stage_changes=_nonempty(raw, "topic_stage_changes"),
            topic_spend=_nonempty(raw, "topic_spend"),
            topic_dead_letters=_nonempty(raw, "topic_dead_letters"),
            kpi_topic_prefix=raw["kpi_topic_prefix"],
            partitions=_integer(raw, "partitions", 1, 10_000),
            replication_factor=_integer(raw, "replication_factor", 1, 100),
            campaign_labels=frozenset(filter(None, (c.strip() for c in raw["campaign_labels"].split(",")))),
            campaign_label_limit=_integer(raw, "campaign_label_limit", 0, 10_000),
            value_limit=_integer(raw, "value_limit", 1, 100_000),
            dedup_retention_ms=_duration(raw, "dedup_retention"),
            unknown_lead_timeout_ms=_duration(raw, "unknown_lead_timeout"),
            cohort_window_ms=_duration(raw, "cohort_window"),
            attribution_lookback_ms=_duration(raw, "attribution_lookback"),
            attribution_half_life_ms=_duration(raw, "attribution_half_life"),
            touch_limit=_integer(raw, "touch_limit", 1, 100_000),
            churn_rate=_fraction(raw, "churn_rate"),
            gross_margin=_fraction(raw, "gross_margin"),
            idle_partition_timeout_ms=_duration(raw, "idle_partition_timeout"),
            max_future_skew_ms=_duration(raw, "max_future_skew"),
            max_event_bytes=_integer(raw, "max_event_bytes", 64, MAX_EVENT_BYTES_LIMIT),
            batch_max=_integer(raw, "batch_max", 1, 100_000),
            stream_buffer=_integer(raw, "stream_buffer", 1, 100_000),
            stream_buffer_bytes=_integer(raw, "stream_buffer_bytes", 1024, 1 << 30),
            fetch_max_wait_ms=_duration(raw, "fetch_max_wait"),
            verify_changelog_end=_boolean(raw, "verify_changelog_end"),
            idempotent_producer=_boolean(raw, "idempotent_producer"),
            watermark_interval_ms=_duration(raw, "watermark_interval"),
            processing_guarantee=_processing_guarantee(raw),
            store=_store(raw),
            data_dir=_nonempty(raw, "data_dir"),
            session_timeout_ms=_duration(raw, "session_timeout"),
            heartbeat_interval_ms=_duration(raw, "heartbeat_interval"),
            stop_timeout_ms=_duration(raw, "stop_timeout"),
            log_level=_choice(raw, "log_level", ("debug", "info", "warning", "error")),
        )


def _var(name: str) -> str:
    return ENVIRONMENT[name][0]


def _processing_guarantee(raw: dict[str, str]) -> str:
    if raw["processing_guarantee"].lower() == "exactly_once":
        raise SettingsError(f"{_var('processing_guarantee')}=exactly_once is refused: {EXACTLY_ONCE_REFUSED}; unset "
                            "it or set at_least_once")
    return _choice(raw, "processing_guarantee", PROCESSING_GUARANTEES)


def _store(raw: dict[str, str]) -> str:
    store = _nonempty(raw, "store")
    if store not in ("memory://", "disk://"):
        raise SettingsError(
            f"{_var('store')}={store!r} is not supported: use memory:// or disk://. Faust's own RocksDB store "
            "(rocksdb://) files each write under the partition of the stream event being processed, and the "
            "agents write whole batches of several partitions at once, so their state would land in the wrong "
            "partitions")
    return store


def _nonempty(raw: dict[str, str], name: str) -> str:
    if not raw[name]:
        raise SettingsError(f"{_var(name)} must not be empty")
    return raw[name]


def _choice(raw: dict[str, str], name: str, options: tuple[str, ...], upper: bool = False) -> str:
    value = raw[name].upper() if upper else raw[name].lower()
    if value not in options:
        raise SettingsError(f"{_var(name)}={raw[name]!r} is not one of {', '.join(options)}")
    return value


def _boolean(raw: dict[str, str], name: str) -> bool:
    value = raw[name].lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise SettingsError(f"{_var(name)}={raw[name]!r} is not true or false")


def _integer(raw: dict[str, str], name: str, low: int, high: int) -> int:
    try:
        value = int(raw[name])
    except ValueError:
        raise SettingsError(f"{_var(name)}={raw[name]!r} is not a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{_var(name)}={value} is outside {low}..{high}")
    return value


def _duration(raw: dict[str, str], name: str, allow_zero: bool = False) -> int:
    if allow_zero and is_zero_duration(raw[name]):
        return 0
    try:
        return parse_duration_ms(raw[name])
    except ValueError as exc:
        raise SettingsError(f"{_var(name)}: {exc}") from None


def _fraction(raw: dict[str, str], name: str) -> Decimal | None:
    if not raw[name]:
        return None
    try:
        value = Decimal(raw[name])
    except InvalidOperation:
        raise SettingsError(f"{_var(name)}={raw[name]!r} is not a number") from None
    if not value.is_finite() or not 0 < value <= 1:
        raise SettingsError(f"{_var(name)}={raw[name]!r} must be a fraction above 0 and at most 1")
    return value


def _window_sizes(raw: dict[str, str]) -> tuple[int, ...]:
    sizes = []
    for part in raw["window_sizes"].split(","):
        try:
            size = parse_duration_ms(part)
        except ValueError as exc:
            raise SettingsError(f"{_var('window_sizes')}: {exc}") from None
        if size % 1000:
            raise SettingsError(f"{_var('window_sizes')}: {part.strip()!r} is not a whole number of seconds")
        if 86_400_000 % size and size % 86_400_000:
            # Windows are aligned to the epoch; only sizes that tile a UTC day (or whole days) align to UTC days.
            raise SettingsError(f"{_var('window_sizes')}: {part.strip()!r} does not divide a day or a whole "
                                "number of days, so its windows would not align to UTC days")
        sizes.append(size)
    if not sizes or len(set(sizes)) != len(sizes):
        raise SettingsError(f"{_var('window_sizes')} must list distinct sizes")
    return tuple(sorted(sizes))


def _funnel(raw: dict[str, str]) -> tuple[str, ...]:
    stages = tuple(s.strip() for s in raw["funnel"].split(",") if s.strip())
    known = {"lead", "mql", "sal", "sql", "opportunity", "won"}
    if len(stages) < 2 or stages[0] != "lead" or len(set(stages)) != len(stages) or not set(stages) <= known:
        raise SettingsError(f"{_var('funnel')}={raw['funnel']!r} must start with lead and list distinct stages "
                            f"among {', '.join(sorted(known))}")
    return stages


def _rates(raw: dict[str, str]) -> RateTable:
    currency = raw["reporting_currency"].upper()
    if len(currency) != 3 or not currency.isalpha():
        raise SettingsError(f"{_var('reporting_currency')}={raw['reporting_currency']!r} is not an ISO 4217 code")
    try:
        return parse_rate_table(currency, raw["exchange_rates"])
    except ValueError as exc:
        raise SettingsError(f"{_var('exchange_rates')}: {exc}") from None
