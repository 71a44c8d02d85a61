"""The whole in-process dataflow (``LocalFlow``) fed an event set, then every window closed."""

from __future__ import annotations

import random

from stream.core.events import Kind
from stream.runtime.local import LocalFlow
from stream.settings import Settings
from tests.eventset import heartbeats

KINDS = {kind.value: kind for kind in Kind}
INPUT_PARTITIONS = 2


def fed_and_closed(messages: list[tuple[str, bytes]], settings: Settings, start: int, beat_at: int,
                   flow_type: type[LocalFlow] = LocalFlow) -> tuple[LocalFlow, list[tuple[str, bytes]]]:
    """A flow fed ``messages`` five at a time, each to one of two input partitions at random (seeded), its clock at
    ``start`` and 10 ms later at each batch; then a heartbeat per input partition at ``beat_at`` (the clock too),
    which closes every window ending before it; then what cells hold back goes out (``LocalFlow.settle``).

    Returns:
        the flow, and every message it was fed, the heartbeats included.
    """
    clock = [start]
    flow = flow_type(settings, clock=lambda: clock[0], input_partitions=INPUT_PARTITIONS)
    rand = random.Random(1)
    for first in range(0, len(messages), 5):
        chunk = messages[first:first + 5]
        flow.send_batch([(KINDS[topic], raw, rand.randrange(INPUT_PARTITIONS)) for topic, raw in chunk])
        clock[0] += 10
    clock[0] = beat_at
    beats = heartbeats(list(settings.input_topics.values()), INPUT_PARTITIONS, beat_at)
    flow.send_batch([(KINDS[topic], raw, partition) for topic, partition, raw in beats])
    flow.tick()
    flow.settle()
    return flow, messages + [(topic, raw) for topic, _, raw in beats]
