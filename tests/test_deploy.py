"""Static checks of the deployment files (Docker cannot run where these tests run).

Dockerfile, .dockerignore, docker-compose.yml and deploy/ are parsed and checked against each other and
against the code: the settings the code reads, the metrics it exports, the version in pyproject.toml.
With promtool on PATH (Debian's prometheus package) the Prometheus config and rules are checked for real.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from stream.brokers.apache_kafka import KAFKA_VERSION
from stream.settings import ENVIRONMENT, Settings
from tests.ops.deploy_files import exported_series

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
RULES_DIR = DEPLOY / "prometheus" / "rules"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"
GRAFANA = DEPLOY / "grafana"

SETTINGS_VARS = {var for var, _, _ in ENVIRONMENT.values()}
# A version tag: 3.9.1, v3.5.0, 3.11.11-slim-bookworm (at least major.minor.patch), or a digest.
PINNED_TAG = re.compile(r"^v?\d+\.\d+\.\d+([.-][\w.-]+)?$")
PROMTOOL_MISSING = ("promtool is not on PATH: install Debian's prometheus package "
                    "(`apt-get install -y prometheus`, which provides /usr/bin/promtool); CI installs it")

# Keys of a compose service (compose specification) — catches a misspelt key, which compose would reject.
SERVICE_KEYS = {
    "annotations", "attach", "build", "blkio_config", "cap_add", "cap_drop", "cgroup", "cgroup_parent", "command",
    "configs", "container_name", "cpu_count", "cpu_percent", "cpu_period", "cpu_quota", "cpu_rt_period",
    "cpu_rt_runtime", "cpu_shares", "cpus", "cpuset", "credential_spec", "depends_on", "deploy", "develop",
    "device_cgroup_rules", "devices", "dns", "dns_opt", "dns_search", "domainname", "entrypoint", "env_file",
    "environment", "expose", "extends", "external_links", "extra_hosts", "gpus", "group_add", "healthcheck",
    "hostname", "image", "init", "ipc", "isolation", "labels", "links", "logging", "mac_address", "mem_limit",
    "mem_reservation", "mem_swappiness", "memswap_limit", "network_mode", "networks", "oom_kill_disable",
    "oom_score_adj", "pid", "pids_limit", "platform", "ports", "post_start", "pre_stop", "privileged", "profiles",
    "pull_policy", "read_only", "restart", "runtime", "scale", "secrets", "security_opt", "shm_size",
    "stdin_open", "stop_grace_period", "stop_signal", "storage_opt", "sysctls", "tmpfs", "tty", "ulimits",
    "user", "userns_mode", "uts", "volumes", "volumes_from", "working_dir",
}
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


# ---------------------------------------------------------------------------------------------- helpers


def _load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@cache
def _compose() -> dict[str, Any]:
    data = _load_yaml(COMPOSE)
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict) and services, "docker-compose.yml has no services"
    return services


@cache
def _project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _project_image() -> str:
    return f"{_project()['name']}:{_project()['version']}"


def _project_services() -> dict[str, dict[str, Any]]:
    """Services that run the project image."""
    return {name: svc for name, svc in _services().items()
            if "build" in svc or str(svc.get("image", "")).split(":")[0] == _project()["name"]}


def _environment(service: dict[str, Any]) -> dict[str, Any]:
    """A service's environment, from either the mapping or the list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        return dict(pairs)
    assert isinstance(env, dict), f"environment must be a mapping or a list, not {type(env).__name__}"
    return env


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference."""
    image, _, digest = image.partition("@")
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = image.rsplit(":", 1)
        return repository, tag, digest or None
    return image, None, digest or None


def _bind_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(host source, container target) of every bind mount of a service; named volumes are left out."""
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                yield str(volume["source"]), str(volume["target"])
            continue
        source, _, rest = str(volume).partition(":")
        target = rest.split(":", 1)[0]
        if source.startswith((".", "/", "~")):
            yield source, target


def _host_path(source: str) -> Path:
    return (ROOT / source).resolve() if not source.startswith("/") else Path(source)


