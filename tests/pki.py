"""Throwaway X.509 test PKIs: CAs, intermediates and server certificates.

Built with `cryptography` only, for unit tests of the DANE matcher and for
integration tests that run real TLS servers (write the PEM files with
`Issued.write()`).  Keys are generated fresh for every certificate so no two
certificates ever share a public key by accident.

    root = issue("Test Root CA", ca=True)
    inter = issue("Test Issuer CA", issuer=root, ca=True, path_length=0)
    leaf = issue("mx.example.com", issuer=inter, sans=["mx.example.com"], key_kind="rsa")
    chain = [leaf.der, inter.der]          # as a server would send it

Validity defaults to one hour ago .. 90 days ahead of the real clock; pass
`not_before`/`not_after` for fixed or expired windows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyKind = Literal["rsa", "ec", "ed25519"]
SignatureHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

#: keyUsage bits by the `x509.KeyUsage` argument names.
KEY_USAGE_BITS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)
DEFAULT: Literal["default"] = "default"


def new_key(kind: KeyKind = "ec") -> PrivateKey:
    """A fresh private key: RSA 2048, ECDSA P-256 or Ed25519."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key kind {kind!r}")


def name(common_name: str | None, *, organization: str | None = None) -> x509.Name:
    """A distinguished name with an optional O and CN (None: no CN; both None: empty)."""
    attributes = []
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    if common_name is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


@dataclass(frozen=True)
class Signer:
    """Who signs a certificate: an issuer name and its private key (no certificate needed)."""

    name: x509.Name
    key: PrivateKey


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key, and the encodings tests need."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def spki(self) -> bytes:
        """DER SubjectPublicKeyInfo (TLSA selector 1)."""
        return self.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def signer(self) -> Signer:
        return Signer(self.cert.subject, self.key)

    def tlsa(self, usage: int, selector: int, mtype: int) -> str:
        """The TLSA presentation text `u s m hex` for this certificate."""
        data = self.der if selector == 0 else self.spki
        if mtype == 1:
            data = hashlib.sha256(data).digest()
        elif mtype == 2:
            data = hashlib.sha512(data).digest()
        return f"{usage} {selector} {mtype} {data.hex()}"

    def write(
        self, directory: Path, stem: str, *, chain: Sequence[Issued] = ()
    ) -> tuple[Path, Path]:
        """Write `<stem>.pem` (this certificate, then `chain`) and `<stem>.key`; return them."""
        cert_path = directory / f"{stem}.pem"
        key_path = directory / f"{stem}.key"
        cert_path.write_bytes(pem_bundle(self, *chain))
        key_path.write_bytes(self.key_pem)
        key_path.chmod(0o600)
        return cert_path, key_path


def pem_bundle(*certs: Issued) -> bytes:
    """Concatenated PEM certificates, in the order given."""
    return b"".join(c.pem for c in certs)


def write_pem(path: Path, *certs: Issued) -> Path:
    path.write_bytes(pem_bundle(*certs))
    return path


