"""Signing declared zones with real keys made at test time, then breaking them as declared.

Signer choice: ldns (``ldns-keygen`` + ``ldns-signzone``, Debian package ldnsutils) rather
than BIND's ``dnssec-keygen``/``dnssec-signzone``:

- one command per zone and no ``$INCLUDE`` of key files: ldns-signzone adds the DNSKEY itself
  and ldns-keygen writes the DS next to the key, so a parent's DS comes straight from a file;
- the validity window is two plain options (``-i``/``-e``), so expired signatures are just a
  second signing run with a window in the past;
- NSEC3 opt-out is one flag (``-p``) and it does not run a post-signing verification, so it
  signs data BIND would refuse (a TLSA digest of the wrong length);
- it is NLnet Labs code like NSD and Unbound and is what the Makefile checks for.

Each zone gets a single combined key (flags 257, "CSK") that signs every RRset; that is
enough for a chain of trust and keeps key generation to one call per zone. All key
generation runs in parallel, then all signing: a parent's DS depends only on the child's
key, not on the child's signed zone.
"""

from __future__ import annotations

import base64
import re
import subprocess
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import tools
from .model import (
    Algorithm,
    CorruptSignature,
    Delegation,
    Denial,
    ExpiredSignatures,
    Forge,
    StripSignatures,
    Zone,
    label_count,
    parent_of,
)

DEFAULT_TTL = 3600
GLUE_ADDRESS = "127.0.0.1"  # data only: transport goes to the configured server port
RSA_BITS = 2048

# Validity windows, relative to now (seconds).
VALID_WINDOW = (-3600, 30 * 86400)
EXPIRED_WINDOW = (-60 * 86400, -30 * 86400)


class SignerError(RuntimeError):
    """A signer command failed; the message carries its command line and output."""


@dataclass(frozen=True)
class Key:
    """A key made by ldns-keygen: its files' base path, DNSKEY and DS lines."""

    base: Path
    dnskey: str
    ds: str

    @property
    def tag(self) -> int:
        return int(self.base.name.rsplit("+", 1)[1])


@dataclass(frozen=True)
class SignedZone:
    """A declared zone as it will be served: the zone file and (if signed) its key."""

    zone: Zone
    path: Path
    key: Key | None


@dataclass(frozen=True)
class SignedWorld:
    """Every zone ready to serve, plus the trust anchor (DS of the root key)."""

    zones: tuple[SignedZone, ...]
    trust_anchor: str

    def zone(self, name: str) -> SignedZone:
        for signed in self.zones:
            if signed.zone.name == name:
                return signed
        raise KeyError(name)


def _run(argv: Sequence[str], cwd: Path) -> str:
    proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SignerError(
            f"{' '.join(argv)} (in {cwd}) exited {proc.returncode}:\n{proc.stderr}{proc.stdout}"
        )
    return proc.stdout


def _dirname(zone_name: str) -> str:
    return "root" if zone_name == "." else zone_name.rstrip(".")


def _keygen(zone_name: str, algorithm: Algorithm, directory: Path) -> Key:
    directory.mkdir(parents=True, exist_ok=True)
    argv = [str(tools.require("ldns-keygen")), "-a", algorithm.value, "-k"]
    if algorithm is Algorithm.RSASHA256:
        argv += ["-b", str(RSA_BITS)]
    # /dev/urandom: /dev/random may block on an idle VM.
    argv += ["-r", "/dev/urandom", zone_name]
    base = directory / _run(argv, directory).strip()
    dnskey = _strip_comment(base.with_name(base.name + ".key").read_text().strip())
    ds = base.with_name(base.name + ".ds").read_text().strip()
    return Key(base=base, dnskey=dnskey, ds=ds)


def _strip_comment(line: str) -> str:
    """The line without its zone-file comment; a ";" inside a quoted string is data."""
    quoted = False
    escaped = False
    for index, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            return line[:index].rstrip()
    return line.rstrip()


def _ds_record(key: Key) -> str:
    """The key's DS as a zone-file line with an explicit TTL (ldns writes none)."""
    owner, klass, rrtype, rdata = key.ds.split(None, 3)
    return f"{owner} {DEFAULT_TTL} {klass} {rrtype} {rdata}"


def _has_soa(records: Iterable[str]) -> bool:
    return any(re.search(r"(^|\s)SOA(\s|$)", r, re.IGNORECASE) for r in records)


def _ns_name(zone_name: str) -> str:
    return "ns." if zone_name == "." else f"ns.{zone_name}"


def _zone_text(zone: Zone, delegations: Sequence[str]) -> str:
    lines = [f"$ORIGIN {zone.name}", f"$TTL {DEFAULT_TTL}"]
    ns = _ns_name(zone.name)
    if not _has_soa(zone.records):
        lines.append(f"@ SOA {ns} hostmaster.{zone.name.lstrip('.')} 1 3600 900 604800 300")
    lines += [f"@ NS {ns}", f"{ns} A {GLUE_ADDRESS}", *zone.records]
    lines += delegations
    return "\n".join(lines) + "\n"