def _container_to_host(service: dict[str, Any], container_path: str) -> Path | None:
    """The repository path a container path of a service comes from (through its bind mounts), if any."""
    wanted = PurePosixPath(container_path)
    best: tuple[int, Path] | None = None
    for source, target in _bind_mounts(service):
        target_path = PurePosixPath(target)
        if wanted == target_path or target_path in wanted.parents:
            relative = wanted.relative_to(target_path)
            candidate = (len(target_path.parts), _host_path(source).joinpath(*relative.parts))
            if best is None or candidate[0] > best[0]:
                best = candidate
    return best[1] if best else None


def _published_ports(service: dict[str, Any]) -> Iterator[tuple[str, int, str]]:
    """(host ip, host port, protocol) of every port a service publishes on the host."""
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if entry.get("published") is None:
                continue
            host_ip = str(entry.get("host_ip", "0.0.0.0"))
            published, protocol = str(entry["published"]), str(entry.get("protocol", "tcp"))
        else:
            assert isinstance(entry, str), (f"port {entry!r} must be a quoted string: YAML reads some unquoted "
                                            "host:container pairs as base-60 numbers")
            spec, _, protocol = entry.partition("/")
            protocol = protocol or "tcp"
            parts = spec.rsplit(":", 2)
            if len(parts) == 1:
                continue  # container port only: Docker picks an ephemeral host port
            host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
            published = parts[-2]
        low, _, high = published.partition("-")
        for port in range(int(low), int(high or low) + 1):
            yield host_ip, port, protocol


def _replicas(service: dict[str, Any]) -> int:
    return int((service.get("deploy") or {}).get("replicas", service.get("scale", 1)))


@cache
def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        if full:
            keyword, _, args = full.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends in a line continuation"
    return instructions


def _dockerfile_env() -> dict[str, str]:
    """ENV of the final stage."""
    env: dict[str, str] = {}
    for keyword, args in _dockerfile():
        if keyword == "FROM":
            env = {}
        elif keyword == "ENV":
            for token in shlex.split(args):
                name, _, value = token.partition("=")
                env[name] = value
    return env


