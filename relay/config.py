"""The configuration file: TOML read into frozen dataclasses, one per section.

One responsibility: turn `relay.toml` (or the embedded defaults) into a
`Config` value, or stop with one `ConfigError` line that names the file and
the offending key (`relay.toml: dns.timeout: must be a positive number ...`).
Unknown sections and keys are errors too, so that a typo never silently
leaves a default in force.

Adding a section ([listen], [spool], ...): write a frozen dataclass whose
fields are declared `field(default=..., metadata=parsed_by(parser))`,
optionally give it a `check()` method for rules that involve several keys
(raise `Invalid("key: message")`), and add it to `Config` as
`name: Section = field(default_factory=Section)`.  Parsers are small
functions from the TOML value to the field's value that raise `Invalid`
with a message; `_read_section` does the rest.  A section whose keys are
data rather than names (like [policy], "domain" = "level") instead gives its
class a `from_table(table)` classmethod that raises `Invalid("key: message")`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from relay.errors import ConfigError
from relay.policy import DEFAULT_LEVEL, PolicyLevel, level_for_domain
from relay.schedule import DAY, RetryPolicy
from relay.submission import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_MESSAGES_PER_MINUTE_PER_CLIENT,
    DEFAULT_MAX_RECIPIENTS,
    ListenSettings,
    Network,
    parse_listen_address,
)
from tlsa.local_resolver import LocalValidatingResolver
from tlsa.resolver import Nameserver, ValidatingStubResolver, remote_nameserver_problem
from tlsa.trust_anchors import TrustAnchor, TrustAnchorError, load_trust_anchors

__all__ = [
    "RESOLV_CONF",
    "Config",
    "DeliveryConfig",
    "DnsConfig",
    "Invalid",
    "ListenConfig",
    "LogConfig",
    "MetricsConfig",
    "PolicyConfig",
    "SpoolConfig",
    "make_resolver",
    "parse_nameserver",
    "parsed_by",
    "system_nameservers",
]

RESOLV_CONF = Path("/etc/resolv.conf")
DNS_PORT = 53

Parser = Callable[[Any], Any]


class Invalid(ValueError):
    """A value a parser rejects; the message says what was expected."""


def parsed_by(parser: Parser) -> dict[str, Parser]:
    """Field metadata naming the parser that checks a key's TOML value.

    Declare a key as `name: type = field(default=..., metadata=parsed_by(parser))`.
    """
    return {"parse": parser}


# -- parsers ----------------------------------------------------------------------------


def _show(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value).lower()


def one_of(*choices: str) -> Parser:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            expected = " or ".join(f'"{c}"' for c in choices)
            raise Invalid(f"must be {expected}, got {_show(value)}")
        return value

    return parse


def positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise Invalid(f"must be a positive number of seconds, got {_show(value)}")
    return float(value)


_DURATION = re.compile(r"^(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[smhdw]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(*, allow_zero: bool) -> Parser:
    """Seconds as a number, or a string with a Postfix time unit: "300s", "5m", "4h", "5d", "1w"."""

    def parse(value: Any) -> float:
        seconds: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (match := _DURATION.match(value.strip())):
            seconds = float(match["amount"]) * _UNIT_SECONDS[match["unit"]]
        if seconds is None or seconds < 0 or (seconds == 0 and not allow_zero):
            least = "zero or more" if allow_zero else "a positive number of"
            raise Invalid(
                f'must be {least} seconds, or a string such as "300s", "4h" or "5d", '
                f"got {_show(value)}"
            )
        return seconds

    return parse


def integer(low: int, high: int) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise Invalid(f"must be an integer from {low} to {high}, got {_show(value)}")
        return value

    return parse


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, got {_show(value)}")
    return value


def path(value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise Invalid(f"must be a file path, got {_show(value)}")
    return Path(value)


_BRACKETED = re.compile(r"^\[(?P<ip>[^\]]+)\](?::(?P<port>\d+))?$")


def parse_nameserver(text: str) -> Nameserver:
    """`IP`, `IPv4:port` or `[IPv6]:port` as (address, port); port 53 when absent."""
    port = DNS_PORT
    bracketed = _BRACKETED.match(text)
    if bracketed:
        address = bracketed["ip"]
        if bracketed["port"] is not None:
            port = int(bracketed["port"])
    elif text.count(":") == 1:
        address, _, port_text = text.partition(":")
        if not port_text.isdigit():
            raise Invalid(f"{text!r} has no valid port")
        port = int(port_text)
    else:
        address = text
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise Invalid(
            f"{text!r} is not an IP address (a host name would itself need DNS to resolve)"
        ) from None
    if bracketed and ip.version != 6:
        raise Invalid(f"{text!r}: brackets are for IPv6 addresses")
    if not 0 < port < 65536:
        raise Invalid(f"{text!r}: port {port} is out of range")
    return str(ip), port


def nameserver_list(value: Any) -> tuple[Nameserver, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid(f'must be a list of strings such as ["127.0.0.1"], got {_show(value)}')
    if not value:
        raise Invalid("must list at least one nameserver (leave it out to use /etc/resolv.conf)")
    return tuple(parse_nameserver(v) for v in value)


# -- sections --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DnsConfig:
    """[dns]: how answers and their DNSSEC status are obtained (RFC 7672 §2.1.1).

    `validation` "local" (the default) validates every answer in-process from
    the trust anchors (RFC 4035 §5), so any recursive resolver will do;
    "resolver" trusts the AD bit of a validating resolver on loopback.
    `nameservers` None means the nameserver lines of /etc/resolv.conf (port
    53), read when the resolver is made.  `trust_anchor` None means the IANA
    root anchors shipped in the package; a relative path is relative to the
    config file.  `timeout` is per try; `attempts` is the number of rounds
    over the nameservers.
    """

    validation: str = field(default="local", metadata=parsed_by(one_of("resolver", "local")))
    nameservers: tuple[Nameserver, ...] | None = field(
        default=None, metadata=parsed_by(nameserver_list)
    )
    trust_anchor: Path | None = field(default=None, metadata=parsed_by(path))
    timeout: float = field(default=5.0, metadata=parsed_by(positive_number))
    attempts: int = field(default=2, metadata=parsed_by(integer(1, 10)))
    allow_remote_resolver: bool = field(default=False, metadata=parsed_by(boolean))

    def check(self) -> None:
        """Rules across keys; raises Invalid naming the key as `key: message`."""
        # With "local" nothing is trusted from the nameservers (every answer is validated
        # here), so they may be anywhere; the loopback rule protects the AD bit only.
        if self.validation == "resolver" and self.nameservers and not self.allow_remote_resolver:
            for address, _ in self.nameservers:
                problem = remote_nameserver_problem(address)
                if problem is not None:
                    raise Invalid(f"nameservers: {_name_the_switch(problem)}")
        try:
            self.trust_anchors()
        except TrustAnchorError as exc:
            raise Invalid(f"trust_anchor: {exc}") from None

    def trust_anchors(self) -> tuple[TrustAnchor, ...]:
        """The configured anchors (the shipped root anchors by default)."""
        return load_trust_anchors(self.trust_anchor)

    def effective_nameservers(self, resolv_conf: Path = RESOLV_CONF) -> tuple[Nameserver, ...]:
        """The configured nameservers, else those of `resolv_conf`; ConfigError if neither."""
        if self.nameservers:
            return self.nameservers
        found = system_nameservers(resolv_conf)
        if not found:
            raise ConfigError(
                f"dns.nameservers: not set, and {resolv_conf} lists no usable nameserver"
            )
        return found


def system_nameservers(resolv_conf: Path = RESOLV_CONF) -> tuple[Nameserver, ...]:
    """The `nameserver` lines of a resolv.conf file, port 53; () when unreadable."""
    try:
        lines = resolv_conf.read_text("utf-8", errors="replace").splitlines()
    except OSError:
        return ()
    found: list[Nameserver] = []
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            address = words[1].split("%", 1)[0]  # drop an IPv6 zone index
            try:
                found.append((str(ipaddress.ip_address(address)), DNS_PORT))
            except ValueError:
                continue
    return tuple(found)


# -- [delivery] and [policy] ---------------------------------------------------------------

# RFC 1035 §2.3.1 / RFC 5321 §4.1.2 sub-domain: letters, digits, hyphens inside.
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def domain_name_problem(name: str) -> str | None:
    """Why `name` is not an ASCII domain name (A-labels for IDNs), or None.

    RFC 5321 §4.1.2 (sub-domain = Let-dig [Ldh-str]), §4.5.3.1.2 (255 octets),
    RFC 1035 §2.3.4 (labels of 63 octets); RFC 5890 §2.3.2.1: internationalized
    labels are written in their A-label (xn--) form.
    """
    if not name.isascii():
        return f"{name!r} is not ASCII; write internationalized names as A-labels (xn--...)"
    text = name.lower().removesuffix(".")
    if not text:
        return "the domain name is empty"
    if len(text) > 253:
        return f"{name!r} is longer than 253 characters"
    for label in text.split("."):
        if not _LABEL.match(label):
            return f"{name!r} has an invalid label {label!r} (letters, digits and inner hyphens)"
    return None


def tls_level(value: Any) -> PolicyLevel:
    if not isinstance(value, str):
        raise Invalid(f"must be a TLS security level name, got {_show(value)}")
    try:
        return PolicyLevel.parse(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def host_name(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a host name, got {_show(value)}")
    problem = domain_name_problem(value)
    if problem is not None:
        raise Invalid(f"must be a host name: {problem}")
    return value.lower().removesuffix(".")


def ip_address(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be an IPv4 or IPv6 address, got {_show(value)}")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise Invalid(f"must be an IPv4 or IPv6 address, got {value!r}") from None


@dataclass(frozen=True)
class DeliveryConfig:
    """[delivery]: how the SMTP client connects (Postfix smtp_* parameters in brackets).

    `security_level` is the TLS level for every domain without a [policy]
    entry [smtp_tls_security_level].  `helo_name` None means the machine's
    FQDN, read when a delivery starts [smtp_helo_name = $myhostname].
    `smtp_port` is the port dialled on every MX host; TLSA records are looked
    up at `_<smtp_port>._tcp` as Postfix does (RFC 7672 §2.2.1 names
    `_25._tcp` because SMTP relay uses port 25).  `address_preference` orders
    the IPv6 and IPv4 addresses of one host [smtp_address_preference]; "any"
    keeps them in one randomly shuffled list.
    """

    security_level: PolicyLevel = field(default=DEFAULT_LEVEL, metadata=parsed_by(tls_level))
    helo_name: str | None = field(default=None, metadata=parsed_by(host_name))
    smtp_port: int = field(default=25, metadata=parsed_by(integer(1, 65535)))
    connect_timeout: float = field(default=30.0, metadata=parsed_by(positive_number))
    command_timeout: float = field(default=300.0, metadata=parsed_by(positive_number))
    data_timeout: float = field(default=600.0, metadata=parsed_by(positive_number))
    source_address: str | None = field(default=None, metadata=parsed_by(ip_address))
    address_preference: str = field(
        default="any", metadata=parsed_by(one_of("any", "ipv6", "ipv4"))
    )
    # The queue (relay.schedule, relay.engine); durations in seconds or "300s"/"4h"/"5d".
    minimal_backoff_time: float = field(
        default=300.0, metadata=parsed_by(duration(allow_zero=False))
    )
    maximal_backoff_time: float = field(
        default=4000.0, metadata=parsed_by(duration(allow_zero=False))
    )
    maximal_queue_lifetime: float = field(
        default=5 * DAY, metadata=parsed_by(duration(allow_zero=True))
    )
    bounce_queue_lifetime: float = field(
        default=5 * DAY, metadata=parsed_by(duration(allow_zero=True))
    )
    delay_warning_time: float = field(default=0.0, metadata=parsed_by(duration(allow_zero=True)))
    destination_concurrency_limit: int = field(default=20, metadata=parsed_by(integer(1, 10000)))
    concurrency_limit: int = field(default=100, metadata=parsed_by(integer(1, 100000)))
    # Connection reuse (relay.session_pool) [smtp_connection_cache_time_limit,
    # smtp_connection_reuse_time_limit, and TLS reuse as smtp_tls_connection_reuse].
    connection_reuse: bool = field(default=True, metadata=parsed_by(boolean))
    connection_cache_time_limit: float = field(
        default=2.0, metadata=parsed_by(duration(allow_zero=False))
    )
    connection_reuse_time_limit: float = field(
        default=300.0, metadata=parsed_by(duration(allow_zero=False))
    )

    def check(self) -> None:
        """Rules across keys; raises Invalid naming the key as `key: message`."""
        problem = self.retry_policy().problem()
        if problem is not None:
            raise Invalid(problem)
        if self.destination_concurrency_limit > self.concurrency_limit:
            raise Invalid(
                "destination_concurrency_limit: must not exceed concurrency_limit "
                f"({self.destination_concurrency_limit} > {self.concurrency_limit})"
            )

    def effective_helo_name(self) -> str:
        """The configured HELO name, else this machine's FQDN (read now, not at load time)."""
        return self.helo_name or socket.getfqdn()

    def retry_policy(self) -> RetryPolicy:
        """The retry schedule these keys describe (relay.schedule)."""
        return RetryPolicy(
            minimal_backoff_time=self.minimal_backoff_time,
            maximal_backoff_time=self.maximal_backoff_time,
            maximal_queue_lifetime=self.maximal_queue_lifetime,
            bounce_queue_lifetime=self.bounce_queue_lifetime,
            delay_warning_time=self.delay_warning_time,
        )


