"""`dane-relay tlsa generate|verify`, run in-process with temporary PEM files."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from relay.cli import main
from tests import pki

MX = "mx.example.com"
WHEN = "2026-11-22T00:00:00Z"


@pytest.fixture(scope="module")
def tier() -> pki.Hierarchy:
    return pki.hierarchy(MX, "smtp.example.com")


@pytest.fixture
def chain_file(tmp_path: Path, tier: pki.Hierarchy) -> Path:
    return pki.write_pem(tmp_path / "chain.pem", tier.leaf, tier.intermediate)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# -- generate --------------------------------------------------------------------------


@pytest.mark.parametrize(("selector", "mtype"), [(s, m) for s in (0, 1) for m in (0, 1, 2)])
def test_generate_dane_ee(
    chain_file: Path,
    tier: pki.Hierarchy,
    selector: int,
    mtype: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["tlsa", "generate", str(chain_file), "--selector", str(selector), "--mtype", str(mtype)]
    code, out, err = run(argv, capsys)
    assert (code, err) == (0, "")
    assert out == f"_25._tcp.{MX}. IN TLSA {tier.leaf.tlsa(3, selector, mtype)}\n"


def test_generate_defaults_to_3_1_1(
    chain_file: Path, tier: pki.Hierarchy, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["tlsa", "generate", str(chain_file)], capsys)
    spki_hash = hashlib.sha256(tier.leaf.spki).hexdigest()
    assert (code, out) == (0, f"_25._tcp.{MX}. IN TLSA 3 1 1 {spki_hash}\n")


def test_generate_dane_ta_uses_the_last_ca(
    tmp_path: Path, tier: pki.Hierarchy, capsys: pytest.CaptureFixture[str]
) -> None:
    two = pki.write_pem(tmp_path / "two.pem", tier.leaf, tier.intermediate)
    three = pki.write_pem(tmp_path / "three.pem", tier.leaf, tier.intermediate, tier.root)
    _, out, _ = run(["tlsa", "generate", "--usage", "2", str(two)], capsys)
    assert out.endswith(f"IN TLSA {tier.intermediate.tlsa(2, 1, 1)}\n")
    _, out, _ = run(["tlsa", "generate", "--usage", "2", str(three)], capsys)
    assert out.endswith(f"IN TLSA {tier.root.tlsa(2, 1, 1)}\n")


def test_generate_host_and_port(chain_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["tlsa", "generate", str(chain_file), "--host", "Relay.Example.NET.", "--port", "2525"]
    code, out, _ = run(argv, capsys)
    assert code == 0 and out.startswith("_2525._tcp.relay.example.net. IN TLSA 3 1 1 ")


def test_generate_idn_host(chain_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(["tlsa", "generate", str(chain_file), "--host", "mx.bücher.example"], capsys)
    assert out.startswith("_25._tcp.mx.xn--bcher-kva.example. IN TLSA")


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        ("no_san", [], "no DNS subjectAltName; pass --host"),
        ("wildcard", [], "is a wildcard (*.example.com); pass --host"),
        ("leaf_only", ["--usage", "2"], "no CA certificate"),
        ("no_san", ["--host", "a..b"], "not a valid host name"),
    ],
)
def test_generate_errors(
    tmp_path: Path,
    tier: pki.Hierarchy,
    make: str,
    extra: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    certs = {
        "no_san": pki.issue("no-san", issuer=tier.intermediate),
        "wildcard": pki.issue(None, issuer=tier.intermediate, sans=["*.example.com"]),
        "leaf_only": tier.leaf,
    }
    path = pki.write_pem(tmp_path / "cert.pem", certs[make])
    code, out, err = run(["tlsa", "generate", str(path), *extra], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and message in err


def test_generate_bad_port(chain_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["tlsa", "generate", str(chain_file), "--port", "99999"])
    assert exit_info.value.code == 2


# -- verify ---------------------------------------------------------------------------------


def test_verify_dane_ee(
    chain_file: Path, tier: pki.Hierarchy, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        ["tlsa", "verify", "--chain", str(chain_file), "--record", tier.leaf.tlsa(3, 1, 1)], capsys
    )
    assert (code, err) == (0, "")
    assert out.startswith("authenticated by 3 1 1 ")
    assert "matched" in out


def test_verify_dane_ta_json(
    chain_file: Path, tier: pki.Hierarchy, capsys: pytest.CaptureFixture[str]
) -> None:
    ta = tier.intermediate.tlsa(2, 1, 1)
    bad = "3 1 1 " + "00" * 31
    argv = ["tlsa", "verify", "--chain", str(chain_file), "--record", bad, "--record", ta]
    code, out, _ = run([*argv, "--name", "smtp.example.com", "--json"], capsys)
    assert code == 0
    document = json.loads(out)
    assert document["authenticated"] is True
    assert (document["record"], document["depth"]) == (ta, 1)
    assert [r["record"] for r in document["records"]] == [bad, ta]
    assert [(r["usable"], r["matched"]) for r in document["records"]] == [
        (False, False),
        (True, True),
    ]
    assert all(isinstance(r["reason"], str) for r in document["records"])


def test_verify_not_authenticated(
    chain_file: Path, tier: pki.Hierarchy, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "tlsa",
        "verify",
        "--chain",
        str(chain_file),
        "--record",
        tier.intermediate.tlsa(2, 1, 1),
    ]
    code, out, err = run([*argv, "--name", "elsewhere.example", "--json"], capsys)
    assert (code, err) == (1, "")
    document = json.loads(out)
    assert document["authenticated"] is False
    assert document["record"] is None and document["depth"] is None


def test_verify_unusable_record_is_not_an_error(
    chain_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["tlsa", "verify", "--chain", str(chain_file), "--record", "1 1 1 " + "ab" * 32]
    code, out, err = run(argv, capsys)
    assert (code, err) == (1, "")
    assert "no usable TLSA records" in out and "unusable" in out


def test_verify_at(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    root = pki.issue("Root", ca=True, not_before=t0, not_after=t0 + dt.timedelta(days=60))
    leaf = pki.issue(
        MX, issuer=root, sans=[MX], not_before=t0, not_after=t0 + dt.timedelta(days=30)
    )
    chain = pki.write_pem(tmp_path / "c.pem", leaf, root)
    base = ["tlsa", "verify", "--chain", str(chain), "--record", root.tlsa(2, 0, 1), "--name", MX]
    assert run([*base, "--at", WHEN], capsys)[0] == 0
    assert run([*base, "--at", "2026-11-22T00:00:00"], capsys)[0] == 0
    code, out, _ = run([*base, "--at", "2027-01-01T00:00:00+00:00"], capsys)
    assert code == 1 and "expired" in out


def test_verify_malformed_certificate_is_a_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "junk.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n")
    code, out, _ = run(
        ["tlsa", "verify", "--chain", str(path), "--record", "3 1 1 " + "ab" * 32], capsys
    )
    assert code == 1 and "not a DER certificate" in out


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        ("missing", [], "cannot read"),
        ("empty", [], "no PEM certificates found"),
        ("bad_base64", [], "is not valid base64"),
        ("good", ["--record", "3 1 x 00"], "--record '3 1 x 00'"),
        ("good", ["--record", "3 1 1"], "expected 'usage selector mtype hex'"),
        ("good", ["--record", "3 1 1 zz"], "not hexadecimal"),
        ("good", ["--at", "yesterday"], "--at 'yesterday': not an ISO 8601 time"),
    ],
)
def test_verify_bad_input(
    tmp_path: Path,
    chain_file: Path,
    setup: str,
    extra: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = {
        "missing": tmp_path / "nope.pem",
        "empty": tmp_path / "empty.pem",
        "bad_base64": tmp_path / "bad.pem",
        "good": chain_file,
    }
    files["empty"].write_text("just text\n")
    files["bad_base64"].write_text("-----BEGIN CERTIFICATE-----\n@@@\n-----END CERTIFICATE-----\n")
    records = [] if any(a == "--record" for a in extra) else ["--record", "3 1 1 " + "ab" * 32]
    argv = ["tlsa", "verify", "--chain", str(files[setup]), *records, *extra]
    code, out, err = run(argv, capsys)
    assert (code, out) == (2, "")
    assert err.startswith("dane-relay: ") and err.count("\n") == 1
    assert message in err
    assert "Traceback" not in err


def test_generate_then_verify_round_trip(
    chain_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = []
    for usage in ("3", "2"):
        _, out, _ = run(["tlsa", "generate", str(chain_file), "--usage", usage], capsys)
        records += ["--record", out.split(" IN TLSA ")[1].strip()]
    code, _, _ = run(["tlsa", "verify", "--chain", str(chain_file), *records, "--name", MX], capsys)
    assert code == 0


def test_tlsa_without_action(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["tlsa"], capsys)
    assert code == 2 and "generate or verify" in err


def test_a_certificate_cryptography_reads_only_in_part(
    tmp_path: Path, tier: pki.Hierarchy, capsys: pytest.CaptureFixture[str]
) -> None:
    """A subject cryptography refuses when read (TypeError): `verify` says the chain is not
    usable, `generate` still hashes its key; neither prints a traceback."""
    der = pki.leaf_with_refused_subject(tier.intermediate, MX)
    pem = tmp_path / "odd.pem"
    pem.write_text(
        "-----BEGIN CERTIFICATE-----\n"
        + "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
        + "\n-----END CERTIFICATE-----\n"
    )
    code, out, err = run(
        ["tlsa", "verify", "--chain", str(pem), "--record", "3 0 1 " + "00" * 32], capsys
    )
    assert (code, err) == (1, "") and "not a DER certificate" in out
    code, out, err = run(["tlsa", "generate", str(pem)], capsys)
    spki_hash = hashlib.sha256(
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()
    assert (code, err, out) == (0, "", f"_25._tcp.{MX}. IN TLSA 3 1 1 {spki_hash}\n")
