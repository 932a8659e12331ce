"""Differential tests: the in-process validator agrees with a validating Unbound.

For every name and type of the world's EXPECTATIONS table, the verdict of
`LocalValidatingResolver` (upstream: the world's non-validating Unbound, asked
with CD=1) must equal what the validating Unbound answers for the same query
on the same zones with the same trust anchor: SECURE = AD set, INSECURE = AD
clear, SERVFAIL = BOGUS.  Unbound is asked live, so the comparison is with
the real resolver, not with the table alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.world import EXPECTATIONS, Expectation, Status, World, resolve
from tlsa.answers import Answer, Security
from tlsa.local_resolver import LocalValidatingResolver
from tlsa.replies import Record
from tlsa.resolver import Nameserver
from tlsa.trust_anchors import load_trust_anchors

pytestmark = pytest.mark.integration

_VERDICT = {
    Status.SECURE: {Security.SECURE},
    Status.INSECURE: {Security.INSECURE},
    Status.SERVFAIL: {Security.BOGUS},
}


def _local(world: World, upstream: Sequence[Nameserver] | None = None) -> LocalValidatingResolver:
    return LocalValidatingResolver(
        upstream or [world.nonvalidating_resolver],
        load_trust_anchors(world.trust_anchor_file),
        timeout=3.0,
        attempts=2,
    )


def _ids(expectation: Expectation) -> str:
    return expectation.id


def _show(answer: Answer[Record]) -> str:
    return f"{answer.security.value} {answer.kind} {answer.records} ({answer.reason})"


@pytest.mark.parametrize("expect", EXPECTATIONS, ids=_ids)
async def test_local_verdict_equals_unbound(dns_world: World, expect: Expectation) -> None:
    unbound = resolve(dns_world.resolver, expect.qname, expect.rdtype)
    answer = await _local(dns_world).query(expect.qname, expect.rdtype)
    assert answer.security in _VERDICT[unbound.status], (
        f"{expect.qname} {expect.rdtype}: Unbound says {unbound.status}, local says {_show(answer)}"
    )
    assert unbound.status is expect.status  # the table and Unbound agree too
    if unbound.status is not Status.SERVFAIL:
        assert answer.rcode == unbound.rcode_text
        if expect.data is not None:
            assert tuple(sorted(str(r) for r in answer.records)) == expect.data


async def test_one_resolver_answers_the_whole_table(dns_world: World) -> None:
    """With one shared cache (keys, delegations, answers) the verdicts stay the same."""
    resolver = _local(dns_world)
    for _ in range(2):
        for expect in EXPECTATIONS:
            answer = await resolver.query(expect.qname, expect.rdtype)
            assert answer.security in _VERDICT[expect.status], f"{expect.id}: {_show(answer)}"


async def test_validating_upstream_gives_the_same_verdicts(dns_world: World) -> None:
    """With CD=1 the validating Unbound hands over bogus data too; we judge it the same."""
    resolver = _local(dns_world, [dns_world.resolver])
    for expect in EXPECTATIONS:
        answer = await resolver.query(expect.qname, expect.rdtype)
        assert answer.security in _VERDICT[expect.status], f"{expect.id}: {_show(answer)}"


async def test_probe_validates_the_trust_anchor(dns_world: World) -> None:
    result = await _local(dns_world).probe()
    assert result.validating, result.warning
    assert result.answer.security is Security.SECURE


async def test_authoritative_server_as_upstream_gives_the_same_verdicts(dns_world: World) -> None:
    """NSD serves every zone of the world, so it can answer every query (CD is ignored)."""
    resolver = _local(dns_world, [dns_world.authoritative])
    for expect in EXPECTATIONS:
        answer = await resolver.query(expect.qname, expect.rdtype)
        assert answer.security in _VERDICT[expect.status], f"{expect.id}: {_show(answer)}"
