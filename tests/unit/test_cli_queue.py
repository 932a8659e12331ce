"""dane-relay queue: every action against a real Spool in tmp_path, text and JSON, exit codes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.cli import main
from relay.cli_queue import format_age, list_text, owner_problem, printable, show_text
from relay.spool import RecipientStatus, RecipientUpdate, SetAside, Spool, open_spool

MESSAGE = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hello\r\n\r\nBody.\r\n"
HOUR = 3600.0
EVIDENCE = {
    "domain": "example.net",
    "level": "dane",
    "mx": {"qname": "example.net.", "status": "secure", "records": ["10 mx.example.net."]},
    "hosts": [
        {
            "name": "mx.example.net.",
            "routes": [{"family": "ipv4", "addresses": ["192.0.2.1"], "skipped": None}],
        }
    ],
}
MISMATCH = "TLSA mismatch: no TLSA record matched the certificate chain"


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def spool(spool_dir: Path) -> Iterator[Spool]:
    with open_spool(spool_dir) as opened:
        yield opened


async def put(
    spool: Spool, *recipients: str, sender: str = "a@example.org", age: float = HOUR
) -> str:
    return await spool.put(sender, recipients or ("b@example.net",), MESSAGE, now=time.time() - age)


def defer(spool: Spool, queue_id: str, address: str, *, later: float = HOUR) -> None:
    now = time.time()
    update = RecipientUpdate(
        address,
        RecipientStatus.DEFERRED,
        MISMATCH,
        next_attempt=now + later,
        dsn_status="4.7.5",
        remote_mta="mx.example.net",
    )
    assert spool.record_attempt(queue_id, now=now, updates=[update], evidence=EVIDENCE)


def queue(spool_dir: Path, *args: str) -> int:
    action, *rest = args
    return main(["queue", action, "--spool", str(spool_dir), *rest])


# -- list ---------------------------------------------------------------------------------


def test_list_of_an_empty_queue(spool: Spool, capsys: pytest.CaptureFixture[str]) -> None:
    assert queue(spool.path, "list") == 0
    assert capsys.readouterr().out == "The queue is empty.\n"
    assert queue(spool.path, "list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []


async def test_list_shows_each_message_and_recipient(
    spool: Spool, capsys: pytest.CaptureFixture[str]
) -> None:
    first = await put(spool, "b@example.net", "c@example.com")
    defer(spool, first, "b@example.net")
    second = await put(spool, sender="", age=60)
    spool.hold(second)
    assert queue(spool.path, "list") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["Queue", "ID", "Age", "Size", "Sender", "/", "recipients"]
    assert out[1].startswith(first) and "<a@example.org>" in out[1]
    assert f"{len(MESSAGE)}" in out[1].split() and "1h00m" in out[1]
    assert "next attempt due now" in out[1]  # c@example.com is still due
    assert out[2].split()[:2] == ["deferred", "<b@example.net>"] and MISMATCH in out[2]
    assert out[3].split() == ["queued", "<c@example.com>"]
    assert out[4].startswith(second) and "<>" in out[4] and "(held)" in out[4]
    assert out[-1] == f"-- 2 messages, {2 * len(MESSAGE)} bytes, 1 held"


async def test_list_json_shape(spool: Spool, capsys: pytest.CaptureFixture[str]) -> None:
    queue_id = await put(spool, "b@example.net", "c@example.com")
    defer(spool, queue_id, "b@example.net")
    spool.hold(queue_id)
    assert queue(spool.path, "list", "--json") == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert {"id", "age_s", "size", "sender", "recipients", "held", "next_attempt"} <= set(item)
    assert item["id"] == queue_id and item["sender"] == "a@example.org"
    assert item["size"] == len(MESSAGE) and item["held"] is True
    assert HOUR - 5 <= item["age_s"] <= HOUR + 60 and isinstance(item["age_s"], int)
    deferred, queued = item["recipients"]
    assert {"address", "status", "reason"} <= set(deferred)
    assert (deferred["address"], deferred["status"], deferred["reason"]) == (
        "b@example.net",
        "deferred",
        MISMATCH,
    )
    assert deferred["attempts"] == 1 and deferred["dsn_status"] == "4.7.5"
    assert deferred["next_attempt"] > time.time()
    assert (queued["status"], queued["reason"], queued["attempts"]) == ("queued", "", 0)


def test_list_text_as_a_table() -> None:
    assert list_text([], 0.0, []) == "The queue is empty."
    damaged = list_text([], 0.0, [SetAside("1M8500JMYHRHR1K", "content truncated: 3 of 9 bytes")])
    assert "1 damaged entry set aside" in damaged
    assert "1M8500JMYHRHR1K: content truncated: 3 of 9 bytes" in damaged


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-5, "0s"),
        (42.9, "42s"),
        (60, "1m00s"),
        (252, "4m12s"),
        (3600, "1h00m"),
        (7500, "2h05m"),
        (86400 * 3 + 3600 * 4 + 59, "3d04h"),
    ],
)
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text", "plain text"),
        ("tab\tkept", "tab\tkept"),
        ("red \x1b[31m", "red \\x1b[31m"),
        ("line\r\nbreak", "line\\x0d\\x0abreak"),
        ("del \x7f and c1 \x9b", "del \\x7f and c1 \\x9b"),
        ("ünïcode", "ünïcode"),
    ],
)
def test_printable_escapes_control_characters(raw: str, shown: str) -> None:
    assert printable(raw) == shown


# -- show ---------------------------------------------------------------------------------


async def test_show_text(spool: Spool, capsys: pytest.CaptureFixture[str]) -> None:
    queue_id = await spool.put(
        "a@example.org",
        ["b@example.net"],
        b"From: a@example.org\r\nSubject: evil \x1b[2J\r\n\r\nbody never shown\r\n",
        received_from="app.example.org[127.0.0.1]",
        now=time.time() - HOUR,
    )
    defer(spool, queue_id, "b@example.net")
    assert queue(spool.path, "show", queue_id.lower()) == 0  # ids are case-insensitive
    out = capsys.readouterr().out
    assert f"Queue ID:      {queue_id}" in out
    assert "Sender:        <a@example.org>" in out
    assert "Received from: app.example.org[127.0.0.1]" in out
    assert "<b@example.net>  deferred, 1 attempt" in out
    assert f"reason: {MISMATCH}" in out
    assert "dsn: 4.7.5, remote MTA: mx.example.net" in out
    assert "  Subject: evil \\x1b[2J" in out and "\x1b" not in out
    assert "body never shown" not in out
    assert "Attempts: 1" in out
    assert "domain: example.net" in out
    assert "- name: mx.example.net." in out  # a list of mappings, outlined
    assert "- 192.0.2.1" in out and "skipped: none" in out


async def test_show_json(spool: Spool, capsys: pytest.CaptureFixture[str]) -> None:
    queue_id = await put(spool)
    defer(spool, queue_id, "b@example.net")
    assert queue(spool.path, "show", queue_id, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == queue_id and shown["recipients"][0]["reason"] == MISMATCH
    assert shown["headers"].startswith("From: a@example.org\r\n")
    assert "Body." not in shown["headers"]
    (attempt,) = shown["attempts"]
    assert attempt["evidence"] == EVIDENCE and attempt["at"] > 0
    assert len(shown["sha256"]) == 64


async def test_show_text_of_a_message_without_attempts(spool: Spool) -> None:
    queue_id = await put(spool)
    loaded = spool.load(queue_id)
    assert loaded is not None
    text = show_text(loaded, None, loaded.entry.arrival)
    assert "Attempts: 0" in text and "content file gone" in text
    assert "Next attempt:  due now" in text


# -- actions ------------------------------------------------------------------------------


async def test_hold_and_release(spool: Spool, capsys: pytest.CaptureFixture[str]) -> None:
    queue_id = await put(spool)
    assert queue(spool.path, "hold", queue_id) == 0
    assert capsys.readouterr().out == f"{queue_id}: placed on hold\n"
    assert spool.entry(queue_id).held  # type: ignore[union-attr]
    assert spool.due(time.time()) == []
    assert queue(spool.path, "release", queue_id) == 0
    assert capsys.readouterr().out == f"{queue_id}: released from hold\n"
    assert not spool.entry(queue_id).held  # type: ignore[union-attr]


async def test_delete(spool: Spool, capsys: pytest.CaptureFixture[str]) -> None:
    queue_id = await put(spool)
    assert queue(spool.path, "delete", queue_id) == 0
    assert capsys.readouterr().out == f"{queue_id}: deleted (no notice is sent)\n"
    assert spool.entry(queue_id) is None
    assert not spool.content_path(queue_id).exists()


async def test_flush_one_message_keeps_attempt_counts(
    spool: Spool, capsys: pytest.CaptureFixture[str]
) -> None:
    queue_id = await put(spool)
    defer(spool, queue_id, "b@example.net")
    assert spool.due(time.time()) == []
    assert queue(spool.path, "flush", queue_id) == 0
    assert capsys.readouterr().out == f"{queue_id}: flushed: pending recipients are due now\n"
    (due,) = spool.due(time.time())
    assert due.id == queue_id and due.recipients[0].attempts == 1


async def test_flush_of_a_held_message_says_it_stays_held(
    spool: Spool, capsys: pytest.CaptureFixture[str]
) -> None:
    queue_id = await put(spool)
    spool.hold(queue_id)
    assert queue(spool.path, "flush", queue_id) == 0
    assert "but on hold" in capsys.readouterr().out
    assert spool.due(time.time()) == []


async def test_flush_all_and_by_domain(spool: Spool, capsys: pytest.CaptureFixture[str]) -> None:
    to_net = await put(spool, "b@example.net")
    to_com = await put(spool, "c@example.com")
    defer(spool, to_net, "b@example.net")
    defer(spool, to_com, "c@example.com")
    assert queue(spool.path, "flush", "--domain", "EXAMPLE.NET") == 0
    assert capsys.readouterr().out == "flushed 1 message with recipients @EXAMPLE.NET: due now\n"
    assert [e.id for e in spool.due(time.time())] == [to_net]
    assert queue(spool.path, "flush") == 0
    assert capsys.readouterr().out == "flushed 2 messages: due now\n"
    assert {e.id for e in spool.due(time.time())} == {to_net, to_com}


async def test_requeue_releases_and_restarts_the_backoff(
    spool: Spool, capsys: pytest.CaptureFixture[str]
) -> None:
    queue_id = await put(spool)
    defer(spool, queue_id, "b@example.net")
    spool.hold(queue_id)
    assert queue(spool.path, "requeue", queue_id) == 0
    assert "requeued" in capsys.readouterr().out
    (due,) = spool.due(time.time())
    assert not due.held and due.recipients[0].attempts == 0
    assert due.arrival < time.time() - HOUR + 60  # the lifetime still counts from arrival


# -- errors -------------------------------------------------------------------------------

UNKNOWN = "1M8500JMYHRHR1K"


@pytest.mark.parametrize(
    "args",
    [
        ("show", UNKNOWN),
        ("flush", UNKNOWN),
        ("hold", UNKNOWN),
        ("release", UNKNOWN),
        ("delete", UNKNOWN),
        ("requeue", UNKNOWN),
    ],
)
def test_unknown_id_is_one_line_and_exit_1(
    spool: Spool, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    assert queue(spool.path, *args) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"dane-relay: queue: {UNKNOWN}: no such message in {spool.path}\n"


@pytest.mark.parametrize(
    "args",
    [
        ("show", "../../etc/passwd"),
        ("hold", "short"),
        ("delete", "1M8500JMYHRHR1!"),
        ("flush", UNKNOWN, "--domain", "example.net"),
        ("flush", "--domain", "not a domain"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    spool: Spool, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    assert queue(spool.path, *args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("dane-relay: queue")


def test_no_spool_is_exit_2_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    assert queue(missing, "list") == 2
    assert "no spool at" in capsys.readouterr().err
    assert not missing.exists()


async def test_default_spool_is_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_spool(Path("spool")) as spool:
        queue_id = await put(spool)
    assert main(["queue", "list"]) == 0
    assert queue_id in capsys.readouterr().out


async def test_config_file_gives_the_spool_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "etc" / "relay.toml"
    config.parent.mkdir()
    config.write_text('[spool]\npath = "../var/queue"\n')  # relative to the file's folder
    with open_spool(tmp_path / "var" / "queue") as spool:
        queue_id = await put(spool)
    assert main(["queue", "list", "--config", str(config)]) == 0
    assert queue_id in capsys.readouterr().out


def test_invalid_config_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "relay.toml"
    config.write_text("[spool\n")
    assert main(["queue", "list", "--config", str(config)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_config_does_not_make_a_resolver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import relay.config

    def no_dns(*args: object, **kwargs: object) -> None:
        raise AssertionError("the queue command must not build a resolver")

    monkeypatch.setattr(relay.config, "make_resolver", no_dns)
    monkeypatch.setattr(relay.config, "ValidatingStubResolver", no_dns)
    monkeypatch.chdir(tmp_path)  # the default [spool] path is ./spool
    config = tmp_path / "relay.toml"
    config.write_text('[dns]\nnameservers = ["127.0.0.1"]\n')
    open_spool(tmp_path / "spool").close()
    assert main(["queue", "list", "--config", str(config)]) == 0
    assert capsys.readouterr().out == "The queue is empty.\n"


def test_spool_and_config_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["queue", "list", "--spool", str(tmp_path), "--config", str(tmp_path / "f")])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    ("euid", "owner", "refused"),
    [(0, 0, False), (0, 10025, True), (10025, 10025, False), (1000, 10025, False)],
)
def test_root_does_not_open_a_spool_another_user_owns(euid: int, owner: int, refused: bool) -> None:
    problem = owner_problem(euid, owner, Path("/var/spool/dane-relay"))
    assert (problem is not None) == refused
    if problem is not None:
        assert "belongs to uid 10025" in problem and "\n" not in problem