def _delegation_lines(child: Zone, key: Key | None, decoy: Key | None) -> list[str]:
    ns = _ns_name(child.name)
    lines = [f"{child.name} {DEFAULT_TTL} IN NS {ns}", f"{ns} {DEFAULT_TTL} IN A {GLUE_ADDRESS}"]
    if child.delegation is Delegation.SECURE:
        if key is None:
            raise ValueError(
                f"zone {child.name} is unsigned, so its delegation cannot be secure: "
                "use Delegation.INSECURE (or BOGUS for a DS that matches no key)"
            )
        lines.append(_ds_record(key))
    elif child.delegation is Delegation.BOGUS:
        assert decoy is not None
        lines.append(_ds_record(decoy))
    return lines


def _signzone(
    zone: Zone, key: Key, unsigned: Path, output: Path, window: tuple[int, int], now: int
) -> None:
    assert zone.signing is not None
    inception, expiration = (now + offset for offset in window)
    argv = [str(tools.require("ldns-signzone")), "-i", str(inception), "-e", str(expiration)]
    if zone.signing.denial is not Denial.NSEC:
        argv += ["-n", "-t", "0"]  # RFC 9276: no salt, no extra iterations
        if zone.signing.denial is Denial.NSEC3_OPTOUT:
            argv.append("-p")
    argv += ["-o", zone.name, "-f", str(output), str(unsigned), str(key.base)]
    _run(argv, unsigned.parent)


def validate_declarations(zones: Sequence[Zone]) -> None:
    """Reject lists the world cannot serve, with a message saying why."""
    names = [z.name for z in zones]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"zones declared twice: {', '.join(duplicates)}")
    if "." not in names:
        raise ValueError("the world needs a root zone '.' (it holds the trust anchor)")
    root = next(z for z in zones if z.name == ".")
    if root.signing is None:
        raise ValueError("the root zone must be signed: its key is the trust anchor")


def sign_world(zones: Sequence[Zone], workdir: Path, *, now: int | None = None) -> SignedWorld:
    """Generate keys, add delegations, sign and break every zone; files go under ``workdir``."""
    validate_declarations(zones)
    tools.require_all("ldns-keygen", "ldns-signzone")
    now = int(time.time()) if now is None else now
    workdir.mkdir(parents=True, exist_ok=True)

    with ThreadPoolExecutor(max_workers=8) as pool:
        key_jobs = {
            z.name: pool.submit(_keygen, z.name, z.signing.algorithm, workdir / _dirname(z.name))
            for z in zones
            if z.signing is not None
        }
        decoy_jobs = {
            z.name: pool.submit(
                _keygen,
                z.name,
                z.signing.algorithm if z.signing else Algorithm.ECDSAP256SHA256,
                workdir / _dirname(z.name) / "decoy",
            )
            for z in zones
            if z.delegation is Delegation.BOGUS and z.name != "."
        }
        keys = {name: job.result() for name, job in key_jobs.items()}
        decoys = {name: job.result() for name, job in decoy_jobs.items()}

        # Delegation records go into the parent before signing, except unsigned delegations
        # (no DS) of an opt-out parent: those are added after signing, so that no NSEC3 record
        # covers them exactly (ldns-signzone -p would still give each one its own NSEC3).
        delegations: dict[str, list[str]] = {z.name: [] for z in zones}
        unsigned_delegations: dict[str, list[str]] = {z.name: [] for z in zones}
        for child in zones:
            parent = parent_of(child, zones)
            if parent is None:
                if child.name != ".":
                    raise ValueError(f"zone {child.name} has no enclosing zone in the list")
                continue
            lines = _delegation_lines(child, keys.get(child.name), decoys.get(child.name))
            opt_out = parent.signing is not None and parent.signing.denial is Denial.NSEC3_OPTOUT
            if opt_out and child.delegation is Delegation.INSECURE:
                unsigned_delegations[parent.name] += lines
            else:
                delegations[parent.name] += lines

        sign_jobs = []
        results: list[SignedZone] = []
        for zone in zones:
            directory = workdir / _dirname(zone.name)
            directory.mkdir(parents=True, exist_ok=True)
            unsigned = directory / "unsigned.zone"
            unsigned.write_text(_zone_text(zone, delegations[zone.name]))
            final = directory / "served.zone"
            results.append(SignedZone(zone, final, keys.get(zone.name)))
            sign_jobs.append(
                pool.submit(
                    _sign_and_break,
                    zone,
                    keys.get(zone.name),
                    unsigned,
                    now,
                    unsigned_delegations[zone.name],
                )
            )
        for job, signed in zip(sign_jobs, results, strict=True):
            signed.path.write_text(job.result())

    root_key = keys["."]
    return SignedWorld(zones=tuple(results), trust_anchor=_ds_record(root_key) + "\n")


