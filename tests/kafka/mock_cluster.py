"""librdkafka's own mock Kafka cluster, reached through ctypes from the library bundled in the confluent-kafka wheel.

The mock cluster speaks the Kafka protocol on real sockets and answers any request with an error code pushed
for it, in order, deterministically: what a real cluster answers while its group coordinator moves (a rolling
restart, a leader election, ``__consumer_offsets`` being created) can be met on purpose, every time. It has no
CreateTopics: a test creates the topics it needs with :meth:`MockCluster.create_topic`.

Functions used (librdkafka's ``rdkafka_mock.h``, exported since 1.x; request tracking since 2.4):
``rd_kafka_mock_cluster_new``, ``_bootstraps``, ``_topic_create``, ``_push_request_errors_array``,
``_start_request_tracking``, ``_get_requests``, ``_request_api_key``, ``_request_destroy_array``,
``_cluster_destroy``.
"""

from __future__ import annotations

import ctypes
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import confluent_kafka

# Kafka's request keys (ApiKey) the tests push errors for.
OFFSET_FETCH = 9
FIND_COORDINATOR = 10

# Kafka's error codes.
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
GROUP_AUTHORIZATION_FAILED = 30

_RD_KAFKA_PRODUCER = 0  # rd_kafka_type_t: the mock cluster needs a client handle to live in; its type is moot


def _library() -> ctypes.CDLL:
    """The librdkafka the confluent-kafka wheel bundles (the one its clients use), with the mock API typed."""
    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    if not found:
        raise RuntimeError(f"no librdkafka in {libs}: confluent-kafka is not installed from its wheel")
    lib = ctypes.CDLL(str(found[0]))
    pointer, size, text = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
    signatures: dict[str, tuple[object, list[object]]] = {
        "rd_kafka_conf_new": (pointer, []),
        "rd_kafka_new": (pointer, [ctypes.c_int, pointer, text, size]),
        "rd_kafka_destroy": (None, [pointer]),
        "rd_kafka_mock_cluster_new": (pointer, [pointer, ctypes.c_int]),
        "rd_kafka_mock_cluster_destroy": (None, [pointer]),
        "rd_kafka_mock_cluster_bootstraps": (text, [pointer]),
        "rd_kafka_mock_topic_create": (ctypes.c_int, [pointer, text, ctypes.c_int, ctypes.c_int]),
        "rd_kafka_mock_push_request_errors_array": (None, [pointer, ctypes.c_int16, size,
                                                           ctypes.POINTER(ctypes.c_int)]),
        "rd_kafka_mock_start_request_tracking": (None, [pointer]),
        "rd_kafka_mock_get_requests": (ctypes.POINTER(pointer), [pointer, ctypes.POINTER(size)]),
        "rd_kafka_mock_request_api_key": (ctypes.c_int16, [pointer]),
        "rd_kafka_mock_request_destroy_array": (None, [ctypes.POINTER(pointer), size]),
    }
    for name, (result, arguments) in signatures.items():
        function = getattr(lib, name)
        function.restype = result
        function.argtypes = arguments
    return lib


class MockCluster:
    """A mock cluster of ``brokers`` brokers in this process, until :meth:`close` (or the ``with`` block ends)."""

    def __init__(self, brokers: int = 1) -> None:
        self._lib = _library()
        errors = ctypes.create_string_buffer(512)
        self._handle = self._lib.rd_kafka_new(_RD_KAFKA_PRODUCER, self._lib.rd_kafka_conf_new(), errors,
                                              len(errors))
        if not self._handle:
            raise RuntimeError(f"rd_kafka_new: {errors.value.decode()}")
        self._cluster = self._lib.rd_kafka_mock_cluster_new(self._handle, brokers)
        if not self._cluster:
            self._lib.rd_kafka_destroy(self._handle)
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        self.bootstrap_servers: str = self._lib.rd_kafka_mock_cluster_bootstraps(self._cluster).decode()
        self._lib.rd_kafka_mock_start_request_tracking(self._cluster)

    def create_topic(self, name: str, partitions: int) -> None:
        code = self._lib.rd_kafka_mock_topic_create(self._cluster, name.encode(), partitions, 1)
        if code:
            raise RuntimeError(f"the mock cluster did not create {name}: error {code}")

    def push_errors(self, api_key: int, codes: Iterable[int]) -> None:
        """Answer the next requests of ``api_key`` (from any client) with ``codes``, one each, in order."""
        listed = list(codes)
        self._lib.rd_kafka_mock_push_request_errors_array(self._cluster, api_key, len(listed),
                                                          (ctypes.c_int * len(listed))(*listed))

    def requests(self) -> Counter[int]:
        """How many requests of each ApiKey the cluster received so far."""
        count = ctypes.c_size_t()
        array = self._lib.rd_kafka_mock_get_requests(self._cluster, ctypes.byref(count))
        try:
            return Counter(self._lib.rd_kafka_mock_request_api_key(array[i]) for i in range(count.value))
        finally:
            self._lib.rd_kafka_mock_request_destroy_array(array, count.value)

    def close(self) -> None:
        if self._cluster:
            self._lib.rd_kafka_mock_cluster_destroy(self._cluster)
            self._cluster = None
            self._lib.rd_kafka_destroy(self._handle)

    def __enter__(self) -> MockCluster:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