def issue(
    common_name: str | None,
    *,
    issuer: Issued | Signer | None = None,
    key: PrivateKey | None = None,
    key_kind: KeyKind = "ec",
    subject: x509.Name | None = None,
    sans: Iterable[str] = (),
    ca: bool = False,
    path_length: int | None = None,
    basic_constraints: bool = True,
    key_usage: Collection[str] | Literal["default"] | None = DEFAULT,
    eku: Sequence[x509.ObjectIdentifier] | Literal["default"] | None = DEFAULT,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    serial: int | None = None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    hash_algorithm: SignatureHash | None = None,
    rsa_pss: bool = False,
) -> Issued:
    """Issue one certificate.

    issuer: the issuing `Issued` or `Signer`; None makes it self-signed.
    key / key_kind: the subject key, or the kind of fresh key to make.
    subject: overrides the subject built from `common_name` (None = no CN).
    sans: dNSName subjectAltNames (none: no SAN extension).
    ca, path_length, basic_constraints: basicConstraints (critical), or none at all.
    key_usage: keyUsage bit names (`KEY_USAGE_BITS`); "default" = keyCertSign+cRLSign
      for CAs, digitalSignature (+keyEncipherment for RSA) otherwise; None = omit.
    eku: extendedKeyUsage OIDs; "default" = serverAuth for non-CAs, none for CAs; None = omit.
    extensions: extra (extension, critical) pairs.
    hash_algorithm: signature hash; default SHA-256 (None is forced for Ed25519 signers).
    rsa_pss: an RSA issuer signs with RSASSA-PSS instead of PKCS #1 v1.5.
    """
    key = key if key is not None else new_key(key_kind)
    subject_name = subject if subject is not None else name(common_name)
    signer = issuer.signer if isinstance(issuer, Issued) else issuer
    signer = signer if signer is not None else Signer(subject_name, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name)
        .issuer_name(signer.name)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(hours=1))
        .not_valid_after(not_after or now + dt.timedelta(days=90))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca, path_length), True)
    usage = _key_usage(key_usage, ca=ca, rsa_key=isinstance(key, rsa.RSAPrivateKey))
    if usage is not None:
        builder = builder.add_extension(usage, True)
    purposes = ([] if ca else [ExtendedKeyUsageOID.SERVER_AUTH]) if eku == DEFAULT else eku or []
    if purposes:
        builder = builder.add_extension(x509.ExtendedKeyUsage(purposes), False)
    dns_names = [x509.DNSName(n) for n in sans]
    if dns_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(dns_names), False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    algorithm: SignatureHash | None = hash_algorithm or hashes.SHA256()
    if isinstance(signer.key, ed25519.Ed25519PrivateKey):
        algorithm = None  # RFC 8410 §6: Ed25519 signatures carry no separate hash
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
    return Issued(builder.sign(signer.key, algorithm, rsa_padding=pss if rsa_pss else None), key)


def _key_usage(
    bits: Collection[str] | Literal["default"] | None, *, ca: bool, rsa_key: bool
) -> x509.KeyUsage | None:
    if bits is None:
        return None
    if bits == DEFAULT:
        if ca:
            bits = {"key_cert_sign", "crl_sign"}
        else:
            bits = {"digital_signature", "key_encipherment"} if rsa_key else {"digital_signature"}
    unknown = set(bits) - set(KEY_USAGE_BITS)
    if unknown:
        raise ValueError(f"unknown keyUsage bits {sorted(unknown)}")
    return x509.KeyUsage(**{bit: bit in bits for bit in KEY_USAGE_BITS})


@dataclass(frozen=True)
class Hierarchy:
    """A root, one intermediate and a server certificate, in the usual shape."""

    root: Issued
    intermediate: Issued
    leaf: Issued

    def chain(self, *, with_root: bool = False) -> list[bytes]:
        """DER certificates as a server sends them: leaf, intermediate (and root)."""
        certs = [self.leaf, self.intermediate] + ([self.root] if with_root else [])
        return [c.der for c in certs]


def hierarchy(
    *names: str,
    key_kind: KeyKind = "ec",
    leaf_key_kind: KeyKind | None = None,
    leaf_not_before: dt.datetime | None = None,
    leaf_not_after: dt.datetime | None = None,
) -> Hierarchy:
    """Root CA → intermediate CA (pathlen 0) → server certificate with `names` as dNSName SANs.

    The leaf's CN is its first name (no CN when `names` is empty).
    """
    root = issue("Test Root CA", ca=True, key_kind=key_kind)
    intermediate = issue("Test Issuer CA", issuer=root, ca=True, path_length=0, key_kind=key_kind)
    leaf = issue(
        names[0] if names else None,
        issuer=intermediate,
        sans=names,
        key_kind=leaf_key_kind or key_kind,
        not_before=leaf_not_before,
        not_after=leaf_not_after,
    )
    return Hierarchy(root, intermediate, leaf)


def leaf_with_refused_subject(issuer: Issued, host: str) -> bytes:
    """DER of a leaf for `host` that parses, but whose subject `cryptography` refuses
    only when read (with TypeError): a BIT STRING value under commonName, which only
    x500UniqueIdentifier may carry.  What a hostile server can send."""
    from cryptography.x509.name import _ASN1Type

    unique_id = x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, b"\x00\xb2", _ASN1Type.BitString)
    der = issue(host, subject=x509.Name([unique_id]), issuer=issuer, sans=[host]).der
    oid_2_5_4_45, oid_2_5_4_3 = bytes.fromhex("060355042d"), bytes.fromhex("0603550403")
    assert der.count(oid_2_5_4_45) == 1
    return der.replace(oid_2_5_4_45, oid_2_5_4_3)