@dataclass(frozen=True)
class PolicyConfig:
    """[policy]: per-destination TLS levels, `"domain" = "level"` [smtp_tls_policy_maps].

    A key `example.com` is that domain only; `.example.com` is every
    subdomain of it (relay.policy.level_for_domain).  Keys are lower-cased,
    without a trailing dot; internationalized names must be A-labels.
    """

    levels: tuple[tuple[str, PolicyLevel], ...] = ()

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> PolicyConfig:
        """Parse the table; Invalid names the offending key as `"key": message`."""
        levels: dict[str, PolicyLevel] = {}
        for key, value in table.items():
            shown = f'"{key}"'
            if isinstance(value, dict):
                raise Invalid(
                    f"{key}: must be a TLS security level name; quote domain keys, "
                    f'e.g. "example.com" = "dane-only"'
                )
            domain = key.lower().removesuffix(".")
            problem = domain_name_problem(domain.removeprefix("."))
            if problem is not None:
                raise Invalid(f"{shown}: not a domain or .parent-domain pattern: {problem}")
            if domain in levels:
                raise Invalid(f"{shown}: the domain is listed twice")
            try:
                levels[domain] = tls_level(value)
            except Invalid as exc:
                raise Invalid(f"{shown}: {exc}") from None
        return cls(tuple(sorted(levels.items())))

    def as_mapping(self) -> dict[str, PolicyLevel]:
        return dict(self.levels)

    def level_for(self, domain: str, default: PolicyLevel) -> PolicyLevel:
        """The level for a recipient domain (relay.policy.level_for_domain)."""
        return level_for_domain(domain, default, self.as_mapping())


