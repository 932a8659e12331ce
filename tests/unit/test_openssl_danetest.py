"""OpenSSL's DANE chain-matching vectors, run through `tlsa.match.verify`.

The case files are read in place from ../shared/vectors/openssl-danetest (see
its README for the format, the depth convention and the #43-#46 quirk).  Every
case asserts OpenSSL's expected outcome and match depth, except where SMTP
differs from OpenSSL's generic RFC 6698 behaviour by design:

- #23-#42: only PKIX-TA(0)/PKIX-EE(1) records.  RFC 7672 §3.1.3: an SMTP
  client treats them as unusable, so none of these cases authenticates
  ("no usable TLSA records", RFC 7672 §2.2: TLS without authentication).  The
  matching itself is still checked: each record reports, for information,
  the depth at which its data matches a certificate the server sent.  The
  exceptions are #34/#35 (OpenSSL matches a root from its local trust store,
  which an SMTP client does not consult, RFC 7671 §5.2.2) and #39's `0 0 0`
  (a certificate supplied from DNS, never sent), where no sent certificate
  matches, and #40-#42 (wrong digests), where nothing matches.
- #54: DANE-EE(3) with OpenSSL's default EE name checks; OpenSSL expects
  HOSTNAME_MISMATCH.  RFC 7672 §3.2.1 forbids name checks for DANE-EE, so the
  SMTP result is authenticated at depth 0 (the same as #51).

Time: the vector certificates are valid from 2015/2016 to 3015/2116, so any
present-day `now` works; a fixed one keeps the test deterministic.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import SHARED_VECTORS, vectors_dir
from tlsa.match import Verdict, verify
from tlsa.records import TLSARecord

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)

X509_V_OK = 0
X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
X509_V_ERR_HOSTNAME_MISMATCH = 62
X509_V_ERR_DANE_NO_MATCH = 65

HEADER = re.compile(r"^(\d+) (\d+) (\d+) (-?\d+) (-?\d+)$")
PEM_BLOCK = re.compile(
    r"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", re.DOTALL
)

PKIX_ONLY = frozenset(range(23, 43))
# Records that match nothing the server sent (a trust-store root, a DNS-only
# Full(0) certificate) or nothing at all: no informational depth.
PKIX_NOT_SENT = {34: 0, 35: 0, 39: 1, 40: 0, 41: 0, 42: 0}
EE_NAME_CHECK_DIFFERS = frozenset({54})


@dataclass(frozen=True)
class Case:
    number: int
    records: tuple[TLSARecord, ...]
    chain: tuple[bytes, ...]
    nonamechecks: bool
    want: int
    depth: int

    @property
    def expected_authenticated(self) -> bool:
        return self.want == X509_V_OK


def parse_cases(text: str) -> list[Case]:
    """Read a danetest case file: header, exactly N record lines, then M PEM blocks."""
    lines = text.splitlines()
    cases: list[Case] = []
    pos = 0
    while pos < len(lines):
        header = HEADER.match(lines[pos].rstrip())
        pos += 1
        if header is None:
            continue
        ntlsa, ncert, nonamechecks, want, depth = (int(g) for g in header.groups())
        records = tuple(TLSARecord.from_text(lines[pos + i]) for i in range(ntlsa))
        pos += ntlsa
        # The PEM reader skips anything that is not PEM, including #43-#46's extra record line.
        rest = "\n".join(lines[pos:])
        blocks = PEM_BLOCK.finditer(rest)
        chain: list[bytes] = []
        consumed = 0
        for _ in range(ncert):
            block = next(blocks)
            chain.append(base64.b64decode("".join(block.group(1).split())))
            consumed = block.end()
        pos += rest[:consumed].count("\n") + 1
        number = len(cases) + 1
        cases.append(Case(number, records, tuple(chain), bool(nonamechecks), want, depth))
    return cases


def load(name: str) -> list[Case]:
    return parse_cases((vectors_dir("openssl-danetest") / name).read_text())


def _folder() -> Path | None:
    folder = SHARED_VECTORS / "openssl-danetest"
    return folder if folder.is_dir() else None


def _params(name: str) -> list[object]:
    folder = _folder()
    if folder is None:
        # Collected without the vectors: one placeholder that skips (or fails in CI).
        return [pytest.param(None, id=f"{name}-missing")]
    return [
        pytest.param(c, id=f"{name}#{c.number}") for c in parse_cases((folder / name).read_text())
    ]


def test_case_counts() -> None:
    assert len(load("danetest.in")) == 54
    assert len(load("dane-cross.in")) == 1


def _require(case: Case | None) -> Case:
    if case is None:
        vectors_dir("openssl-danetest")
        pytest.fail("unreachable: vectors folder appeared during the run")
    return case


@pytest.mark.parametrize("case", _params("danetest.in"))
def test_danetest(case: Case | None) -> None:
    case = _require(case)
    verdict = verify(case.chain, case.records, ["example.com"], NOW)
    if case.number in PKIX_ONLY:
        check_pkix_only(case, verdict)
    elif case.number in EE_NAME_CHECK_DIFFERS:
        assert (case.want, case.depth) == (X509_V_ERR_HOSTNAME_MISMATCH, 0)
        assert verdict.authenticated, verdict.reason
        assert verdict.depth == 0
    else:
        check_as_openssl(case, verdict)


@pytest.mark.parametrize("case", _params("dane-cross.in"))
def test_dane_cross(case: Case | None) -> None:
    case = _require(case)
    verdict = verify(case.chain, case.records, ["server.example"], NOW)
    check_as_openssl(case, verdict)


def check_as_openssl(case: Case, verdict: Verdict) -> None:
    """Same outcome and match depth as OpenSSL's danetest."""
    assert verdict.authenticated == case.expected_authenticated, verdict.reason
    if case.expected_authenticated:
        assert verdict.depth == case.depth
        assert verdict.record is not None
        return
    assert verdict.record is None and verdict.depth is None
    # OpenSSL reports the match depth even when a later check failed: so do the
    # per-record results.
    depths = [r.depth for r in verdict.results if r.depth is not None]
    if case.depth == -1:
        assert case.want == X509_V_ERR_DANE_NO_MATCH
        assert depths == []
    else:
        assert case.want == X509_V_ERR_HOSTNAME_MISMATCH
        assert depths == [case.depth]
        assert "match no reference identifier" in verdict.reason


def check_pkix_only(case: Case, verdict: Verdict) -> None:
    """RFC 7672 §3.1.3: PKIX usages never authenticate SMTP; matching is informational."""
    assert not verdict.authenticated
    assert verdict.reason == "not authenticated: no usable TLSA records"
    assert all(not r.usable and not r.matched for r in verdict.results)
    assert all("not used for SMTP" in r.reason for r in verdict.results)
    informative = [r.depth for r in verdict.results if r.depth is not None]
    if case.number in PKIX_NOT_SENT:
        assert len(informative) == PKIX_NOT_SENT[case.number]
        if informative:
            # #39: the `1 1 1` record matches the leaf; its `0 0 0` partner was never sent.
            assert informative == [case.depth]
    else:
        assert informative == [case.depth]
