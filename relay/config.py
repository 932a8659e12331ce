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
with a message; `_read_section` does the rest.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from relay.errors import ConfigError
from tlsa.resolver import Nameserver, ValidatingStubResolver, remote_nameserver_problem
from tlsa.trust_anchors import TrustAnchor, TrustAnchorError, load_trust_anchors

__all__ = [
    "RESOLV_CONF",
    "Config",
    "DnsConfig",
    "Invalid",
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

    `nameservers` None means the nameserver lines of /etc/resolv.conf (port
    53), read when the resolver is made.  `trust_anchor` None means the IANA
    root anchors shipped in the package; a relative path is relative to the
    config file.  `timeout` is per try; `attempts` is the number of rounds
    over the nameservers.
    """

    validation: str = field(default="resolver", metadata=parsed_by(one_of("resolver", "local")))
    nameservers: tuple[Nameserver, ...] | None = field(
        default=None, metadata=parsed_by(nameserver_list)
    )
    trust_anchor: Path | None = field(default=None, metadata=parsed_by(path))
    timeout: float = field(default=5.0, metadata=parsed_by(positive_number))
    attempts: int = field(default=2, metadata=parsed_by(integer(1, 10)))
    allow_remote_resolver: bool = field(default=False, metadata=parsed_by(boolean))

    def check(self) -> None:
        """Rules across keys; raises Invalid naming the key as `key: message`."""
        if self.validation == "local":
            raise Invalid(
                'validation: "local" (in-process DNSSEC validation) is not implemented yet; '
                'use "resolver" with a validating resolver such as Unbound on loopback'
            )
        if self.nameservers and not self.allow_remote_resolver:
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


# -- the whole file ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """The relay's configuration: one field per TOML section."""

    dns: DnsConfig = field(default_factory=DnsConfig)

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

    `options` go to the resolver (a test clock, a cache).  Nameservers from
    resolv.conf get the same loopback rule as configured ones, with a
    message that says where they came from.
    """
    if dns.validation != "resolver":
        raise ConfigError(f'dns.validation: "{dns.validation}" is not implemented yet')
    nameservers = dns.effective_nameservers(resolv_conf)
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
