"""What the submission listener accepts: every decision of the inbound SMTP dialogue, as values.

One responsibility: given the facts of one SMTP session (client address,
TLS, authentication, envelope so far, message bytes, the clock) say whether
to go on or which reply to send.  No sockets, no files, no clock reads:
`relay.listener` is the I/O shell that asks these questions and sends the
answers.  A decision is `None` (go on) or a `Reply` (send it and stop this
command).

Rules and where they come from:

- Never an open relay: a recipient is accepted only from a client in
  `listen.networks` or one that has authenticated (RFC 5321 §3.6.1, RFC
  4954 §1); everyone else gets 554 5.7.1 at RCPT.
- AUTH only over TLS or from `listen.plaintext_auth_networks` (RFC 4954 §4,
  §14); otherwise 538 5.7.11 (RFC 4954 §6).
- Envelope addresses follow RFC 5321 §4.1.2 (with RFC 6531 §3.3 UTF-8 only
  when the client said SMTPUTF8, RFC 6531 §3.5 otherwise) and the length
  limits of §4.5.3.1.
- Lines of the message end in CRLF and nothing else; a bare CR or LF is
  refused with 550 5.6.0 (RFC 5321 §2.3.8), so that no later hop can read
  an end-of-data the listener did not see (SMTP smuggling).
- The message data ends at CRLF.CRLF only and is dot-unstuffed (RFC 5321
  §4.5.2); a line too long (§4.5.3.1.6, 500 5.6.0) or a message too big
  (RFC 1870 §6.3, 552 5.3.4) is read to its end and refused (`DataCollector`).
- Recipients per message are limited (RFC 5321 §4.5.3.1.10: 452 4.5.3).
- Per-client limits: concurrent connections (421 4.7.0, RFC 5321 §3.8) and
  messages per minute (450 4.7.1 at MAIL, a token bucket fed by an injected
  clock); clients in the exception networks are never throttled.
- Every reply carries an RFC 3463 enhanced status code (RFC 2034 §3),
  including the replies aiosmtpd writes itself (`with_enhanced_code`).
- The Received: header the listener prepends (RFC 5321 §4.4, RFC 3848 and
  RFC 6531 §3.7.3 protocol names).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "AUTH_ALREADY",
    "AUTH_INVALID",
    "AUTH_IN_TRANSACTION",
    "AUTH_NEEDS_TLS",
    "AUTH_NOT_AVAILABLE",
    "AUTH_OK",
    "AUTH_TOO_MANY_FAILURES",
    "AUTH_UNAVAILABLE",
    "BARE_LINE_ENDING",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONNECTIONS_PER_CLIENT",
    "DEFAULT_MAX_MESSAGES_PER_MINUTE_PER_CLIENT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_RECIPIENTS",
    "LINE_TOO_LONG",
    "MAIL_SYNTAX",
    "MESSAGE_RATE_EXCEEDED",
    "MESSAGE_TOO_BIG",
    "OK",
    "RCPT_SYNTAX",
    "RECIPIENT_OK",
    "RELAY_DENIED",
    "SENDER_OK",
    "SERVER_BUSY",
    "SHUTTING_DOWN",
    "SPOOL_ERROR",
    "SPOOL_FULL",
    "TIMED_OUT",
    "TOO_MANY_CONNECTIONS",
    "TOO_MANY_RECIPIENTS",
    "ClientLimits",
    "DataCollector",
    "ListenSettings",
    "Network",
    "Reply",
    "TokenBucket",
    "auth_permitted",
    "check_recipient",
    "check_sender",
    "client_in",
    "has_bare_line_ending",
    "mailbox_problem",
    "parse_listen_address",
    "path_argument",
    "queued",
    "received_header",
    "relay_permitted",
    "with_enhanced_code",
    "with_protocol",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Postfix's defaults where it has one (smtpd_recipient_limit = 1000); the size is
# 35 MiB, which leaves room for 25 MiB of attachments after base64 (4/3) and
# headers, the limit most large receivers publish, so that what we accept is
# unlikely to bounce for size further on.
DEFAULT_MAX_MESSAGE_SIZE = 35 * 1024 * 1024
DEFAULT_MAX_RECIPIENTS = 1000
# Clients in the exception networks (by default listen.networks) are exempt, so
# these only bound remote, authenticated clients: a mail program sends one
# message at a time; a burst of 60 then one a second is generous for a person
# and a brake for a stolen password.
DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 10
DEFAULT_MAX_MESSAGES_PER_MINUTE_PER_CLIENT = 60
# Every client together, exempt ones included (Postfix's default_process_limit): each
# session may hold up to max_message_size in memory during DATA, so this bounds memory.
DEFAULT_MAX_CONNECTIONS = 100
# RFC 5321 §4.5.3.2.7: a server waits at least 5 minutes for the next command.
DEFAULT_IDLE_TIMEOUT = 300.0


def _networks(*texts: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


@dataclass(frozen=True)
class ListenSettings:
    """The [listen] section: where the submission listener binds and what it allows.

    address: "IP:port" or "[IPv6]:port".
    networks: clients that may relay without authenticating.
    plaintext_auth_networks: clients that may AUTH without TLS (loopback only by default).
    tls_cert / tls_key: PEM files; with both, STARTTLS is offered (RFC 3207).
    users_file: the AUTH users (relay.users format); None offers no AUTH.
    hostname: the name in the greeting and Received: headers ("" = this machine's name).
    max_message_size: octets (SIZE, RFC 1870); larger messages get 552 5.3.4.
    max_recipients: per message; more get 452 4.5.3.
    max_connections_per_client: concurrent connections per client address (0 = no limit).
    max_messages_per_minute_per_client: MAIL commands per minute per address (0 = no limit).
    max_connections: concurrent connections from all clients together, exempt ones
      included (0 = no limit); more get 421 4.7.0 at connect.
    idle_timeout: seconds without a complete command (or, in DATA, since the DATA
      command) before the connection is closed.
    client_limit_exceptions: clients never throttled; None means `networks`, () nobody.
    """

    address: str = "127.0.0.1:2525"
    networks: tuple[Network, ...] = _networks("127.0.0.0/8", "::1/128")
    plaintext_auth_networks: tuple[Network, ...] = _networks("127.0.0.1/32", "::1/128")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    users_file: Path | None = None
    hostname: str = ""
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_recipients: int = DEFAULT_MAX_RECIPIENTS
    max_connections_per_client: int = DEFAULT_MAX_CONNECTIONS_PER_CLIENT
    max_messages_per_minute_per_client: int = DEFAULT_MAX_MESSAGES_PER_MINUTE_PER_CLIENT
    client_limit_exceptions: tuple[Network, ...] | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT

    @property
    def limit_exceptions(self) -> tuple[Network, ...]:
        return (
            self.networks if self.client_limit_exceptions is None else self.client_limit_exceptions
        )

    @property
    def starttls(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None


def parse_listen_address(text: str) -> tuple[str, int]:
    """'127.0.0.1:2525' or '[::1]:2525' -> (host, port); ValueError with the reason otherwise."""
    match = re.fullmatch(
        r"\[(?P<v6>[^\]]+)\]:(?P<port>\d{1,5})|(?P<v4>[^:\[\]]+):(?P<p4>\d{1,5})", text
    )
    if match is None:
        raise ValueError(f"{text!r} is not IP:port or [IPv6]:port")
    host = match["v6"] or match["v4"]
    port = int(match["port"] or match["p4"])
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} in {text!r} is not an IP address") from None
    if match["v6"] and address.version != 6:
        raise ValueError(f"{text!r}: only IPv6 addresses go in brackets")
    if not 0 <= port < 65536:  # 0: any free port (tests)
        raise ValueError(f"{text!r}: port {port} is not between 0 and 65535")
    return str(address), port


# -- replies -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One SMTP reply line: code (RFC 5321 §4.2), enhanced status (RFC 3463), text."""

    code: int
    status: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"


OK = Reply(250, "2.0.0", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Ok")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
MAIL_SYNTAX = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
RCPT_SYNTAX = Reply(501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
BARE_LINE_ENDING = Reply(
    550, "5.6.0", "Message contains a bare CR or LF; every line must end with CRLF"
)
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_INVALID = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_UNAVAILABLE = Reply(454, "4.7.0", "Temporary authentication failure")
AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_NOT_AVAILABLE = Reply(502, "5.5.1", "AUTH is not offered here")
AUTH_ALREADY = Reply(503, "5.5.1", "Already authenticated")
AUTH_IN_TRANSACTION = Reply(503, "5.5.1", "AUTH is not permitted during a mail transaction")
AUTH_TOO_MANY_FAILURES = Reply(421, "4.7.0", "Too many failed authentication attempts, goodbye")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections from your address, try later")
SERVER_BUSY = Reply(421, "4.7.0", "Too many connections, try later")
TIMED_OUT = Reply(421, "4.4.2", "Timeout exceeded, closing connection")  # RFC 3463 §3.5
MESSAGE_RATE_EXCEEDED = Reply(450, "4.7.1", "Message rate limit exceeded, try again later")
SPOOL_FULL = Reply(452, "4.3.1", "Insufficient system storage, try again later")
SPOOL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
LINE_TOO_LONG = Reply(500, "5.6.0", "Line too long (RFC 5321 §4.5.3.1.6: 1000 octets with CRLF)")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message too big for system")


def queued(queue_id: str) -> Reply:
    """The 250 after end of data, sent only once the message is on disk (RFC 5321 §6.1)."""
    return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")


# aiosmtpd writes some replies itself, without enhanced codes; these are the ones
# whose meaning is not the default for their code (RFC 3463 §3 subjects).
_AIOSMTPD_REPLIES: Mapping[str, Reply] = {
    "552 Error: Too much mail data": MESSAGE_TOO_BIG,
    "552 Error: message size exceeds fixed maximum message size": Reply(
        552, "5.3.4", "Message size exceeds fixed maximum message size"
    ),
    "500 Line too long (see RFC5321 4.5.3.1.6)": LINE_TOO_LONG,
    "554 Command refused due to lack of security": Reply(
        554, "5.7.0", "Command refused due to lack of security"
    ),
    "454 TLS not available": Reply(454, "4.7.0", "TLS not available"),
}
# RFC 3463 §3.6 (5.5.x protocol errors) for the syntax and sequence codes,
# X.0.0 (other or undefined) for the rest.
_DEFAULT_STATUS = {
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    552: "5.3.4",
    553: "5.1.3",
    555: "5.5.4",
}
_HAS_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?: |$)")
_FINAL_REPLY = re.compile(r"([245])(\d\d)([ -])(.*)", re.DOTALL)


def with_enhanced_code(line: str) -> str:
    """The reply line with an RFC 3463 enhanced status code, if it lacks one (RFC 2034 §3).

    For replies the listener does not write itself.  Not for the greeting nor
    the EHLO/HELO replies (RFC 2034 §3 exempts them); 3xx intermediate replies
    (354, the 334 AUTH challenges) stay as they are.
    """
    if line in _AIOSMTPD_REPLIES:
        return str(_AIOSMTPD_REPLIES[line])
    match = _FINAL_REPLY.match(line)
    if match is None:
        return line
    code = int(match[1] + match[2])
    text = match[4]
    if _HAS_STATUS.match(text):
        return line
    status = _DEFAULT_STATUS.get(code, f"{match[1]}.0.0")
    return f"{code}{match[3]}{status} {text}".rstrip()


# -- who may do what -----------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _client_address(client_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address as read from the socket (an IPv6 zone dropped), None if unreadable.

    Cached: every command of a session asks about the same few addresses.
    """
    try:
        return ipaddress.ip_address(client_ip.split("%", 1)[0])
    except ValueError:
        return None


def client_in(client_ip: str, networks: Iterable[Network]) -> bool:
    """Whether the address is in one of the networks (IPv4-mapped IPv6 counts as IPv4)."""
    address = _client_address(client_ip)
    if address is None:
        return False  # fail closed: an address we cannot read is in no network
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def relay_permitted(client_ip: str, authenticated: bool, networks: Iterable[Network]) -> bool:
    """RFC 5321 §3.6.1 / RFC 4954 §1: relay for trusted networks and authenticated users only."""
    return authenticated or client_in(client_ip, networks)


def auth_permitted(client_ip: str, tls: bool, plaintext_auth_networks: Iterable[Network]) -> bool:
    """RFC 4954 §4 and §14: passwords travel only inside TLS, or on a path we trust (loopback)."""
    return tls or client_in(client_ip, plaintext_auth_networks)


# -- envelope addresses --------------------------------------------------------------------

# RFC 5321 §4.1.2: Atom = 1*atext; RFC 6531 §3.3 adds UTF8-non-ascii to atext and qtext.
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_DOT_STRING_UTF8 = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+(?:\.[{_ATEXT}\u0080-\U0010ffff]+)*")
# RFC 5321 §4.1.2: qtextSMTP = %d32-33 / %d35-91 / %d93-126, quoted-pairSMTP = "\" %d32-126.
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"')
_QUOTED_UTF8 = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"')
# RFC 5321 §4.1.2: sub-domain = Let-dig [Ldh-str]
_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+")

LOCAL_PART_MAX = 64  # RFC 5321 §4.5.3.1.1
DOMAIN_MAX = 255  # RFC 5321 §4.5.3.1.2
PATH_MAX = 256  # RFC 5321 §4.5.3.1.3 (with the angle brackets)


def _domain_problem(domain: str, smtputf8: bool) -> str | None:
    if domain.startswith("[") and domain.endswith("]"):
        return _address_literal_problem(domain[1:-1])
    if len(domain.encode("utf-8")) > DOMAIN_MAX:
        return f"the domain is longer than {DOMAIN_MAX} octets"
    for label in domain.split("."):
        if _LDH_LABEL.fullmatch(label):
            continue
        # RFC 6531 §3.3: sub-domain =/ U-label, only in an SMTPUTF8 transaction.
        if smtputf8 and not label.isascii() and _u_label_shape(label):
            continue
        return f"the domain has an invalid label {label!r}"
    return None


def _u_label_shape(label: str) -> bool:
    return (
        0 < len(label.encode("utf-8")) <= 63
        and all(c.isalnum() or c == "-" for c in label)
        and not label.startswith("-")
        and not label.endswith("-")
    )


def _address_literal_problem(literal: str) -> str | None:
    """RFC 5321 §4.1.3: IPv4, "IPv6:" or a tagged general address literal."""
    if literal[:5].lower() == "ipv6:":
        try:
            ipaddress.IPv6Address(literal[5:])
        except ValueError:
            return f"[{literal}] is not an IPv6 address literal"
        return None
    if re.fullmatch(r"[0-9.]+", literal):
        try:
            ipaddress.IPv4Address(literal)
        except ValueError:
            return f"[{literal}] is not an IPv4 address literal"
        return None
    if _GENERAL_LITERAL.fullmatch(literal):
        return None
    return f"[{literal}] is not an address literal"


def mailbox_problem(address: str, *, smtputf8: bool) -> str | None:
    """Why `address` is not an RFC 5321 §4.1.2 Mailbox (local@domain), or None."""
    try:
        octets = address.encode("utf-8")
    except UnicodeEncodeError:
        return "the address is not UTF-8"
    if len(octets) + 2 > PATH_MAX:
        return f"the address is longer than {PATH_MAX - 2} octets"
    local, at, domain = address.rpartition("@")
    if not at:
        return "the address has no domain"
    if not local:
        return "the address has no local part"
    if len(local.encode("utf-8")) > LOCAL_PART_MAX:
        return f"the local part is longer than {LOCAL_PART_MAX} octets"
    dot_string, quoted = (_DOT_STRING_UTF8, _QUOTED_UTF8) if smtputf8 else (_DOT_STRING, _QUOTED)
    if not (dot_string.fullmatch(local) or quoted.fullmatch(local)):
        return "the local part is not a dot-string or quoted-string"
    return _domain_problem(domain, smtputf8)


# RFC 5321 §4.1.2: Path = "<" [ A-d-l ":" ] Mailbox ">" (the source route is ignored,
# §4.1.1.3 / Appendix C); a quoted local part may hold ">" or spaces.
_PATH = re.compile(
    r"""\s*<(?:@[^\s:<>]+(?:,@[^\s:<>]+)*:)?"""
    r"""(?P<mailbox>(?:"(?:[^"\\]|\\.)*"|[^\s"<>@]+)(?:@[^\s<>]+)?|)>(?:\s+(?P<params>.*))?"""
)


def path_argument(arg: str | None, keyword: str) -> str | None:
    """The mailbox of "FROM:<...>" / "TO:<...>" ("" for "<>"), or None if it is malformed.

    Strict where aiosmtpd's e-mail header parser is lenient (it quietly turns
    `<a b@x>` into `"a b"@x` and accepts a missing ">"); one space after the
    colon is tolerated, as most servers do.
    """
    if arg is None or arg[: len(keyword)].upper() != keyword:
        return None
    match = _PATH.fullmatch(arg[len(keyword) :])
    return None if match is None else match["mailbox"]


def _non_ascii_without_smtputf8(address: str, smtputf8: bool) -> bool:
    return not smtputf8 and not address.isascii()


def check_sender(address: str, *, smtputf8: bool) -> Reply | None:
    """MAIL FROM: the null reverse-path "" (RFC 5321 §4.5.5) or a valid mailbox."""
    if address == "":
        return None
    if _non_ascii_without_smtputf8(address, smtputf8):
        # RFC 6531 §3.5: non-ASCII addresses need the SMTPUTF8 parameter.
        return Reply(553, "5.6.7", "Non-ASCII sender address needs the SMTPUTF8 parameter")
    problem = mailbox_problem(address, smtputf8=smtputf8)
    if problem is not None:
        return Reply(553, "5.1.7", f"Bad sender address syntax: {problem}")
    return None


def check_recipient(
    address: str,
    *,
    smtputf8: bool,
    relay_allowed: bool,
    recipients_so_far: int,
    max_recipients: int,
) -> Reply | None:
    """RCPT TO: relay permission first (a stranger learns nothing), then syntax, then count."""
    if not relay_allowed:
        return RELAY_DENIED  # RFC 5321 §3.6.1: never an open relay
    if _non_ascii_without_smtputf8(address, smtputf8):
        return Reply(553, "5.6.7", "Non-ASCII recipient address needs SMTPUTF8")  # RFC 6531 §3.5
    problem = mailbox_problem(address, smtputf8=smtputf8)
    if problem is not None:
        return Reply(553, "5.1.3", f"Bad recipient address syntax: {problem}")
    if recipients_so_far >= max_recipients:
        return TOO_MANY_RECIPIENTS  # RFC 5321 §4.5.3.1.10
    return None


# -- message content -----------------------------------------------------------------------


class DataCollector:
    """The message of one DATA command, collected from the bytes as they arrive.

    RFC 5321 §4.5.2: the data ends at a line holding a single "." and a leading
    dot is removed from every other line.  Only CRLF ends a line (§2.3.8): a bare
    CR or LF stays inside its line (`has_bare_line_ending` refuses the message
    later).  The whole message is read before a refusal is sent (§4.2.5); once
    a line's text is longer than `max_line` octets (§4.5.3.1.6; aiosmtpd's
    line_length_limit, so its CRLF comes on top) or the total passes `max_size`
    (RFC 1870 §6.3; 0 = no limit), the first of the two is the reply and nothing
    more is kept.  Memory stays within max_size plus one line plus what `feed`
    is given.

    Work is done on runs of whole lines with bytes operations, not line by line.
    `feed` must not be given bytes beyond the end-of-data line (they belong to the
    next command): the listener reads up to each ".<CRLF>".
    """

    def __init__(self, *, max_size: int, max_line: int) -> None:
        self.max_size = max_size
        self.max_line = max_line
        self.refusal: Reply | None = None
        self.done = False
        self._kept: list[bytes] = []
        self._size = 0
        self._pending = b""  # the start of a line whose CRLF has not come yet
        self._in_long_line = False  # dropping a too-long line up to its CRLF

    @property
    def content(self) -> bytes | None:
        """The dot-unstuffed message once done without a refusal, else None."""
        return b"".join(self._kept) if self.done and self.refusal is None else None

    def feed(self, data: bytes) -> bool:
        """Take the next bytes of the data; True once the end-of-data line was seen."""
        if self.done:
            raise ValueError("bytes fed after the end of data")
        data = self._pending + data
        if self._in_long_line:
            found = data.find(b"\r\n")
            if found < 0:
                self._pending = b"\r" if data.endswith(b"\r") else b""
                return False
            data, self._in_long_line = data[found + 2 :], False
        last = data.rfind(b"\r\n")
        cut = last + 2 if last >= 0 else 0  # whole lines before the cut
        lines, rest = data[:cut], data[cut:]
        texts = lines.split(b"\r\n")  # each whole line without its CRLF ...
        texts.pop()  # ... and the empty piece after the last CRLF
        if b"." in texts:  # RFC 5321 §4.5.2: the line holding a single "." ends the data
            if texts.index(b".") != len(texts) - 1 or rest:
                raise ValueError("bytes fed beyond the end of data")
            texts.pop()
            self._take(lines[:-3], texts)
            self.done = True
            return True
        self._take(lines, texts)
        if len(rest) > self.max_line + 1:  # too long already, and its CRLF still to come
            self._refuse(LINE_TOO_LONG)
            self._in_long_line = True
            rest = b"\r" if rest.endswith(b"\r") else b""
        self._pending = rest
        return False

    def _take(self, lines: bytes, texts: list[bytes]) -> None:
        """Keep whole lines (`lines`, which start at a line start; `texts` without CRLFs)."""
        if not texts or self.refusal is not None:
            return  # after a refusal nothing is kept
        size = self._size + len(lines)
        if (self.max_size and size > self.max_size) or max(map(len, texts)) > self.max_line:
            for text in texts:  # rare: see which limit comes first
                self._take_line(text)
            return
        self._size = size
        if lines.startswith(b"."):  # RFC 5321 §4.5.2: the first dot of each line goes
            lines = lines[1:]
        self._kept.append(lines.replace(b"\r\n.", b"\r\n"))

    def _take_line(self, line: bytes) -> None:
        """One line without its CRLF."""
        if len(line) > self.max_line:
            self._refuse(LINE_TOO_LONG)
            return
        self._size += len(line) + 2
        if self.max_size and self._size > self.max_size:
            self._refuse(MESSAGE_TOO_BIG)
        if self.refusal is None:
            self._kept.append((line[1:] if line.startswith(b".") else line) + b"\r\n")

    def _refuse(self, reply: Reply) -> None:
        if self.refusal is None:
            self.refusal = reply
        self._kept.clear()


def has_bare_line_ending(data: bytes) -> bool:
    """RFC 5321 §2.3.8: a CR or LF that is not part of a CRLF pair.

    Counted rather than replaced (no copy of the message): every CR and every LF
    belongs to a CRLF exactly when there are as many of each as of CRLF pairs.
    """
    pairs = data.count(b"\r\n")
    return data.count(b"\r") != pairs or data.count(b"\n") != pairs


def with_protocol(*, extended: bool, tls: bool, authenticated: bool, smtputf8: bool) -> str:
    """The Received: "with" keyword: RFC 3848 §1 (ESMTP[S][A]), RFC 6531 §3.7.3 (UTF8SMTP…)."""
    if not extended:
        return "SMTP"
    base = "UTF8SMTP" if smtputf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if authenticated else "")


_UNSAFE_IN_COMMENT = re.compile(r"[^\x21-\x27\x2a-\x5b\x5d-\x7e]")


def _comment_safe(text: str) -> str:
    """Printable ASCII without parentheses, backslash or spaces, for a header comment or word."""
    return _UNSAFE_IN_COMMENT.sub("?", text)[:255] or "?"


def _address_literal(client_ip: str) -> str:
    """RFC 5321 §4.1.3: [192.0.2.1] or [IPv6:2001:db8::1]."""
    address = _client_address(client_ip)
    if address is None:
        return "[unknown]"
    return f"[IPv6:{address}]" if address.version == 6 else f"[{address}]"


@functools.lru_cache(maxsize=4)
def _date_time(second: dt.datetime) -> str:
    """RFC 5322 §3.3 date-time of a whole second (messages of the same second share it)."""
    return email.utils.format_datetime(second)


def received_header(
    *,
    helo: str | None,
    client_ip: str,
    hostname: str,
    protocol: str,
    tls: str | None,
    recipients: tuple[str, ...],
    smtputf8: bool,
    now: float,
) -> bytes:
    """The Received: trace field the listener prepends (RFC 5321 §4.4), CRLF-terminated.

    from <HELO name> (<address literal>) by <hostname> (dane-relay) with <protocol>
    [(TLS details)] [for <recipient>]; <date>.  The queue id is not known before
    the message is stored, so there is no "id" clause (it is optional, §4.4).
    The "for" clause names the recipient only when there is exactly one, so a
    copy never lists the other recipients (Postfix does the same).
    """
    helo_text = _comment_safe(helo) if helo else "unknown"
    clauses = [
        f"from {helo_text} ({_address_literal(client_ip)})",
        f"by {_comment_safe(hostname)} (dane-relay)",
        f"with {protocol}" + (f" ({_comment_safe_spaces(tls)})" if tls else ""),
    ]
    if len(recipients) == 1:
        recipient = recipients[0] if smtputf8 else _comment_safe(recipients[0])
        clauses.append(f"for <{recipient}>")
    date = _date_time(dt.datetime.fromtimestamp(now, dt.UTC).replace(microsecond=0))
    text = "Received: " + "\r\n\t".join(clauses) + f";\r\n\t{date}\r\n"
    return text.encode("utf-8" if smtputf8 else "ascii", errors="replace")


def _comment_safe_spaces(text: str) -> str:
    return " ".join(_comment_safe(word) for word in text.split())


# -- per-client limits ---------------------------------------------------------------------


@dataclass(frozen=True)
class TokenBucket:
    """Messages a client may still start: `capacity` at most, refilled at capacity per minute."""

    tokens: float
    updated: float

    @classmethod
    def full(cls, capacity: int, now: float) -> TokenBucket:
        return cls(float(capacity), now)

    def refilled(self, capacity: int, now: float) -> TokenBucket:
        elapsed = max(0.0, now - self.updated)  # a clock that steps back refills nothing
        return TokenBucket(min(float(capacity), self.tokens + elapsed * capacity / 60.0), now)

    def take(self, capacity: int, now: float) -> TokenBucket | None:
        """The bucket after one message, or None if the client must wait."""
        bucket = self.refilled(capacity, now)
        if bucket.tokens < 1.0:
            return None
        return TokenBucket(bucket.tokens - 1.0, now)


class ClientLimits:
    """Bookkeeping for the per-client limits: open connections and message buckets by address.

    Pure state with the clock passed in; the listener calls `connection_opened`
    / `connection_closed` around each session and `message_started` at MAIL.
    """

    PRUNE_AT = 4096  # buckets kept before full ones (idle clients) are dropped

    def __init__(
        self,
        *,
        max_connections: int,
        max_messages_per_minute: int,
        exceptions: tuple[Network, ...],
        max_total: int = 0,
    ) -> None:
        self.max_connections = max_connections
        self.max_total = max_total  # all clients together, exempt ones included
        self.max_messages_per_minute = max_messages_per_minute
        self.exceptions = exceptions
        self.connections: dict[str, int] = {}
        self.buckets: dict[str, TokenBucket] = {}

    def exempt(self, client_ip: str) -> bool:
        return client_in(client_ip, self.exceptions)

    def connection_opened(self, client_ip: str) -> Reply | None:
        """Count a new connection, or refuse it (421 4.7.0, RFC 5321 §3.8) without counting."""
        open_now = self.connections.get(client_ip, 0)
        if self.max_total and self.total >= self.max_total:
            return SERVER_BUSY
        if self.max_connections and open_now >= self.max_connections and not self.exempt(client_ip):
            return TOO_MANY_CONNECTIONS
        self.connections[client_ip] = open_now + 1
        return None

    @property
    def total(self) -> int:
        """Connections open now, from every client."""
        return sum(self.connections.values())

    def connection_closed(self, client_ip: str) -> None:
        left = self.connections.get(client_ip, 0) - 1
        if left > 0:
            self.connections[client_ip] = left
        else:
            self.connections.pop(client_ip, None)

    def message_started(self, client_ip: str, now: float) -> Reply | None:
        """Take a token for one message (at MAIL), or answer 450 4.7.1."""
        capacity = self.max_messages_per_minute
        if not capacity or self.exempt(client_ip):
            return None
        bucket = self.buckets.get(client_ip) or TokenBucket.full(capacity, now)
        after = bucket.take(capacity, now)
        if after is None:
            self.buckets[client_ip] = bucket.refilled(capacity, now)
            return MESSAGE_RATE_EXCEEDED
        self.buckets[client_ip] = after
        if len(self.buckets) > self.PRUNE_AT:
            self._prune(now)
        return None

    def _prune(self, now: float) -> None:
        capacity = self.max_messages_per_minute
        self.buckets = {
            ip: bucket
            for ip, bucket in self.buckets.items()
            if bucket.refilled(capacity, now).tokens < capacity
        }
