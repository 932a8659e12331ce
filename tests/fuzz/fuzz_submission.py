"""Fuzz `relay.submission`, the pure decisions behind the listener (RFC 5321, RFC 6531).

Input: a MAIL/RCPT argument, an address, reply text and message bytes.
Properties: nothing raises; a refusal is a 4yz/5yz `Reply` on one line;
an accepted path is within RFC 5321 §4.5.3.1's lengths; `with_enhanced_code`
gives one line with a code; the Received: field is ASCII (without SMTPUTF8)
with CRLF only at its folds and end, whatever the HELO name and recipient.

    python tests/fuzz/fuzz_submission.py -max_total_time=60
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from relay.submission import (
    PATH_MAX,
    check_recipient,
    check_sender,
    has_bare_line_ending,
    path_argument,
    received_header,
    with_enhanced_code,
)
from tests.fuzz.harness import ByteReader, main

# RFC 2034 §3: every line of a reply, continuation lines ("250-...") too, carries the code.
ENHANCED = re.compile(r"[2-5]\d\d[ -][245]\.\d{1,3}\.\d{1,3} ")


def test_one_input(data: bytes) -> None:
    reader = ByteReader(data)
    smtputf8 = reader.flag()
    keyword = "FROM:" if reader.flag() else "TO:"
    arg = reader.blob(400).decode("utf-8", errors="surrogateescape")
    path = path_argument(arg, keyword)
    accepted: tuple[str, ...] = ()
    if path is not None:
        assert len(path) + 2 <= PATH_MAX + 2  # angle brackets aside
        sender = check_sender(path, smtputf8=smtputf8)
        recipient = check_recipient(
            path,
            smtputf8=smtputf8,
            relay_allowed=reader.flag(),
            recipients_so_far=0,
            max_recipients=10,
        )
        for reply in (sender, recipient):
            if reply is not None:
                assert 400 <= reply.code < 600 and "\n" not in str(reply), reply
        if recipient is None and path:
            accepted = (path,)  # the listener puts only accepted recipients in Received:
    line = reader.blob(200).decode("utf-8", errors="replace")
    if re.fullmatch(r"[2-5]\d\d[ -].*", line, re.DOTALL) and "\n" not in line and "\r" not in line:
        assert ENHANCED.match(with_enhanced_code(line) + " ") or line[:1] in "3", line
    body = reader.rest()
    has_bare_line_ending(body)
    header = received_header(
        helo=body[:100].decode("utf-8", errors="replace"),
        client_ip="192.0.2.1",
        hostname="relay.test",
        protocol="ESMTP",
        tls=None,
        recipients=accepted,
        smtputf8=smtputf8,
        now=1_700_000_000.0,
    )
    assert header.endswith(b"\r\n") and not has_bare_line_ending(header), header
    assert all(fold.startswith(b"\t") for fold in header.split(b"\r\n")[1:-1]), header


def seeds() -> list[bytes]:
    def case(arg: bytes, reply: bytes, body: bytes, flags: bytes = b"\x00\x01\x00") -> bytes:
        return (
            flags[:2]
            + bytes([len(arg) % 256])
            + arg
            + flags[2:]
            + bytes([len(reply)])
            + reply
            + body
        )

    return [
        case(b"<s@example.org> SIZE=100", b"250 Ok", b"EHLO client\r\n"),
        case(b'<"quoted local"@[192.0.2.1]>', b"550 no", b"evil\r\nX-Injected: yes"),
        case("<ü@bücher.example>".encode(), b"500 Error", "ä\x00\r".encode(), b"\x01\x00\x01"),
        case(b"<@a,@b:s@example.org>", b"451 4.3.0 later", b"\n.\n"),
        case(b"<>", b"354 go", b"x" * 300),
        case(b"<s@example.org>", b"535- ", b""),  # a continuation line (a harness finding)
    ]


if __name__ == "__main__":
    main(test_one_input, seeds)
