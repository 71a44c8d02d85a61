"""The import graph the package layout promises: the worker never loads the bench or the tools, and the pipeline
and its core load no Faust, Kafka or Prometheus."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import stream

STREAM = Path(stream.__file__).parent


def loaded_after(imports: str) -> set[str]:
    """The modules a fresh interpreter holds after ``imports``."""
    code = f"import sys\n{imports}\nprint('\\n'.join(sorted(sys.modules)))"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(shown.split())


def test_the_worker_loads_neither_the_bench_nor_the_tools_nor_the_brokers() -> None:
    loaded = loaded_after("import stream.cli, stream.app")
    assert "stream.app" in loaded
    assert sorted(m for m in loaded if m.startswith(("stream.bench", "stream.tools", "stream.brokers"))) == []


@pytest.mark.parametrize("package", ["core", "pipeline"])
def test_the_pipeline_and_its_core_load_no_faust_kafka_or_prometheus(package: str) -> None:
    modules = [info.name for info in pkgutil.walk_packages([str(STREAM / package)], prefix=f"stream.{package}.")]
    assert len(modules) > 5
    loaded = loaded_after("\n".join(f"import {module}" for module in modules))
    edges = ("faust", "mode", "aiokafka", "confluent_kafka", "prometheus_client", "stream.runtime", "stream.state",
             "stream.kafka")
    assert sorted(m for m in loaded if m.split(".")[0] in edges or m.startswith(edges)) == []
