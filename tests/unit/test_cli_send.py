"""`dane-relay send`: addresses, message input, exit codes, JSON and text output.

DNS is a fake Resolver (make_resolver is replaced) and SMTP a fake session
runner (deliver gets it injected); the real path is tests/integration/test_send_basic.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from relay import cli, cli_send
from relay.delivery import deliver
from relay.smtp_evidence import Reply
from tests.unit.discovery_fixtures import SEC, a, failed, mx, nxdomain, tlsa
from tests.unit.test_delivery import EE, LEAF, FakeResolver, FakeRunner, FakeServer

EX_TEMPFAIL, EX_UNAVAILABLE = 75, 69


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeResolver, FakeRunner]:
    """example.test (DANE, delivers), gone.test (NXDOMAIN), broken.test (MX SERVFAIL)."""
    resolver = FakeResolver(
        mx("example.test.", SEC, (10, "mx1.example.test.")),
        a("mx1.example.test.", SEC, "192.0.2.1"),
        tlsa("mx1.example.test.", SEC, EE),
        nxdomain("gone.test.", "MX"),
        failed("broken.test.", "MX"),
    )
    runner = FakeRunner(
        {
            "192.0.2.1": FakeServer(
                chain=(LEAF.der,), reject={"nobody@example.test": Reply(550, "5.1.1 unknown")}
            )
        }
    )

    async def fake_deliver(*args: Any, **kwargs: Any) -> Any:
        return await deliver(*args, **kwargs, session_runner=runner)

    monkeypatch.setattr(cli_send, "make_resolver", lambda dns: resolver)
    monkeypatch.setattr(cli_send, "deliver", fake_deliver)
    return resolver, runner


@pytest.fixture
def message(tmp_path: Path) -> Path:
    file = tmp_path / "message.eml"
    file.write_bytes(b"Subject: hi\n\nline one\nline two\r\n")
    return file


def send(*args: str) -> int:
    return cli.main(["send", "--from", "sender@example.org", *args])


def test_delivered_exit_0_with_postfix_like_lines(
    world: tuple[FakeResolver, FakeRunner], message: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert send("--to", "rcpt@example.test", str(message)) == 0
    out = capsys.readouterr().out
    assert (
        "Verified TLS connection established to mx1.example.test[192.0.2.1]:25: TLSv1.3 "
        "with cipher TLS_AES_256_GCM_SHA384" in out
    )
    assert f"mx1.example.test[192.0.2.1]:25: TLSA {EE.to_text()} matched at depth 0" in out
    assert "DNSSEC-signed TLSA record: _25._tcp.mx1.example.test.: 3 1 1" in out
    assert "to=<rcpt@example.test>, relay=mx1.example.test[192.0.2.1]:25" in out
    assert "status=sent (" in out


def test_message_is_sent_as_given_with_crlf_line_endings(
    world: tuple[FakeResolver, FakeRunner], message: Path
) -> None:
    _, runner = world
    assert send("--to", "rcpt@example.test", str(message)) == 0
    assert runner.requests[0].message == b"Subject: hi\r\n\r\nline one\r\nline two\r\n"


def test_message_from_stdin(
    world: tuple[FakeResolver, FakeRunner], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, runner = world
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"Subject: x\n\nbody\n")))
    assert send("--to", "rcpt@example.test", "-") == 0
    assert runner.requests[0].message == b"Subject: x\r\n\r\nbody\r\n"


def test_json_report(
    world: tuple[FakeResolver, FakeRunner], message: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = send("--to", "rcpt@example.test", "--to", "Other@EXAMPLE.test", str(message), "--json")
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    first, second = report["recipients"]
    assert first["recipient"] == "rcpt@example.test"
    assert second["recipient"] == "Other@example.test"  # the domain is case-folded
    assert first["status"] == "delivered"
    assert first["mx"] == "mx1.example.test" and first["ip"] == "192.0.2.1"
    assert first["tls"] == {
        "version": "TLSv1.3",
        "cipher": "TLS_AES_256_GCM_SHA384",
        "level": "verified",
    }
    assert first["dane"] == {"records": [EE.to_text()], "matched": EE.to_text(), "depth": 0}
    assert first["reason"].startswith("delivered via mx1.example.test[192.0.2.1]:25")
    evidence = first["evidence"]
    assert evidence["mx"]["status"] == "secure"
    route = evidence["hosts"][0]["routes"][0]
    assert route["tlsa_status"] == "secure"
    assert route["plan"]["dane_required"] is True
    assert route["connections"][0]["dane"]["matched"] == EE.to_text()


@pytest.mark.parametrize(
    ("recipients", "expected"),
    [
        (["rcpt@example.test"], 0),
        (["nobody@example.test"], EX_UNAVAILABLE),
        (["someone@gone.test"], EX_UNAVAILABLE),
        (["someone@broken.test"], EX_TEMPFAIL),
        (["rcpt@example.test", "someone@gone.test"], EX_UNAVAILABLE),
        (["someone@gone.test", "someone@broken.test"], EX_TEMPFAIL),  # deferred wins
    ],
)
def test_exit_codes(
    world: tuple[FakeResolver, FakeRunner],
    message: Path,
    capsys: pytest.CaptureFixture[str],
    recipients: list[str],
    expected: int,
) -> None:
    args = [arg for rcpt in recipients for arg in ("--to", rcpt)]
    assert send(*args, str(message), "--json") == expected
    report = json.loads(capsys.readouterr().out)
    assert [r["recipient"] for r in report["recipients"]] == recipients


def test_deferred_text_line(
    world: tuple[FakeResolver, FakeRunner], message: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert send("--to", "someone@broken.test", str(message)) == EX_TEMPFAIL
    out = capsys.readouterr().out
    assert "to=<someone@broken.test>, relay=none, dsn=4.4.3, status=deferred (MX lookup" in out


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--to", "no-at-sign"], "local-part@domain"),
        (["--to", "a@"], "invalid domain"),
        (["--to", "a b@example.test"], "invalid local part"),
        (["--to", "a@[192.0.2.1]"], "address literal"),
        (["--to", "a@bücher.test"], "A-labels"),
        (["--to", "a@-bad.test"], "invalid label"),
        (["--to", "a..b@example.test"], "invalid local part"),
        (["--to", "x" * 65 + "@example.test"], "longer than 64"),
    ],
)
def test_bad_addresses_exit_2(
    world: tuple[FakeResolver, FakeRunner],
    message: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    words: str,
) -> None:
    assert send(*args, str(message)) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_good_address_forms(world: tuple[FakeResolver, FakeRunner], message: Path) -> None:
    _, runner = world
    code = cli.main(
        [
            "send",
            "--from",
            "<>",
            "--to",
            '<"odd one"@example.test>',
            "--to",
            "xn--bcher-kva@example.test",
            str(message),
        ]
    )
    assert code == 0
    assert runner.requests[0].sender == ""
    assert runner.requests[0].recipients == ('"odd one"@example.test', "xn--bcher-kva@example.test")


def test_unreadable_message_and_bad_config_exit_2(
    world: tuple[FakeResolver, FakeRunner], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert send("--to", "rcpt@example.test", str(tmp_path / "missing")) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "relay.toml"
    bad.write_text('[delivery]\nsecurity_level = "sometimes"\n')
    assert send("--config", str(bad), "--to", "rcpt@example.test", str(tmp_path)) == 2
    assert "delivery.security_level" in capsys.readouterr().err


def test_missing_to_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["send", "--from", "a@example.test"])
    assert caught.value.code == 2


def test_crlf_lines() -> None:
    assert cli_send.crlf_lines(b"a\nb\r\nc\rd") == b"a\r\nb\r\nc\r\nd"
    assert cli_send.crlf_lines(b"") == b""