def _dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore leaves ``path`` (relative, '/'-separated) out of the build context.

    Docker's rules: the last pattern that matches the path or one of its parent directories decides;
    ``!`` re-includes; ``*`` and ``?`` stay within one path element, ``**`` spans any number.
    """
    excluded = False
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip().strip("/")
        regex = re.compile(_glob_regex(pattern))
        parts = path.split("/")
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def _glob_regex(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


@cache
def _prometheus() -> dict[str, Any]:
    data = _load_yaml(PROMETHEUS_YML)
    assert isinstance(data, dict), "prometheus.yml is not a mapping"
    return data


def _rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml")) + sorted(RULES_DIR.glob("*.yaml"))


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(PROMTOOL_MISSING, pytrace=False)
    return promtool


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


# ------------------------------------------------------------------------------------------ compose file


def test_compose_parses_with_the_expected_services() -> None:
    assert {"kafka", "topics", "worker", "generator", "prometheus", "alertmanager", "grafana"} <= set(_services())
    for name, service in _services().items():
        unknown = set(service) - SERVICE_KEYS
        assert not unknown, f"service {name}: unknown keys {sorted(unknown)}"


def test_every_image_is_pinned() -> None:
    for name, service in _services().items():
        image = service.get("image")
        assert image, f"service {name} has no image (a built service needs one too, so it is tagged)"
        repository, tag, digest = _split_image(str(image))
        if digest:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"service {name}: bad digest {digest!r}"
            continue
        assert tag and tag != "latest", f"service {name}: image {image!r} is not pinned to a tag"
        assert PINNED_TAG.fullmatch(tag), f"service {name}: tag {tag!r} of {image!r} is not a full version"


def test_built_services_use_the_project_image_tagged_with_its_version() -> None:
    built = {name: svc for name, svc in _services().items() if "build" in svc}
    assert set(built) == {"topics", "worker", "generator"}
    for name, service in built.items():
        assert service["image"] == _project_image(), f"service {name}: image is not {_project_image()}"
        context = service["build"] if isinstance(service["build"], str) else service["build"].get("context", ".")
        assert (ROOT / context / "Dockerfile").is_file(), f"service {name}: no Dockerfile in build context"


def test_bind_mounted_host_paths_exist() -> None:
    seen = 0
    for name, service in _services().items():
        for source, target in _bind_mounts(service):
            seen += 1
            host = _host_path(source)
            assert ROOT in host.parents, f"service {name}: {source} is outside the repository"
            assert host.exists(), f"service {name}: mounted {source} (at {target}) does not exist"
    assert seen >= 5


def test_published_host_ports_do_not_collide() -> None:
    taken: dict[tuple[int, str], list[tuple[str, str]]] = {}
    for name, service in _services().items():
        ports = list(_published_ports(service))
        assert not ports or _replicas(service) == 1, (
            f"service {name} runs {_replicas(service)} replicas but publishes fixed host ports {ports}")
        for host_ip, port, protocol in ports:
            for other_name, other_ip in taken.get((port, protocol), []):
                assert "0.0.0.0" not in (host_ip, other_ip) and host_ip != other_ip, (
                    f"host port {port}/{protocol} is published by both {other_name} and {name}")
            taken.setdefault((port, protocol), []).append((name, host_ip))
    assert {9090, 9093, 3000} <= {port for port, _ in taken}
    assert "ports" not in _services()["kafka"], "kafka's listeners are for the compose network only"


def test_environment_of_project_services_is_read_by_the_settings() -> None:
    services = _project_services()
    assert set(services) == {"topics", "worker", "generator"}
    image_env = {k: v for k, v in _dockerfile_env().items() if k.startswith(("KPI_", "KAFKA_"))}
    assert set(image_env) <= SETTINGS_VARS, f"Dockerfile sets unknown settings {set(image_env) - SETTINGS_VARS}"
    for name, service in services.items():
        env = _environment(service)
        unknown = set(env) - SETTINGS_VARS
        assert not unknown, f"service {name}: {sorted(unknown)} are not read by stream/settings.py"
        for var, value in env.items():
            assert isinstance(value, str), f"service {name}: quote {var}={value!r} so YAML keeps it a string"
            assert "${" not in value, f"service {name}: {var} depends on interpolation"
        settings = Settings.from_env({**image_env, **env})
        assert settings.bootstrap_servers == "kafka:9092"


def test_topics_and_workers_agree_on_what_the_topics_are() -> None:
    """`topics` creates the internal topics under the app id with KPI_PARTITIONS; the workers must match."""
    services = _project_services()
    per_service = {name: Settings.from_env({**_dockerfile_env(), **_environment(svc)})
                   for name, svc in services.items()}
    for field in ("app_id", "partitions", "replication_factor", "kpi_topic_prefix", "topic_dead_letters"):
        values = {name: getattr(settings, field) for name, settings in per_service.items()}
        assert len(set(values.values())) == 1, f"{field} differs: {values}"
    assert per_service["worker"].partitions == 4
    assert per_service["worker"].app_id == "leadgen-kpi"
    assert per_service["worker"].rates.rates, "the worker has no exchange rates"


def test_worker_runs_two_replicas_serving_metrics_on_the_network() -> None:
    worker = _services()["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert "container_name" not in worker, "a fixed container name cannot be scaled"
    assert worker["command"] in ("worker", ["worker"])
    settings = Settings.from_env({**_dockerfile_env(), **_environment(worker)})
    assert settings.web_host not in ("127.0.0.1", "localhost", "::1"), "Prometheus could not scrape the workers"
    assert [str(port) for port in worker.get("expose", [])] == [str(settings.web_port)]
    assert "ports" not in worker


def test_workers_keep_their_local_state_on_a_named_volume() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    worker = compose["services"]["worker"]
    settings = Settings.from_env({**_dockerfile_env(), **_environment(worker)})
    assert settings.store == "disk://"
    sources = {str(volume).split(":")[1]: str(volume).split(":")[0] for volume in worker.get("volumes") or []}
    assert sources.get(settings.data_dir) in (compose.get("volumes") or {}), (
        f"KPI_DATA_DIR {settings.data_dir} is not on a named volume of the compose file: {worker.get('volumes')}")
    volumes = [args for keyword, args in _dockerfile() if keyword == "VOLUME"]
    assert volumes and settings.data_dir in json.loads(volumes[-1]), "the image does not declare KPI_DATA_DIR a volume"


def test_start_order() -> None:
    services = _services()
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        for dependency, spec in (depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)):
            assert dependency in services, f"service {name} depends on unknown {dependency}"
            if spec:
                assert spec.get("condition", "service_started") in DEPENDS_CONDITIONS
    topics = services["topics"]
    assert topics["command"] in ("topics", ["topics"])
    assert topics["restart"] == "no", 'quote it: restart: "no" (bare no is YAML false)'
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("worker", "generator"):
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["generator"]["command"] == ["generate", "--rate", "200"]


def test_kafka_is_a_single_kraft_node_with_a_healthcheck() -> None:
    kafka = _services()["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"  # the release the integration tests run on
    env = {k: str(v) for k, v in _environment(kafka).items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert set(env["KAFKA_LISTENERS"].split(",")) == {"PLAINTEXT://:9092", "CONTROLLER://:9093"}
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    for var in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env[var] == "1", var
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    test = kafka["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL")
    command = " ".join(test[1:])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in command
    assert "--bootstrap-server localhost:9092" in command


def test_observability_services_find_each_other() -> None:
    services = _services()
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert _container_to_host(prometheus, "/etc/prometheus/prometheus.yml") == PROMETHEUS_YML
    assert _container_to_host(services["alertmanager"], "/etc/alertmanager/alertmanager.yml") == ALERTMANAGER_YML
    assert _container_to_host(grafana, "/etc/grafana/provisioning") == GRAFANA / "provisioning"
    assert _container_to_host(grafana, "/var/lib/grafana/dashboards") == GRAFANA / "dashboards"
    grafana_env = _environment(grafana)
    assert grafana_env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana_env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


# ------------------------------------------------------------------------------------------- Dockerfile


def test_dockerfile_base_image_is_pinned_python_3_11() -> None:
    stages: set[str] = set()
    bases = []
    for keyword, args in _dockerfile():
        if keyword != "FROM":
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        image = words[0]
        if image.lower() not in stages:  # FROM <earlier stage> builds on that stage, not on a base image
            bases.append(image)
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())
    assert bases, "Dockerfile has no FROM"
    for image in bases:
        repository, tag, _ = _split_image(image)
        assert "$" not in image, f"base image {image!r} depends on a build argument"
        assert repository in ("python", "docker.io/library/python"), image
        assert tag and PINNED_TAG.fullmatch(tag), f"base image {image!r} is not pinned to a full version"
        assert tag.startswith("3.11.") and "slim" in tag, image


def test_dockerfile_does_not_run_as_root() -> None:
    final_from = max(i for i, (keyword, _) in enumerate(_dockerfile()) if keyword == "FROM")
    final_users = [args for keyword, args in _dockerfile()[final_from:] if keyword == "USER"]
    assert final_users, "the final stage never switches away from root (no USER)"
    user = final_users[-1].split(":")[0]
    assert user not in ("root", "0"), f"the image runs as {final_users[-1]!r}"


def test_dockerfile_installs_the_project_and_runs_the_worker() -> None:
    instructions = _dockerfile()
    copied = [shlex.split(args) for keyword, args in instructions
              if keyword == "COPY" and not args.startswith("--from")]
    sources = {src.rstrip("/") for words in copied for src in words[:-1]}
    assert sources == {"pyproject.toml", "README.md", "schemas", "stream"}
    assert any(keyword == "RUN" and re.search(r"\bpip install \.(\s|$)", args) for keyword, args in instructions)
    last = {keyword: args for keyword, args in instructions}
    assert json.loads(last["ENTRYPOINT"]) == ["kpi-stream"]
    assert json.loads(last["CMD"]) == ["worker"]
    assert "kpi-stream" in _project()["scripts"]
    exposed = {port.split("/")[0] for keyword, args in instructions if keyword == "EXPOSE" for port in args.split()}
    assert exposed == {ENVIRONMENT["web_port"][1]} == {"6066"}


def test_dockerignore_keeps_the_sources_and_drops_the_rest() -> None:
    for keyword, args in _dockerfile():
        if keyword != "COPY" or args.startswith("--from"):
            continue
        for source in shlex.split(args)[:-1]:
            path = ROOT / source
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            assert files, f"COPY {source}: nothing to copy"
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                if "__pycache__" in relative or relative.endswith((".pyc", ".pyo")):
                    continue
                assert not _dockerignore_excludes(relative), f".dockerignore drops {relative}, which COPY needs"
    for dropped in (".git/HEAD", "tests/test_deploy.py", "deploy/prometheus/prometheus.yml", ".venv/bin/python",
                    "stream/__pycache__/cli.cpython-311.pyc", "kpi-data/x"):
        assert _dockerignore_excludes(dropped), f".dockerignore keeps {dropped} in the build context"


# ----------------------------------------------------------------------------------- Prometheus & friends


def test_prometheus_config_references_existing_rule_files() -> None:
    config = _prometheus()
    assert config["global"]["scrape_interval"] == "15s"
    assert config["global"]["evaluation_interval"] == "15s"
    prometheus = _services()["prometheus"]
    assert config["rule_files"], "no rule_files"
    for pattern in config["rule_files"]:
        host_pattern = _container_to_host(prometheus, pattern)
        assert host_pattern is not None, f"rule_files {pattern} is not mounted into the prometheus container"
        assert host_pattern.parent == RULES_DIR
        assert sorted(host_pattern.parent.glob(host_pattern.name)), f"rule_files {pattern} matches no file"
    assert _rule_files()


def test_prometheus_scrapes_the_workers_and_alerts_to_alertmanager() -> None:
    config = _prometheus()
    services = _services()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"leadgen-kpi", "prometheus"}
    worker_port = Settings.from_env({**_dockerfile_env(), **_environment(services["worker"])}).web_port
    (sd,) = jobs["leadgen-kpi"]["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["type"] == "A" and sd["port"] == worker_port
    assert jobs["leadgen-kpi"].get("metrics_path", "/metrics") == "/metrics"
    targets = [target for am in config["alerting"]["alertmanagers"] for static in am["static_configs"]
               for target in static["targets"]]
    assert targets == ["alertmanager:9093"]
    assert "alertmanager" in services


def test_recording_rules_use_exported_metrics() -> None:
    exported = exported_series()
    records = set()
    used_records: dict[str, set[str]] = {}
    for path in _rule_files():
        groups = _load_yaml(path)["groups"]
        for group in groups:
            for rule in group["rules"]:
                records.add(rule.get("record"))
                name = rule.get("record") or rule.get("alert")
                # Recorded series (level:metric:operations) are checked against the rules that record them.
                recorded = set(re.findall(r"\b\w+:\w+:\w+\b|\bleadgen:\w+\b", rule["expr"]))
                used_records[f"{path.name}: {name}"] = recorded
                used = set(re.findall(r"(?<![\w:])leadgen_\w+", rule["expr"]))
                assert used <= exported, f"{path.name}: {name} uses metrics no worker exports: {used - exported}"
    for rule_name, recorded in used_records.items():
        assert recorded <= records, f"{rule_name} uses series no rule records: {recorded - records}"
    assert {"channel:leadgen_cost_per_lead:ratio_rate1h", "channel:leadgen_cost_per_lead:ratio_rate1d",
            "leadgen:events:rate5m"} <= records


def test_alertmanager_config_routes_to_a_defined_receiver() -> None:
    config = _load_yaml(ALERTMANAGER_YML)
    receivers = {receiver["name"] for receiver in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    assert config["route"]["group_by"] == ["alertname", "channel"]


def test_grafana_provisioning() -> None:
    (datasource,) = _load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["uid"] == "leadgen-prometheus"
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["isDefault"] is True
    (provider,) = _load_yaml(GRAFANA / "provisioning" / "dashboards" / "leadgen.yml")["providers"]
    assert provider["type"] == "file"
    assert _container_to_host(_services()["grafana"], provider["options"]["path"]) == GRAFANA / "dashboards"
    for path in (GRAFANA / "dashboards").glob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.prometheus
def test_promtool_check_config(tmp_path: Path) -> None:
    promtool = _promtool()
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    config = _prometheus()
    prometheus = _services()["prometheus"]
    rewritten = []
    for pattern in config["rule_files"]:
        host_pattern = _container_to_host(prometheus, pattern)
        assert host_pattern is not None and host_pattern.parent == RULES_DIR
        rewritten.append(str(rules / host_pattern.name))
    config = {**config, "rule_files": rewritten}
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    result = _run([promtool, "check", "config", str(path)])
    assert result.returncode == 0, f"promtool check config failed:\n{result.stdout}\n{result.stderr}"
    assert "SUCCESS" in result.stdout + result.stderr


@pytest.mark.prometheus
def test_promtool_check_rules() -> None:
    promtool = _promtool()
    files = _rule_files()
    assert files
    result = _run([promtool, "check", "rules", *map(str, files)])
    assert result.returncode == 0, f"promtool check rules failed:\n{result.stdout}\n{result.stderr}"
