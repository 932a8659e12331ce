"""docker/: the files no Docker engine builds here, checked as text and with the relay's own
configuration reader (and unbound-checkconf).  hadolint is run by hand (docker/README.md)."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from relay.config import Config

PROJECT = Path(__file__).resolve().parents[2]
DOCKER = PROJECT / "docker"
DOCKERFILE = (DOCKER / "Dockerfile").read_text()
COMPOSE = (DOCKER / "compose.yaml").read_text()
SPOOL = "/var/spool/dane-relay"
CONFIG = "/etc/dane-relay/relay.toml"


def relay_stage() -> str:
    """The last stage of the Dockerfile (the default build target)."""
    stages = re.split(r"(?m)^(?=FROM )", DOCKERFILE)
    return stages[-1]


def instructions(text: str, keyword: str) -> list[str]:
    return re.findall(rf"(?m)^{keyword} (.+)$", text)


def test_relay_stage_is_the_default_target_on_python_311_slim() -> None:
    assert relay_stage().startswith("FROM python:3.11-slim AS relay\n")


def test_relay_runs_as_a_numeric_non_root_user() -> None:
    (user,) = instructions(relay_stage(), "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0)
    assert f"--uid {uid}" in relay_stage()


def test_spool_volume_port_healthcheck_and_command() -> None:
    stage = relay_stage()
    assert instructions(stage, "VOLUME") == [f'["{SPOOL}"]']
    assert instructions(stage, "EXPOSE") == ["2525"]
    (healthcheck,) = instructions(stage, "HEALTHCHECK")
    assert healthcheck.startswith("--interval=")
    assert "create_connection(('127.0.0.1', 2525)" in stage and "b'220'" in stage
    assert instructions(stage, "CMD")[-1] == f'["serve", "--config", "{CONFIG}"]'
    assert instructions(stage, "ENTRYPOINT") == ['["dane-relay"]']
    assert "pip install --no-cache-dir /src" in stage  # from this source tree


def image_config_text() -> str:
    match = re.search(rf"(?ms)^COPY <<'EOF' {re.escape(CONFIG)}\n(.*?)^EOF$", DOCKERFILE)
    assert match is not None, "the image's default relay.toml (a heredoc) is missing"
    return match[1]


def compose_config_text() -> str:
    """The `content: |` block of configs.relay.toml in compose.yaml, dedented."""
    lines = COMPOSE.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "content: |") + 1
    block = []
    for line in lines[start:]:
        if line.strip() and not line.startswith(" " * 6):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block))


@pytest.mark.parametrize("text", [image_config_text, compose_config_text])
def test_relay_configurations_load_and_keep_the_resolver_on_loopback(text: object) -> None:
    assert callable(text)
    config = Config.from_toml(text(), source="docker")
    assert str(config.spool.path) == SPOOL
    assert config.listen.address == "0.0.0.0:2525"
    assert config.dns.nameservers == (("127.0.0.1", 53),)
    assert config.dns.allow_remote_resolver is False  # Unbound is on the shared loopback


def test_compose_runs_the_relay_in_unbounds_namespace_with_the_spool_volume() -> None:
    relay = COMPOSE[COMPOSE.index("\n  relay:\n") :]
    relay = relay[: relay.index("\nvolumes:\n")]
    assert 'network_mode: "service:unbound"' in relay
    assert f"- spool:{SPOOL}" in relay
    assert f"target: {CONFIG}" in relay
    assert "condition: service_healthy" in relay
    assert "target: unbound" in COMPOSE and "dockerfile: docker/Dockerfile" in COMPOSE
    # Published ports are on the namespace owner, and on the host's loopback only.
    ports = re.findall(r'(?m)^\s+- "([^"]+)"', COMPOSE[: COMPOSE.index("\n  relay:\n")])
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)
    assert "127.0.0.1:2525:2525" in ports


def test_compose_relay_networks_match_the_compose_subnet() -> None:
    (subnet,) = re.findall(r"subnet: (\S+)", COMPOSE)
    config = Config.from_toml(compose_config_text(), source="compose")
    assert ipaddress.ip_network(subnet) in config.listen.networks
    assert config.metrics.listen == "0.0.0.0:9466"


def test_compose_file_is_plain_yaml_structure() -> None:
    """Spaces only, and the top-level keys a Compose file has."""
    assert "\t" not in COMPOSE
    top = re.findall(r"(?m)^([a-z_]+):", COMPOSE)
    assert top == ["name", "services", "volumes", "networks", "configs"]


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    ignore = (PROJECT / ".dockerignore").read_text().splitlines()
    assert "**" in ignore
    included = {line[1:] for line in ignore if line.startswith("!")}
    copied = set(re.findall(r"(?m)^COPY (?!<<)(.+) \S+$", DOCKERFILE))
    sources = {word for line in copied for word in line.split()}
    assert sources <= included | {"pyproject.toml", "README.md"}
    assert {"relay", "tlsa", "docker/unbound.conf"} <= included


@pytest.mark.integration
def test_unbound_conf_passes_unbound_checkconf(tmp_path: Path) -> None:
    checkconf = shutil.which("unbound-checkconf") or "/usr/sbin/unbound-checkconf"
    if not Path(checkconf).exists():
        pytest.fail("unbound-checkconf is missing (Debian package unbound)")
    anchor = tmp_path / "root.key"  # in the image: seeded from dns-root-data at build time
    shutil.copy(PROJECT / "tlsa" / "data" / "root-anchors.txt", anchor)
    conf = (DOCKER / "unbound.conf").read_text()
    assert '"/var/lib/unbound/root.key"' in conf
    copy = tmp_path / "unbound.conf"
    copy.write_text(conf.replace("/var/lib/unbound/root.key", str(anchor)))
    checked = subprocess.run(
        [checkconf, str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.findall(r"(?m)^\s+interface: (\S+)", conf) == ["127.0.0.1"]
