"""`dane-relay send` / `serve` when DNSSEC cannot be trusted: real Unbound, real sinks, loopback.

- ``validation = "resolver"`` pointed at the world's *non-validating* Unbound: every answer
  lacks AD, so DANE-level destinations are deferred (exit 75, 4.4.3, nothing sent) with
  the probe's reason, while a ``may`` destination is still delivered (relay.dns_trust).
- ``validation = "local"`` behind an upstream that strips RRSIGs (a small proxy in front
  of the non-validating Unbound): the reason says so, nothing is sent, never insecure.
- A probe repeated after the upstream is fixed lifts the verdict (no restart needed).
- ``serve`` in the first situation logs the problem loudly and defers with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rdatatype
import pytest

from relay.delivery import ResolverTrust
from relay.dns_trust import TrustKind
from relay.spool import RecipientStatus
from tests.integration.mailworld import (
    ENCRYPTED,
    VERIFIED,
    Domain,
    Host,
    MailWorld,
    Scenario,
    Tlsa,
    assert_deferred,
    assert_delivered,
    assert_untouched,
    loopback_pool,
    running_mail_world,
)
from tests.integration.test_serve import Serve, free_port, until
from tlsa.local_resolver import LocalValidatingResolver
from tlsa.trust_anchors import load_trust_anchors

pytestmark = pytest.mark.integration

ips = loopback_pool(200)
NOT_VALIDATING = "the DNS resolver does not validate DNSSEC (no AD bit on a signed root answer)"


def one_mx(zone: str, **options: object) -> Domain:
    host = Host("mx", next(ips), tlsa=(Tlsa(3, 1, 1),))
    return Domain(f"{zone}.test.", hosts=(host,), **options)  # type: ignore[arg-type]


DANE = Scenario("trust-dane", one_mx("trust-dane"))
MAY = Scenario("trust-may", one_mx("trust-may"), level="may")


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailWorld]:
    with running_mail_world(tmp_path_factory.mktemp("trust-world"), [DANE, MAY]) as world:
        yield world


# -- an upstream that strips DNSSEC records -------------------------------------------------------


class _StrippingProtocol(asyncio.DatagramProtocol):
    def __init__(self, proxy: StrippingProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        task = asyncio.create_task(self._answer(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        host, port = self.proxy.upstream
        response = await dns.asyncquery.tcp(query, host, port=port, timeout=5)
        if self.proxy.strip:
            for section in (response.answer, response.authority, response.additional):
                section[:] = [r for r in section if r.rdtype != dns.rdatatype.RRSIG]
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


class StrippingProxy:
    """A UDP forwarder on 127.0.0.1 that drops every RRSIG while ``strip`` is True."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.strip = True
        self.address: tuple[str, int] = ("127.0.0.1", 0)


@contextlib.asynccontextmanager
async def stripping_proxy(upstream: tuple[str, int]) -> AsyncIterator[StrippingProxy]:
    proxy = StrippingProxy(upstream)
    protocol = _StrippingProtocol(proxy)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: protocol, local_addr=("127.0.0.1", 0)
    )
    proxy.address = transport.get_extra_info("sockname")[:2]
    try:
        yield proxy
    finally:
        transport.close()
        await asyncio.gather(*protocol.tasks, return_exceptions=True)


# -- resolver mode, non-validating resolver -------------------------------------------------------


async def test_dane_destination_defers_when_the_resolver_does_not_validate(
    mail: MailWorld,
) -> None:
    world = mail.in_mode("resolver", upstream=mail.dns.nonvalidating_resolver)
    async with world.serve(DANE.name) as running:
        delivery = await world.send(DANE.name)
    entry = assert_deferred(delivery, why=NOT_VALIDATING)
    assert entry["dsn"] == "4.4.3"
    assert_untouched(delivery, running, "mx.trust-dane.test")
    assert "without the AD bit" in delivery.stderr  # the probe's warning, on stderr


