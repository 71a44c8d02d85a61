"""The synthetic backlog every throughput phase reads."""

from __future__ import annotations

import itertools
import time
from collections import Counter

from stream.bench.errors import BenchError
from stream.bench.progress import Progress
from stream.bench.results import Produced
from stream.settings import Settings

HOURS_AGO = 6  # event times start at a whole hour this many hours ago


def start_ms_hours_ago(hours: int) -> int:
    """A whole hour ``hours`` hours ago, in epoch milliseconds."""
    hour_ms = 3_600_000
    return (int(time.time() * 1000) // hour_ms - hours) * hour_ms


def produce(settings: Settings, events: int, seed: int, progress: Progress, lead_rate: float | None = None
            ) -> Produced:
    """Produce the synthetic backlog and count what was delivered per topic (``lead_rate``: see TrafficModel).

    Raises:
        BenchError: when not every event was delivered.
    """
    from stream.kafka.clients import producer_config
    from stream.kafka.produce import BatchProducer
    from stream.tools.generator import TrafficModel

    model = TrafficModel(seed=seed, start_ms=start_ms_hours_ago(HOURS_AGO), lead_rate=lead_rate)
    producer = BatchProducer(producer_config(settings))
    per_topic: Counter[str] = Counter()
    started = time.monotonic()
    # islice: TrafficModel.events(limit) checks the limit once per visit, so it can yield a few events more.
    for sent, (kind, payload) in enumerate(itertools.islice(model.events(events), events), start=1):
        topic = settings.input_topics[kind]
        producer.send(topic, payload)
        per_topic[topic] += 1
        if sent % 10_000 == 0:
            progress.show(f"produced {sent}/{events}")
    producer.flush(timeout_s=120)
    seconds = time.monotonic() - started
    if producer.delivered != events:
        raise BenchError(f"{producer.delivered} of {events} events were delivered")
    progress.show(f"produced {events} events in {seconds:.1f} s", force=True)
    return Produced({topic: per_topic[topic] for topic in settings.input_topics.values()},
                    {kind.value: per_topic[topic] for kind, topic in settings.input_topics.items()}, seconds)
