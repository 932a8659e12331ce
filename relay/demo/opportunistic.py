"""[IO] The demo's foil: a plain opportunistic-TLS sender, as most MTAs are configured by default.

One responsibility: deliver one message the way an MTA without DANE does
(Postfix `smtp_tls_security_level = may`): MX and A lookups with no DNSSEC
validation (RFC 5321 §5.1), STARTTLS whenever the server offers it and any
certificate accepted (RFC 7435 §1.3, "opportunistic security"), and plain text
when it is not offered.  It asks the same DNS server as dane-relay and reports
what it saw, step by step, for the demo's story.  It is no part of dane-relay.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

import aiosmtplib
import dns.asyncresolver
import dns.exception
import dns.resolver

from relay.demo.network import permissive_client_context

__all__ = ["OpportunisticResult", "opportunistic_send"]


@dataclass
class OpportunisticResult:
    """What the sender did: `outcome` "delivered" or "failed", and where it went."""

    outcome: str = "failed"
    reason: str = ""
    mx: str | None = None
    mx_answer: str | None = None
    address: str | None = None
    starttls_offered: bool | None = None
    tls: str = "none"
    log: list[str] = field(default_factory=list)


async def opportunistic_send(
    dns_server: tuple[str, int],
    port: int,
    helo_name: str,
    sender: str,
    recipient: str,
    message: bytes,
    timeout: float = 10.0,
) -> OpportunisticResult:
    """One attempt to the lowest-preference MX of the recipient's domain; never raises."""
    result = OpportunisticResult()
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns_server[0]]
    resolver.port = dns_server[1]
    resolver.lifetime = timeout
    domain = recipient.rpartition("@")[2]
    try:
        mx_answer = await resolver.resolve(domain, "MX")
        best = min(mx_answer, key=lambda mx: mx.preference)
        result.mx = best.exchange.to_text().rstrip(".")
        result.mx_answer = f"MX {best.preference} {result.mx}"
        result.log.append(f"MX of {domain}: {result.mx} (not validated)")
        a_answer = await resolver.resolve(result.mx, "A")
        result.address = a_answer[0].to_text()
        result.log.append(f"A of {result.mx}: {result.address} (not validated)")
    except dns.exception.DNSException as exc:
        result.reason = f"DNS lookup failed: {exc}"
        return result
    smtp = aiosmtplib.SMTP(
        hostname=result.address,
        port=port,
        local_hostname=helo_name,
        start_tls=False,
        validate_certs=False,
        timeout=timeout,
    )
    try:
        await smtp.connect()
        await smtp.ehlo()
        result.starttls_offered = smtp.supports_extension("starttls")
        if result.starttls_offered:
            await smtp.starttls(tls_context=permissive_client_context())
            ssl_object = smtp.get_transport_info("ssl_object")
            version = ssl_object.version() if isinstance(ssl_object, ssl.SSLObject) else "TLS"
            result.tls = f"{version}, certificate not checked"
            result.log.append(f"STARTTLS offered: {result.tls}")
        else:
            result.log.append("STARTTLS not offered: sending in clear text")
        _errors, reply = await smtp.sendmail(sender, [recipient], message)
        result.outcome = "delivered"
        result.reason = f"250 {reply}".strip()
        result.log.append(f"delivered to {result.mx}[{result.address}]:{port}: {result.reason}")
        await smtp.quit()
    except (aiosmtplib.SMTPException, OSError) as exc:
        if result.outcome != "delivered":
            result.reason = f"SMTP failed: {exc}"
    finally:
        smtp.close()
    return result
