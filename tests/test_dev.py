"""The ``dev`` script on a fresh machine: Java 17+ and Maven 3.8+ installed with apt only when missing or too old.

Each case runs the script's ``need_java_maven`` with a PATH of stand-ins only (``java``, ``mvn``, ``id``,
``sudo``, ``apt-get``, ``apt-cache``), so what this machine has installed plays no part. The stand-in apt-get
records its calls, and "installs" a package by putting the stand-in it stands for on the PATH.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

DEV = Path(__file__).resolve().parent.parent / "dev"
MAVEN_3_8 = "3.8.7"


def _script(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def _java(path: Path, version: str) -> None:
    # What `java -version` says, on stderr, as OpenJDK words it ("1.8.0_292" for Java 8).
    _script(path, f'echo \'openjdk version "{version}" 2025-04-15\' >&2\necho "OpenJDK Runtime Environment" >&2')


def _mvn(path: Path, version: str) -> None:
    _script(path, f'echo "Apache Maven {version} (b89d5959fcde851dcb1c8946a785a163f14e1e29)"\necho "Maven home: x"')


@dataclass
class Machine:
    """The stand-ins' folders: ``bin`` is the whole PATH; ``calls`` what apt-get and sudo were asked to do."""

    bin: Path
    calls: Path

    def run(self) -> subprocess.CompletedProcess[str]:
        # Sourced, the script only defines its functions (see its end); bash itself is the one absolute path.
        return subprocess.run(["/bin/bash", "-c", 'source "$1" && need_java_maven', "bash", str(DEV)],
                              env={"PATH": str(self.bin)}, capture_output=True, text=True, timeout=30, check=False)

    def apt(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


def machine(tmp_path: Path, *, java: str | None, mvn: str | None, uid: int = 0, sudo: bool = True,
            default_jre: str = "2:1.17-74", installed_java: str = "17.0.19") -> Machine:
    """A machine with ``java`` and ``mvn`` at these versions (None: not installed), Debian's default Java
    package at ``default_jre`` (its candidate), and the Java an install of a Java package gives."""
    bin_dir, available = tmp_path / "bin", tmp_path / "available"
    bin_dir.mkdir()
    available.mkdir()
    calls = tmp_path / "calls"
    env = shutil.which("env")
    assert env is not None
    (bin_dir / "env").symlink_to(env)  # apt_install runs apt-get through env (sudo drops DEBIAN_FRONTEND)
    if java is not None:
        _java(bin_dir / "java", java)
    if mvn is not None:
        _mvn(bin_dir / "mvn", mvn)
    _java(available / "java", installed_java)
    _mvn(available / "mvn", MAVEN_3_8)
    _script(bin_dir / "id", f'[ "$1" = -u ] && echo {uid}')
    if sudo:
        _script(bin_dir / "sudo", f'echo "sudo $*" >> {calls}\n"$@"')
    _script(bin_dir / "apt-cache", f'echo "default-jre-headless:"\necho "  Candidate: {default_jre}"')
    # DEBIAN_FRONTEND must reach apt-get, or it may ask questions nobody answers.
    _script(bin_dir / "apt-get", f"""echo "apt-get $* DEBIAN_FRONTEND=$DEBIAN_FRONTEND" >> {calls}
[ "$1" = install ] || exit 0
for package in "$@"; do
  case "$package" in
    *jre-headless) /bin/cp {available}/java {bin_dir}/java ;;
    maven) /bin/cp {available}/mvn {bin_dir}/mvn ;;
  esac
done""")
    return Machine(bin_dir, calls)


INSTALL = "apt-get install -y -qq {} DEBIAN_FRONTEND=noninteractive"
UPDATE = "apt-get update -qq DEBIAN_FRONTEND="


@pytest.mark.parametrize(("java", "mvn", "default_jre", "installed"), [
    ("17.0.15", "3.8.7", "2:1.17-74", None),  # Debian 12 with both: nothing to do
    ("21.0.5", "3.9.9", "2:1.21-76", None),  # newer ones are as good
    (None, None, "2:1.17-74", "default-jre-headless maven"),  # a fresh Debian 12: its default Java is 17
    (None, None, "2:1.21-76", "default-jre-headless maven"),  # Debian 13: 21, and there is no openjdk-17
    ("11.0.25", "3.8.7", "2:1.11-72", "openjdk-17-jre-headless"),  # Ubuntu 22.04: its default Java is 11
    ("1.8.0_292", "3.8.7", "2:1.17-74", "default-jre-headless"),  # Java 8 says "1.8"
    ("17.0.15", "3.6.3", "2:1.17-74", "maven"),  # Debian 11's Maven is too old for the fetch
    ("17.0.15", None, "2:1.17-74", "maven"),
])
def test_java_and_maven_are_installed_only_when_missing_or_too_old(
        tmp_path: Path, java: str | None, mvn: str | None, default_jre: str, installed: str | None) -> None:
    host = machine(tmp_path, java=java, mvn=mvn, default_jre=default_jre)
    result = host.run()
    assert result.returncode == 0, result.stderr
    if installed is None:
        assert host.apt() == []
        assert result.stdout == ""
    else:
        assert host.apt() == [UPDATE, INSTALL.format(installed)]


def test_without_root_apt_runs_through_sudo(tmp_path: Path) -> None:
    host = machine(tmp_path, java=None, mvn="3.8.7", uid=1000)
    result = host.run()
    assert result.returncode == 0, result.stderr
    assert host.apt() == ["sudo apt-get update -qq", UPDATE,
                          "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless",
                          INSTALL.format("default-jre-headless")]


def test_without_root_or_sudo_it_stops_and_says_what_is_missing(tmp_path: Path) -> None:
    host = machine(tmp_path, java="11.0.25", mvn=None, uid=1000, sudo=False)
    result = host.run()
    assert result.returncode == 1
    assert "Java 17+ and Maven 3.8+ is missing and there is no root or sudo to install it" in result.stderr
    assert host.apt() == []


def test_an_older_java_still_chosen_after_the_install_is_named(tmp_path: Path) -> None:
    # Installing openjdk-17 does not change the java on the PATH when the alternatives are set by hand.
    host = machine(tmp_path, java="11.0.25", mvn="3.8.7", default_jre="2:1.11-72", installed_java="11.0.25")
    result = host.run()
    assert result.returncode == 1
    assert "the java on the PATH is still Java 11 after installing openjdk-17-jre-headless" in result.stderr
    assert "update-alternatives --config java" in result.stderr