# -- [listen], [spool], [log], [metrics] -------------------------------------------------------


def listen_address(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f'must be "IP:port" or "[IPv6]:port", got {_show(value)}')
    try:
        parse_listen_address(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return value


def network_list(value: Any) -> tuple[Network, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid(f'must be a list of networks such as ["127.0.0.0/8"], got {_show(value)}')
    networks: list[Network] = []
    for text in value:
        try:
            networks.append(ipaddress.ip_network(text, strict=True))
        except ValueError as exc:
            raise Invalid(f"{text!r} is not a network address/prefix: {exc}") from None
    return tuple(networks)


_DEFAULT_LISTEN = ListenSettings()


@dataclass(frozen=True)
class ListenConfig:
    """[listen]: the submission listener (relay.listener; relay.submission.ListenSettings).

    Relaying is allowed to clients in `networks` and to authenticated users
    (RFC 5321 §3.6.1: never an open relay); AUTH without TLS only from
    `plaintext_auth_networks` (RFC 4954 §4).  STARTTLS is offered when both
    `tls_cert` and `tls_key` are set (RFC 3207).  Limits of 0 mean "no limit";
    clients in `networks` are exempt from the per-client limits.
    """

    address: str = field(default=_DEFAULT_LISTEN.address, metadata=parsed_by(listen_address))
    networks: tuple[Network, ...] = field(
        default=_DEFAULT_LISTEN.networks, metadata=parsed_by(network_list)
    )
    plaintext_auth_networks: tuple[Network, ...] = field(
        default=_DEFAULT_LISTEN.plaintext_auth_networks, metadata=parsed_by(network_list)
    )
    tls_cert: Path | None = field(default=None, metadata=parsed_by(path))
    tls_key: Path | None = field(default=None, metadata=parsed_by(path))
    users_file: Path | None = field(default=None, metadata=parsed_by(path))
    max_message_size: int = field(
        default=DEFAULT_MAX_MESSAGE_SIZE, metadata=parsed_by(integer(1024, 2**40))
    )
    max_recipients: int = field(
        default=DEFAULT_MAX_RECIPIENTS, metadata=parsed_by(integer(1, 1_000_000))
    )
    max_connections_per_client: int = field(
        default=DEFAULT_MAX_CONNECTIONS_PER_CLIENT, metadata=parsed_by(integer(0, 1_000_000))
    )
    max_messages_per_minute_per_client: int = field(
        default=DEFAULT_MAX_MESSAGES_PER_MINUTE_PER_CLIENT,
        metadata=parsed_by(integer(0, 1_000_000)),
    )
    max_connections: int = field(
        default=DEFAULT_MAX_CONNECTIONS, metadata=parsed_by(integer(0, 1_000_000))
    )
    idle_timeout: float = field(default=DEFAULT_IDLE_TIMEOUT, metadata=parsed_by(positive_number))

    def check(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            missing = "tls_key" if self.tls_key is None else "tls_cert"
            raise Invalid(f"{missing}: tls_cert and tls_key go together (both or neither)")

    def settings(self) -> ListenSettings:
        """The listener's settings (relay.submission.ListenSettings)."""
        return ListenSettings(
            address=self.address,
            networks=self.networks,
            plaintext_auth_networks=self.plaintext_auth_networks,
            tls_cert=self.tls_cert,
            tls_key=self.tls_key,
            users_file=self.users_file,
            max_message_size=self.max_message_size,
            max_recipients=self.max_recipients,
            max_connections_per_client=self.max_connections_per_client,
            max_messages_per_minute_per_client=self.max_messages_per_minute_per_client,
            max_connections=self.max_connections,
            idle_timeout=self.idle_timeout,
        )


@dataclass(frozen=True)
class SpoolConfig:
    """[spool]: the queue folder (relay.spool).  The default "spool" is relative to the
    working directory; a relative path written in a file is relative to that file."""

    path: Path = field(default=Path("spool"), metadata=parsed_by(path))


@dataclass(frozen=True)
class LogConfig:
    """[log]: one line per event on standard error, as text (Postfix-like) or JSON (relay.log)."""

    format: str = field(default="text", metadata=parsed_by(one_of("text", "json")))
    level: str = field(
        default="info", metadata=parsed_by(one_of("debug", "info", "warning", "error"))
    )


def optional_listen_address(value: Any) -> str | None:
    if value == "":
        return None
    return listen_address(value)


@dataclass(frozen=True)
class MetricsConfig:
    """[metrics]: the Prometheus endpoint "IP:port" (relay.metrics); None (or "") is off."""

    listen: str | None = field(default=None, metadata=parsed_by(optional_listen_address))


# -- the whole file ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """The relay's configuration: one field per TOML section."""

    dns: DnsConfig = field(default_factory=DnsConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    listen: ListenConfig = field(default_factory=ListenConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    @classmethod
    def default(cls) -> Config:
        """The embedded defaults: what an empty file gives, no file needed."""
        return cls()

    @classmethod
    def load(cls, file: Path) -> Config:
        """Read and check the TOML file at `file`; ConfigError (one line) when it is invalid."""
        try:
            with file.open("rb") as handle:
                data = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        return cls.from_mapping(data, source=str(file), base=file.parent)

    @classmethod
    def from_toml(cls, text: str, source: str = "<config>", base: Path | None = None) -> Config:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        return cls.from_mapping(data, source=source, base=base)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], source: str = "<config>", base: Path | None = None
    ) -> Config:
        """Build from parsed TOML; relative paths are taken relative to `base`."""
        sections = {f.name: f for f in dataclasses.fields(cls)}
        for name in data:
            if name not in sections:
                known = ", ".join(f"[{s}]" for s in sections)
                raise ConfigError(f"{source}: {name}: unknown section (known: {known})")
        values = {}
        for name, section in sections.items():
            # Each section field is declared `field(default_factory=TheSectionClass)`.
            section_type: Any = section.default_factory
            values[name] = _read_section(section_type, data.get(name, {}), name, source, base)
        return cls(**values)


S = TypeVar("S")


def _read_section(
    cls: Callable[..., S], table: Any, name: str, source: str, base: Path | None
) -> S:
    """One section: unknown keys refused, each key parsed, then cross-key checks."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: {name}: must be a table ([{name}])")
    from_table = getattr(cls, "from_table", None)
    if from_table is not None:
        # A section whose keys are data (e.g. [policy] domain = level) parses itself.
        try:
            result: S = from_table(table)
        except Invalid as exc:
            raise ConfigError(f"{source}: {name}.{exc}") from None
        return result
    keys = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in table:
        if key not in keys:
            raise ConfigError(f"{source}: {name}.{key}: unknown key (known: {', '.join(keys)})")
    values: dict[str, Any] = {}
    for key, value in table.items():
        try:
            parsed = keys[key].metadata["parse"](value)
        except Invalid as exc:
            raise ConfigError(f"{source}: {name}.{key}: {exc}") from None
        if isinstance(parsed, Path) and base is not None and not parsed.is_absolute():
            parsed = base / parsed
        values[key] = parsed
    section = cls(**values)
    check = getattr(section, "check", None)
    if check is not None:
        try:
            check()
        except Invalid as exc:
            raise ConfigError(f"{source}: {name}.{exc}") from None
    return section


# -- from config to objects ------------------------------------------------------------------


def make_resolver(
    dns: DnsConfig, *, resolv_conf: Path = RESOLV_CONF, **options: Any
) -> ValidatingStubResolver:
    """The resolver the [dns] section describes; ConfigError when it cannot be made.

    `options` go to the resolver (a test clock, a cache).  "local" validates
    in-process from the trust anchors (tlsa.local_resolver.LocalValidatingResolver,
    which reuses the stub's transport); "resolver" trusts
    the AD bit, so nameservers from resolv.conf get the same loopback rule as
    configured ones, with a message that says where they came from.
    """
    nameservers = dns.effective_nameservers(resolv_conf)
    if dns.validation == "local":
        try:
            anchors = dns.trust_anchors()
        except TrustAnchorError as exc:
            raise ConfigError(f"dns.trust_anchor: {exc}") from None
        return LocalValidatingResolver(
            nameservers, anchors, timeout=dns.timeout, attempts=dns.attempts, **options
        )
    try:
        return ValidatingStubResolver(
            nameservers,
            timeout=dns.timeout,
            attempts=dns.attempts,
            allow_remote_resolver=dns.allow_remote_resolver,
            **options,
        )
    except ValueError as exc:
        origin = "" if dns.nameservers else f" (not set; taken from {resolv_conf})"
        raise ConfigError(f"dns.nameservers{origin}: {_name_the_switch(str(exc))}") from None


def _name_the_switch(problem: str) -> str:
    """The resolver's message, with the config key that overrides the loopback rule."""
    return problem.replace("allow_remote_resolver", "dns.allow_remote_resolver = true")
