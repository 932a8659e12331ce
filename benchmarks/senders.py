"""The senders under test, each a private instance on loopback: Postfix and `dane-relay serve`.

One responsibility: configure, start and stop a sender, and say which process tree is its.

Postfix (Debian's package, 3.7) runs as a private instance: its own config_directory and
queue_directory in the run's folder, started with ``postfix -c DIR start`` (no postmulti, no
change to /etc/postfix).  Its settings follow design/dane-spec.md §3:
``smtp_dns_support_level = dnssec``, ``smtp_tls_security_level = dane`` (with the insecure-MX
policy set explicitly, since 3.7.11 predates the 3.7.13 default), MX lookup for the recipient
domain, and ``smtp_tcp_port`` for the sink's port — a port that applies *with* MX lookup (a
bracketed ``[host]:port`` nexthop would skip the MX lookup and change DANE's reference names,
RFC 7672 §2.2.2).  Every daemon runs unchrooted (master.cf chroot column ``n``) so it reads
/etc/resolv.conf directly.

Postfix asks the system resolver, which only reads /etc/resolv.conf and only port 53.  The
machine's file is left alone: the instance is started inside a private mount namespace
(``unshare -m``) in which a resolv.conf naming the benchmark's Unbound (on 127.0.0.153:53,
``options trust-ad`` so glibc passes the AD bit through) is bind-mounted over /etc/resolv.conf.
The daemons Postfix's master spawns inherit that namespace.

dane-relay runs as ``python -m relay serve --config F`` with ``[dns] validation = "resolver"``
pointing at the same Unbound, and ``[delivery] smtp_port`` = the sink's port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

PROJECT = Path(__file__).resolve().parents[1]


class Sender(Protocol):
    name: str
    listen: tuple[str, int]

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def root_pid(self) -> int: ...


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_for_banner(address: tuple[str, int], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(address, timeout=2) as sock:
                if sock.recv(512).startswith(b"220"):
                    sock.sendall(b"QUIT\r\n")
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers 220 on {address[0]}:{address[1]} ({last})")


# -- Postfix -------------------------------------------------------------------------------

MASTER_CF = """\
# service type private unpriv chroot wakeup maxproc command
{listen} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
tlsproxy unix - - n - 0 tlsproxy
"""


def postfix_main_cf(folder: Path, sink_port: int, reuse: bool) -> str:
    return f"""\
compatibility_level = 3.6
queue_directory = {folder}/queue
data_directory = {folder}/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {folder}/maillog
maillog_file_prefixes = {folder}
myhostname = relay.bench.test
mydomain = relay.bench.test
myorigin = $myhostname
mydestination =
relayhost =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtp_dns_support_level = dnssec
smtp_tls_security_level = dane
smtp_tls_dane_insecure_mx_policy = dane
smtp_host_lookup = dns
smtp_tls_loglevel = 1
smtp_tls_session_cache_database =
dnssec_probe = ns:test.
smtp_tcp_port = {sink_port}
smtp_tls_connection_reuse = {"yes" if reuse else "no"}
"""


@dataclass
class PostfixSender:
    name: str
    folder: Path
    resolv_conf: Path
    sink_port: int
    reuse: bool
    listen: tuple[str, int] = field(default_factory=lambda: ("127.0.0.1", free_port()))

    @property
    def config_dir(self) -> Path:
        return self.folder / "etc"

    def start(self) -> None:
        postfix = shutil.which("postfix") or "/usr/sbin/postfix"
        if not Path(postfix).exists():
            raise RuntimeError("postfix is not installed: apt-get install -y postfix")
        self.config_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("queue", "data"):
            (self.folder / sub).mkdir(exist_ok=True)
        shutil.chown(self.folder / "data", "postfix", "postfix")
        (self.config_dir / "main.cf").write_text(
            postfix_main_cf(self.folder, self.sink_port, self.reuse)
        )
        host, port = self.listen
        (self.config_dir / "master.cf").write_text(MASTER_CF.format(listen=f"{host}:{port}"))
        script = (
            f"mount --bind {self.resolv_conf} /etc/resolv.conf && "
            f"{postfix} -c {self.config_dir} check && exec {postfix} -c {self.config_dir} start"
        )
        done = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"postfix did not start: {done.stderr.strip()} {self._log_tail()}")
        wait_for_banner(self.listen)

    def root_pid(self) -> int:
        return int((self.folder / "queue" / "pid" / "master.pid").read_text().split()[0])

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            pid = self.root_pid()
            subprocess.run(
                ["postfix", "-c", str(self.config_dir), "stop"], capture_output=True, check=False
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.05)

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return " | ".join((self.folder / "maillog").read_text().splitlines()[-5:])
        return ""


# -- dane-relay ----------------------------------------------------------------------------


def relay_config(folder: Path, listen: tuple[str, int], resolver: str, sink_port: int) -> str:
    return f"""\
[dns]
validation = "resolver"
nameservers = ["{resolver}"]

[delivery]
security_level = "dane"
helo_name = "relay.bench.test"
smtp_port = {sink_port}

[listen]
address = "{listen[0]}:{listen[1]}"

[spool]
path = "{folder}/spool"

[log]
format = "text"
level = "info"
"""


@dataclass
class RelaySender:
    name: str
    folder: Path
    resolver: str  # "IP:port"
    sink_port: int
    listen: tuple[str, int] = field(default_factory=lambda: ("127.0.0.1", free_port()))
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "relay.toml"
        config.write_text(relay_config(self.folder, self.listen, self.resolver, self.sink_port))
        log = (self.folder / "relay.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "--config", str(config)],
            cwd=PROJECT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(PROJECT)},
        )
        log.close()
        try:
            wait_for_banner(self.listen)
        except RuntimeError:
            self.stop()
            tail = (self.folder / "relay.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"dane-relay serve did not start:\n{tail}") from None

    def root_pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