def _sign_and_break(
    zone: Zone, key: Key | None, unsigned: Path, now: int, after_signing: Sequence[str]
) -> str:
    if zone.signing is None or key is None:
        return unsigned.read_text()
    whole_zone_expired = any(
        isinstance(b, ExpiredSignatures) and b.owner is None for b in zone.breakage
    )
    signed = unsigned.with_name("signed.zone")
    window = EXPIRED_WINDOW if whole_zone_expired else VALID_WINDOW
    _signzone(zone, key, unsigned, signed, window, now)
    records = _parse(signed.read_text())

    expired_records: list[Record] | None = None
    for breakage in zone.breakage:
        if isinstance(breakage, ExpiredSignatures) and breakage.owner is not None:
            if expired_records is None:
                expired = unsigned.with_name("signed-expired.zone")
                _signzone(zone, key, unsigned, expired, EXPIRED_WINDOW, now)
                expired_records = _parse(expired.read_text())
            records = _swap_signatures(zone, breakage, records, expired_records)
        elif isinstance(breakage, CorruptSignature):
            records = _corrupt(zone, breakage, records)
        elif isinstance(breakage, StripSignatures):
            records = _strip(zone, breakage, records)
        elif isinstance(breakage, Forge):
            records = _forge(zone, breakage, records)
    records += _parse("\n".join(after_signing))
    return "".join(r.line() + "\n" for r in records)


# --- the signed zone as records -------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One line of ldns-signzone output: ``owner ttl class type rdata``."""

    owner: str
    ttl: int
    rrtype: str
    rdata: str

    def line(self) -> str:
        return f"{self.owner}\t{self.ttl}\tIN\t{self.rrtype}\t{self.rdata}"

    def covers(self, owner: str, rrtype: str) -> bool:
        """True for an RRSIG of ``owner`` over ``rrtype``."""
        return (
            self.rrtype == "RRSIG"
            and self.owner == owner
            and self.rdata.split(None, 1)[0].upper() == rrtype.upper()
        )


def _parse(text: str) -> list[Record]:
    records = []
    for raw in text.splitlines():
        line = _strip_comment(raw).strip()
        if not line or line.startswith("$"):
            continue
        owner, ttl, klass, rrtype, rdata = line.split(None, 4)
        if klass.upper() != "IN":
            raise SignerError(f"unexpected class in signed zone line: {raw}")
        records.append(Record(owner.lower(), int(ttl), rrtype.upper(), rdata))
    return records


def _require_signatures(zone: Zone, owner: str, rrtype: str, records: list[Record]) -> None:
    if not any(r.covers(owner, rrtype) for r in records):
        raise ValueError(f"zone {zone.name}: no RRSIG over {owner} {rrtype} to break")


def _corrupt(zone: Zone, b: CorruptSignature, records: list[Record]) -> list[Record]:
    owner = zone.absolute(b.owner)
    _require_signatures(zone, owner, b.rrtype, records)
    result = []
    for r in records:
        if r.covers(owner, b.rrtype):
            fields = r.rdata.split()
            signature = bytearray(base64.b64decode("".join(fields[8:])))
            signature[len(signature) // 2] ^= 0x01
            rdata = " ".join([*fields[:8], base64.b64encode(bytes(signature)).decode()])
            r = Record(r.owner, r.ttl, r.rrtype, rdata)
        result.append(r)
    return result


def _strip(zone: Zone, b: StripSignatures, records: list[Record]) -> list[Record]:
    owner = zone.absolute(b.owner)
    _require_signatures(zone, owner, b.rrtype, records)
    return [r for r in records if not r.covers(owner, b.rrtype)]


def _swap_signatures(
    zone: Zone, b: ExpiredSignatures, records: list[Record], expired: list[Record]
) -> list[Record]:
    assert b.owner is not None and b.rrtype is not None
    owner = zone.absolute(b.owner)
    _require_signatures(zone, owner, b.rrtype, records)
    stale = [r for r in expired if r.covers(owner, b.rrtype)]
    return [r for r in records if not r.covers(owner, b.rrtype)] + stale


def _forge(zone: Zone, b: Forge, records: list[Record]) -> list[Record]:
    owner = zone.absolute(b.owner)
    rrtype = b.rrtype.upper()
    if b.replace:
        if not any(r.owner == owner and r.rrtype == rrtype for r in records):
            raise ValueError(f"zone {zone.name}: no {owner} {rrtype} to replace")
        records = [r for r in records if not (r.owner == owner and r.rrtype == rrtype)]
    return records + [Record(owner, b.ttl, rrtype, rdata) for rdata in b.rdata]


def sort_key(zone: Zone) -> tuple[int, str]:
    """Parents before children (handy for stable listings)."""
    return (label_count(zone.name), zone.name)