async def test_may_destination_still_delivers_without_validation(mail: MailWorld) -> None:
    world = mail.in_mode("resolver", upstream=mail.dns.nonvalidating_resolver)
    async with world.serve(MAY.name) as running:
        delivery = await world.send(MAY.name)
    assert_delivered(delivery, running, "mx.trust-may.test", tls_level=ENCRYPTED)


async def test_same_resolver_in_local_mode_is_verified(mail: MailWorld) -> None:
    world = mail.in_mode("local", upstream=mail.dns.nonvalidating_resolver)
    async with world.serve(DANE.name) as running:
        delivery = await world.send(DANE.name)
    assert_delivered(delivery, running, "mx.trust-dane.test", tls_level=VERIFIED)


# -- local mode, an upstream that strips RRSIGs ---------------------------------------------------


async def test_local_mode_behind_a_stripping_upstream_defers_with_that_reason(
    mail: MailWorld,
) -> None:
    async with stripping_proxy(mail.dns.nonvalidating_resolver) as proxy:
        world = mail.in_mode("local", upstream=proxy.address)
        async with world.serve(DANE.name) as running:
            delivery = await world.send(DANE.name)
        entry = assert_deferred(delivery, why="strips DNSSEC records")
        assert entry["dsn"] == "4.4.3"
        assert_untouched(delivery, running, "mx.trust-dane.test")
        async with world.serve(MAY.name) as running:
            delivery = await world.send(MAY.name)
        assert_deferred(delivery, why="strips DNSSEC records")  # every lookup fails
        assert_untouched(delivery, running, "mx.trust-may.test")


async def test_a_repeated_probe_picks_up_a_fixed_upstream(mail: MailWorld) -> None:
    async with stripping_proxy(mail.dns.nonvalidating_resolver) as proxy:
        resolver = LocalValidatingResolver(
            [proxy.address], load_trust_anchors(mail.dns.trust_anchor_file), timeout=5
        )
        trust = ResolverTrust(resolver, "local")
        state = await trust.refresh()
        assert state.kind is TrustKind.UNKNOWN
        assert "strips DNSSEC records" in (state.reason or "")
        proxy.strip = False
        assert (await trust.refresh()).validating
        answer = await resolver.query("mx.trust-dane.test.", "A")
        assert answer.secure, answer


# -- serve -----------------------------------------------------------------------------------------


async def test_serve_with_a_non_validating_resolver_logs_loudly_and_defers(
    tmp_path: Path, mail: MailWorld
) -> None:
    world = mail.in_mode("resolver", upstream=mail.dns.nonvalidating_resolver)
    port = free_port()
    config = tmp_path / "relay.toml"
    config.write_text(
        world.config_text(DANE)
        + f'\n[listen]\naddress = "127.0.0.1:{port}"\n\n[spool]\npath = "spool"\n'
    )
    serve = Serve(tmp_path, config, port, tmp_path / "serve.log")
    await serve.start()
    try:
        log = serve.log_text()
        assert "DNSSEC VALIDATION PROBLEM" in log and "without the AD bit" in log, log
        assert "(probe: NOT VALIDATING" in log
        async with world.serve(DANE.name) as running:
            queue_id = await asyncio.to_thread(serve.submit, "nv", [DANE.recipient])

            def deferred() -> bool:
                with serve.spool() as spool:
                    entry = spool.entry(queue_id)
                return entry is not None and entry.recipients[0].status is RecipientStatus.DEFERRED

            await until(deferred, "the deferral")
            assert running["mx.trust-dane.test"].connections == 0
        with serve.spool() as spool:
            entry = spool.entry(queue_id)
        assert entry is not None
        (recipient,) = entry.recipients
        assert recipient.reason.startswith(NOT_VALIDATING), recipient.reason
        assert recipient.dsn_status == "4.4.3"
    finally:
        assert await serve.terminate() == 0, serve.log_text()
