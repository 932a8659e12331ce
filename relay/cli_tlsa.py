"""`dane-relay tlsa generate|verify`: make TLSA records for a certificate, check a chain offline.

Argument handling and printing only; the matching is `tlsa.match.verify`.
Bad input (unreadable file, no certificate, a record that is not
`usage selector mtype hex`, a bad time) raises `UsageError`: one line on
stderr and exit status 2.  `verify` exits 0 when authenticated, 1 when not.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from relay.errors import UsageError
from tlsa.match import Verdict, verify
from tlsa.records import MalformedRecord, TLSARecord

EXIT_AUTHENTICATED = 0
EXIT_NOT_AUTHENTICATED = 1

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL
)

_GENERATE_HELP = """\
Print zone-file TLSA lines for a certificate: _<port>._tcp.<host>. IN TLSA u s m hex.

Which certificate of CERT.pem is used depends on --usage: DANE-EE (3) and
PKIX-EE (1) use the first certificate (the server's own). DANE-TA (2) and
PKIX-TA (0) use the last CA certificate (basicConstraints cA) in the file,
so a full-chain file yields its top CA; pass a file holding just the issuer
to pin that one. SMTP clients use only usages 2 and 3 (RFC 7672 §3.1.3), and
a DANE-TA certificate must be in the chain the server sends (RFC 7672 §3.1.2).
<host> defaults to the first DNS name in the server certificate's
subjectAltName.
"""

_VERIFY_HELP = """\
Check a certificate chain against TLSA records, as dane-relay does after the
TLS handshake (RFC 7671, RFC 7672). Exit status: 0 authenticated,
1 not authenticated, 2 bad input.
"""


def register(commands: Any, name: str, summary: str) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=summary)
    parser.set_defaults(handler=_missing_command)
    actions = parser.add_subparsers(dest="tlsa_command", metavar="ACTION")
    _register_generate(actions)
    _register_verify(actions)


def _missing_command(args: argparse.Namespace) -> int:
    raise UsageError("tlsa needs an action: generate or verify (see dane-relay tlsa --help)")


# -- generate ---------------------------------------------------------------------------


def _register_generate(actions: Any) -> None:
    parser: argparse.ArgumentParser = actions.add_parser(
        "generate",
        help="print TLSA records for a certificate",
        description=_GENERATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("cert", metavar="CERT.pem", type=Path, help="PEM certificate(s)")
    parser.add_argument("--usage", type=int, choices=(0, 1, 2, 3), default=3, help="default 3")
    parser.add_argument("--selector", type=int, choices=(0, 1), default=1, help="default 1")
    parser.add_argument("--mtype", type=int, choices=(0, 1, 2), default=1, help="default 1")
    parser.add_argument("--host", help="TLSA base domain (default: first DNS subjectAltName)")
    parser.add_argument("--port", type=_port, default=25, help="default 25")
    parser.set_defaults(handler=_generate)


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return int(text)


def _generate(args: argparse.Namespace) -> int:
    certs = [_load_certificate(der, args.cert, i) for i, der in enumerate(_read_pem(args.cert))]
    cert = _pick_certificate(certs, args.usage, args.cert)
    host = _owner_host(args.host, certs[0])
    selected = (
        cert.public_bytes(Encoding.DER)
        if args.selector == 0
        else cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    data = {0: selected, 1: hashlib.sha256(selected).digest(), 2: hashlib.sha512(selected).digest()}
    record = TLSARecord(args.usage, args.selector, args.mtype, data[args.mtype])
    print(f"_{args.port}._tcp.{host}. IN TLSA {record.to_text()}")
    return 0


def _pick_certificate(certs: list[x509.Certificate], usage: int, path: Path) -> x509.Certificate:
    """The end-entity (first) certificate for usages 1/3, the last CA for 0/2."""
    if usage in (1, 3):
        return certs[0]
    cas = [c for c in certs if _is_ca(c)]
    if not cas:
        raise UsageError(f"{path}: no CA certificate for a usage {usage} (trust anchor) record")
    return cas[-1]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError, TypeError, x509.DuplicateExtension):
        return False


def _owner_host(host: str | None, leaf: x509.Certificate) -> str:
    if host is None:
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = san.get_values_for_type(x509.DNSName)
        except (
            x509.ExtensionNotFound,
            ValueError,
            TypeError,  # cryptography refuses some decodable values lazily with it
            x509.DuplicateExtension,
            x509.UnsupportedGeneralNameType,
        ):
            names = []
        if not names:
            raise UsageError("the certificate has no DNS subjectAltName; pass --host")
        host = names[0]
        if host.startswith("*."):
            raise UsageError(f"the first DNS subjectAltName is a wildcard ({host}); pass --host")
    host = host.strip().removesuffix(".")
    try:
        # RFC 6698 §3: the TLSA owner name uses the A-label form.
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UsageError(f"not a valid host name: {host!r}") from None
    if not ascii_host or any(not label for label in ascii_host.split(".")):
        raise UsageError(f"not a valid host name: {host!r}")
    return ascii_host


# -- verify -------------------------------------------------------------------------------


def _register_verify(actions: Any) -> None:
    parser: argparse.ArgumentParser = actions.add_parser(
        "verify",
        help="check a certificate chain against TLSA records",
        description=_VERIFY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--chain",
        required=True,
        type=Path,
        metavar="CHAIN.pem",
        help="PEM certificates as the server sends them, leaf first",
    )
    parser.add_argument(
        "--record",
        dest="records",
        action="append",
        required=True,
        metavar='"U S M HEX"',
        help="a TLSA record in presentation form; repeat for an RRset",
    )
    parser.add_argument(
        "--name",
        dest="names",
        action="append",
        default=[],
        metavar="HOST",
        help="reference identifier for DANE-TA name checks (RFC 7672 §3.2.2); repeatable",
    )
    parser.add_argument(
        "--at", metavar="TIME", help="ISO 8601 time to check validity at (default: now, UTC)"
    )
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.set_defaults(handler=_verify)


def _verify(args: argparse.Namespace) -> int:
    chain = _read_pem(args.chain)
    records = [_parse_record(text) for text in args.records]
    at = _parse_time(args.at) if args.at is not None else dt.datetime.now(dt.UTC)
    verdict = verify(chain, records, args.names, at)
    if args.json:
        print(json.dumps(_verdict_json(verdict, args.names, at), indent=2, ensure_ascii=False))
    else:
        _print_verdict(verdict)
    return EXIT_AUTHENTICATED if verdict.authenticated else EXIT_NOT_AUTHENTICATED


def _parse_record(text: str) -> TLSARecord:
    try:
        return TLSARecord.from_text(text)
    except MalformedRecord as exc:
        raise UsageError(f"--record {text!r}: {exc}") from None


def _parse_time(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--at {text!r}: not an ISO 8601 time such as 2026-11-22T00:00:00Z"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _verdict_json(verdict: Verdict, names: list[str], at: dt.datetime) -> dict[str, object]:
    return {
        "authenticated": verdict.authenticated,
        "record": verdict.record.to_text() if verdict.record is not None else None,
        "depth": verdict.depth,
        "reason": verdict.reason,
        "names": names,
        "at": at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "records": [
            {
                "record": r.record.to_text(),
                "usable": r.usable,
                "matched": r.matched,
                "depth": r.depth,
                "reason": r.reason,
            }
            for r in verdict.results
        ],
    }


def _print_verdict(verdict: Verdict) -> None:
    print(verdict.reason)
    for result in verdict.results:
        status = "matched" if result.matched else ("no match" if result.usable else "unusable")
        print(f"  {status:<8}  {_abbreviated(result.record)}: {result.reason}")


def _abbreviated(record: TLSARecord) -> str:
    text = record.to_text()
    return text if len(text) <= 80 else f"{text[:40]}…{text[-16:]}"


# -- files --------------------------------------------------------------------------------


def _read_pem(path: Path) -> list[bytes]:
    """The DER of every PEM CERTIFICATE block in `path`, in file order.

    The DER itself is not judged here: a malformed certificate is the
    matcher's business (a verdict), a file without certificates is bad input.
    """
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    blocks = _PEM_CERTIFICATE.findall(content)
    if not blocks:
        raise UsageError(f"{path}: no PEM certificates found")
    ders = []
    for index, block in enumerate(blocks, start=1):
        try:
            ders.append(base64.b64decode(b"".join(block.split()), validate=True))
        except binascii.Error:
            raise UsageError(f"{path}: PEM certificate {index} is not valid base64") from None
    return ders


def _load_certificate(der: bytes, path: Path, index: int) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise UsageError(
            f"{path}: certificate {index + 1} is not a valid X.509 certificate"
        ) from None
