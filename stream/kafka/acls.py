"""The Kafka ACLs a worker needs on a cluster whose authorizer denies what no ACL allows.

`kpi-stream acls --principal User:NAME` prints them for the current settings; the README lists them, and the
security test grants exactly these to the worker's user and checks that taking any one away is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.core.kpis import FAMILIES
from stream.kafka.clients import internal_topic
from stream.settings import Settings


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW rule: ``operation`` on the resource ``resource_type`` named ``name`` (or every name starting
    with it, when ``prefixed``)."""

    resource_type: str  # TOPIC or GROUP
    name: str
    operation: str  # READ, WRITE, CREATE, DESCRIBE
    prefixed: bool = False
    why: str = ""

    def describe(self, principal: str) -> str:
        """One line in the words of Kafka's ``kafka-acls.sh``."""
        pattern = "PREFIXED" if self.prefixed else "LITERAL"
        return (f"--allow-principal {principal} --operation {self.operation} "
                f"--{self.resource_type.lower().replace('_', '-')} {self.name} --resource-pattern-type {pattern}")


def worker_acls(settings: Settings) -> list[Acl]:
    """Every ACL the worker needs, and nothing more (READ, WRITE and CREATE each imply DESCRIBE)."""
    acls = [Acl("TOPIC", topic, "READ", why="input") for topic in sorted(settings.input_topics.values())]
    outputs = [settings.topic_dead_letters, *(settings.kpi_topic(family) for family in FAMILIES)]
    for topic in outputs:
        acls.append(Acl("TOPIC", topic, "WRITE", why="output"))
        # The worker creates a missing output topic at start (compacted, sized for dead letters); where an
        # operator runs `kpi-stream topics` first, these CREATE rules can go.
        acls.append(Acl("TOPIC", topic, "CREATE", why="created when missing"))
    # Internal topics (entities, cells), the tables' changelogs and Faust's leader topic all start with the app id.
    prefix = internal_topic(settings, "")
    for operation in ("READ", "WRITE", "CREATE"):
        acls.append(Acl("TOPIC", prefix, operation, prefixed=True, why="internal topics and changelogs"))
    acls.append(Acl("GROUP", settings.app_id, "READ", why="the consumer group"))
    # No TRANSACTIONAL_ID rule: exactly_once is refused (see stream.settings.EXACTLY_ONCE_REFUSED). The idempotent
    # producer needs no ACL of its own since Kafka 3.0 (KIP-679): WRITE on a topic implies IDEMPOTENT_WRITE.
    return acls
