"""Fuzz `tlsa.validator.Validator` with hostile replies to the query and to every fetch.

The validator is pure: `validate()` yields a `Fetch` per DS/DNSKEY RRset it
needs and returns a `Verdict`.  Here the first reply and the answer to each
fetch come from the input (real replies, mutated; raw octets; failure
texts), with trust anchors for the root (IANA's) and for `example.` (a DS of
a key that signs nothing), so walks start at either.  Properties: nothing
raises; the number of fetches stays within `Limits.fetches`; a verdict has
a one-line reason; nothing is SECURE without a signature that verified
(here none can, so SECURE never appears).

    python tests/fuzz/fuzz_validator.py -max_total_time=60
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz.fuzz_replies import cached_seeds as reply_seeds
from tests.fuzz.harness import ByteReader, main
from tlsa.answers import Security
from tlsa.replies import MalformedReply, Reply, parse_reply
from tlsa.trust_anchors import load_trust_anchors, parse_trust_anchors
from tlsa.validator import Limits, Validator, Verdict

NOW = 1_750_000_000.0
QUERIES = (
    ("_25._tcp.mx.example.", "TLSA"),
    ("example.", "MX"),
    ("mx.example.", "A"),
    ("a.b.c.example.", "AAAA"),
)
ANCHORS = (
    *load_trust_anchors(),
    *parse_trust_anchors("example. 3600 IN DS 12345 13 2 " + "ab" * 32),
)
LIMITS = Limits()


def reply_from(reader: ByteReader) -> Reply | str:
    kind = reader.below(4)
    if kind == 0:
        return "timeout (fuzzed)"
    if kind == 1:
        wire = reader.blob(500)
    else:
        seeds = reply_seeds()
        wire = bytearray(seeds[reader.below(len(seeds))][2:])
        for _ in range(reader.below(4)):
            at = reader.below(max(len(wire), 1))
            wire[at : at + 2] = reader.take(2)
        wire = bytes(wire)
    try:
        return parse_reply(wire)
    except MalformedReply as exc:
        return f"malformed: {exc}"


def test_one_input(data: bytes) -> None:
    reader = ByteReader(data)
    qname, rdtype = QUERIES[reader.below(len(QUERIES))]
    first = reply_from(reader)
    if isinstance(first, str):
        return
    validator = Validator(ANCHORS, limits=LIMITS)
    steps = validator.validate(qname, rdtype, first, NOW)
    fetches = 0
    try:
        next(steps)
        while True:
            fetches += 1
            assert fetches <= LIMITS.fetches + 1, fetches
            steps.send(reply_from(reader))
    except StopIteration as done:
        verdict = done.value
    assert isinstance(verdict, Verdict)
    assert "\n" not in verdict.reason, verdict.reason
    assert verdict.security is not Security.SECURE, verdict


def seeds() -> list[bytes]:
    return [
        bytes([q, 2, n]) + bytes([2, 1, 3, 0, 2, 4, 1, 2, 0]) * 3
        for q in range(4)
        for n in range(0, 22, 3)
    ]


if __name__ == "__main__":
    main(test_one_input, seeds)
