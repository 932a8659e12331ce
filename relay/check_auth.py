"""Email-authentication records for the readiness checker: parse and judge, no I/O.

One responsibility: read the TXT records a domain publishes for SPF, DMARC,
DKIM, MTA-STS and TLS-RPT and say, finding by finding, what is wrong or
missing and what to do next.  The DNS answers are gathered by
relay/check_run.py; here they are plain values, so every rule is a table test.

Small parsers written for this project rather than a library such as
checkdmarc: that one resolves names itself over the internet (the relay only
asks its own validating resolver) and brings many dependencies; the grammar
we need is a few lines per record.

RFCs: 7208 (SPF: §4.5 record selection, §4.6.1 terms, §4.6.4 lookup limits,
§5 mechanisms, §6 modifiers, §7 macros), 7489 (DMARC: §6.3 tags, §6.6.3
record discovery, §6.7 policy), 6376 (DKIM: §3.6.1 key records), 8461 §3.1
(MTA-STS TXT), 8460 §3 (TLS-RPT TXT), 1035 §5.1 (TXT presentation form).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "DKIM_M365_SELECTORS",
    "SPF_LOOKUP_LIMIT",
    "SPF_VOID_LIMIT",
    "AuthFinding",
    "Mark",
    "SPFQuery",
    "SPFResult",
    "judge_dkim",
    "judge_dmarc",
    "judge_mta_sts",
    "judge_spf",
    "judge_tls_rpt",
    "microsoft_dkim_tenant",
    "parse_tags",
    "spf_queries",
    "spf_record",
    "txt_strings",
    "txt_value",
]

SPF_LOOKUP_LIMIT = 10  # RFC 7208 §4.6.4: terms that cause DNS queries
SPF_VOID_LIMIT = 2  # RFC 7208 §4.6.4: void lookups (NODATA or NXDOMAIN)
DKIM_M365_SELECTORS = ("selector1", "selector2")


class Mark(enum.StrEnum):
    """How a finding counts: pass and info never fail a check, warn does under --strict."""

    PASS = "pass"
    INFO = "info"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class AuthFinding:
    mark: Mark
    text: str


# -- TXT presentation form ----------------------------------------------------------------


def txt_strings(text: str) -> tuple[str, ...]:
    """The character-strings of one TXT record in presentation form (RFC 1035 §5.1).

    `"a" "b"` -> ("a", "b"); `\\"`, `\\\\` and `\\DDD` escapes are decoded;
    an unquoted word is one string.  Octets are read as Latin-1 (records here
    are ASCII).  Raises ValueError for an unterminated quote.
    """
    strings: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        quoted = text[i] == '"'
        if quoted:
            i += 1
        out: list[str] = []
        while i < n:
            c = text[i]
            if quoted and c == '"':
                i += 1
                break
            if not quoted and c.isspace():
                break
            if c == "\\" and i + 1 < n:
                if text[i + 1 : i + 4].isdigit() and len(text[i + 1 : i + 4]) == 3:
                    out.append(chr(int(text[i + 1 : i + 4]) & 0xFF))
                    i += 4
                else:
                    out.append(text[i + 1])
                    i += 2
                continue
            out.append(c)
            i += 1
        else:
            if quoted:
                raise ValueError(f"unterminated quoted string in {text!r}")
        strings.append("".join(out))
    return tuple(strings)


def txt_value(text: str) -> str:
    """One TXT record's strings joined without separators (RFC 7208 §3.3, RFC 7489 §6.6.3)."""
    return "".join(txt_strings(text))


def parse_tags(value: str) -> tuple[dict[str, str], list[str]]:
    """A tag-list `k=v; k=v` (RFC 6376 §3.2, used by DMARC, MTA-STS, TLS-RPT).

    Returns the tags (lower-case names, first occurrence wins) and the
    problems found (duplicates, pieces without `=`).
    """
    tags: dict[str, str] = {}
    problems: list[str] = []
    for piece in value.split(";"):
        piece = piece.strip()
        if not piece:
            continue
        name, eq, tag_value = piece.partition("=")
        name = name.strip().lower()
        if not eq or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            problems.append(f"{piece!r} is not a tag=value pair")
            continue
        if name in tags:
            problems.append(f"tag {name} appears twice")  # RFC 6376 §3.2: an error
            continue
        tags[name] = tag_value.strip()
    return tags, problems


def _records_with_prefix(texts: Sequence[str], prefix: str) -> tuple[list[str], list[AuthFinding]]:
    values: list[str] = []
    problems: list[AuthFinding] = []
    for text in texts:
        try:
            value = txt_value(text)
        except ValueError as exc:
            problems.append(AuthFinding(Mark.FAIL, str(exc)))
            continue
        if value.lower().startswith(prefix.lower()):
            values.append(value)
    return values, problems


# -- SPF (RFC 7208) ---------------------------------------------------------------------------

_SPF_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
_LOOKUP_TERMS = ("include", "a", "mx", "ptr", "exists", "redirect")  # RFC 7208 §4.6.4


@dataclass(frozen=True)
class SPFTerm:
    """One term of an SPF record: a mechanism with its qualifier, or a modifier."""

    text: str
    name: str  # mechanism or modifier name, lower case
    qualifier: str = "+"
    argument: str | None = None  # domain-spec or address, without ":" or "="
    modifier: bool = False
    problem: str | None = None

    @property
    def macro(self) -> bool:
        return self.argument is not None and "%" in self.argument


def spf_record(texts: Sequence[str]) -> tuple[str | None, list[AuthFinding]]:
    """The domain's SPF record among its TXT records (RFC 7208 §4.5), or None, and problems."""
    records = []
    for text in texts:
        try:
            value = txt_value(text)
        except ValueError as exc:
            return None, [AuthFinding(Mark.FAIL, str(exc))]
        # RFC 7208 §4.5: "v=spf1" followed by a space or the end of the record.
        if value.lower() == "v=spf1" or value.lower().startswith("v=spf1 "):
            records.append(value)
    if len(records) > 1:
        # RFC 7208 §4.5: more than one record is a permerror.
        return None, [AuthFinding(Mark.FAIL, f"{len(records)} SPF records (permerror): keep one")]
    return (records[0] if records else None), []


def parse_spf(record: str) -> list[SPFTerm]:
    """The terms of an SPF record after `v=spf1` (RFC 7208 §4.6.1, §5, §6)."""
    terms: list[SPFTerm] = []
    for word in record.split()[1:]:
        lower = word.lower()
        modifier = re.fullmatch(r"([a-z][a-z0-9_.-]*)=(.*)", word, re.IGNORECASE)
        if modifier is not None:
            name = modifier.group(1).lower()
            terms.append(SPFTerm(word, name, argument=modifier.group(2), modifier=True))
            continue
        qualifier = "+"
        if lower[:1] in "+-~?":
            qualifier, lower = lower[0], lower[1:]
        name, _, rest = lower.partition(":")
        argument = word[len(word) - len(rest) :] if rest else None
        if "/" in name and name.split("/")[0] in ("a", "mx"):
            name = name.split("/")[0]  # a/24, mx/24: a CIDR length on the own domain
        elif argument is not None and "/" in argument and name in ("a", "mx"):
            argument = argument.split("/")[0]
        problem = None
        if name not in _SPF_MECHANISMS:
            problem = f"unknown mechanism {word!r} (permerror, RFC 7208 §5)"
        elif name in ("include", "exists", "ip4", "ip6") and not argument:
            problem = f"{name} needs an argument (RFC 7208 §5)"
        elif name == "all" and argument is not None:
            problem = f"{word!r}: all takes no argument (RFC 7208 §5.1)"
        terms.append(SPFTerm(word, name, qualifier, argument, problem=problem))
    return terms


@dataclass(frozen=True)
class SPFQuery:
    """A DNS query an SPF term needs: `rdtype` at `name` (TXT for include/redirect)."""

    name: str
    rdtype: str


def _absolute(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


def spf_queries(domain: str, record: str) -> list[tuple[SPFTerm, tuple[SPFQuery, ...]]]:
    """For each lookup term of `record` (published at `domain`), the queries it needs.

    Terms with macros (RFC 7208 §7) and `ptr` count but need no query here.
    """
    found: list[tuple[SPFTerm, tuple[SPFQuery, ...]]] = []
    for term in parse_spf(record):
        if term.name not in _LOOKUP_TERMS or term.problem is not None:
            continue
        target = _absolute(term.argument or domain)
        if term.macro or term.name == "ptr":
            # Counted (RFC 7208 §4.6.4) but not resolved: they depend on the message.
            queries: tuple[SPFQuery, ...] = ()
        elif term.name in ("include", "redirect"):
            queries = (SPFQuery(target, "TXT"),)
        elif term.name == "a":
            queries = (SPFQuery(target, "A"), SPFQuery(target, "AAAA"))
        elif term.name == "mx":
            queries = (SPFQuery(target, "MX"),)
        else:  # exists
            queries = (SPFQuery(target, "A"),)
        found.append((term, queries))
    return found


@dataclass(frozen=True)
class SPFResult:
    """What the SPF walk found: the record, lookups and void lookups counted, findings."""

    record: str | None
    lookups: int
    void_lookups: int
    all_qualifier: str | None
    findings: tuple[AuthFinding, ...]


# What a query returned, for the SPF walk: the TXT strings or records, or None when it
# returned nothing (NODATA/NXDOMAIN, a void lookup), or an error text.
Fetched = tuple[str, ...] | None | Exception
Fetch = Callable[[SPFQuery], Fetched]

_ALL_ADVICE = {
    "-": (Mark.PASS, "ends with -all: mail from other hosts fails SPF"),
    "~": (Mark.PASS, "ends with ~all (softfail); -all is stricter once DMARC is enforced"),
    "?": (Mark.WARN, "ends with ?all (neutral): SPF says nothing about other hosts"),
    "+": (Mark.FAIL, "ends with +all: anyone may send as this domain"),
}


def judge_spf(domain: str, texts: Sequence[str] | None, fetch: Fetch) -> SPFResult:
    """Judge the SPF policy of `domain` from its TXT records (None: the lookup failed).

    `fetch` answers the queries of include/redirect/a/mx/exists terms (the
    answers gathered by relay/check_run.py).  Lookups are counted over the
    whole include/redirect tree (RFC 7208 §4.6.4): more than 10 is a
    permerror, as are more than 2 void lookups.
    """
    if texts is None:
        return SPFResult(None, 0, 0, None, (AuthFinding(Mark.FAIL, "the TXT lookup failed"),))
    record, problems = spf_record(texts)
    findings = list(problems)
    if record is None:
        if not findings:
            findings.append(
                AuthFinding(
                    Mark.WARN,
                    'no SPF record: publish one, e.g. "v=spf1 mx -all" (RFC 7208 §4.5); '
                    'a domain that sends no mail publishes "v=spf1 -all"',
                )
            )
        return SPFResult(None, 0, 0, None, tuple(findings))
    walk = _SPFWalk(fetch)
    all_qualifier = walk.visit(_absolute(domain), record, top=True)
    findings += walk.findings
    if walk.lookups > SPF_LOOKUP_LIMIT:
        findings.append(
            AuthFinding(
                Mark.FAIL,
                f"{walk.lookups} DNS-querying terms, more than {SPF_LOOKUP_LIMIT} "
                "(permerror, RFC 7208 §4.6.4): flatten includes",
            )
        )
    else:
        findings.append(
            AuthFinding(Mark.PASS, f"{walk.lookups} of at most {SPF_LOOKUP_LIMIT} DNS lookups")
        )
    if walk.voids > SPF_VOID_LIMIT:
        findings.append(
            AuthFinding(
                Mark.FAIL,
                f"{walk.voids} void lookups, more than {SPF_VOID_LIMIT} "
                "(permerror, RFC 7208 §4.6.4): remove terms naming names without records",
            )
        )
    if all_qualifier is None:
        findings.append(
            AuthFinding(
                Mark.WARN,
                "no all mechanism and no redirect: other hosts get neutral; end with -all or ~all",
            )
        )
    else:
        mark, text = _ALL_ADVICE[all_qualifier]
        findings.append(AuthFinding(mark, text))
    return SPFResult(record, walk.lookups, walk.voids, all_qualifier, tuple(findings))


@dataclass
class _SPFWalk:
    fetch: Fetch
    lookups: int = 0
    voids: int = 0
    findings: list[AuthFinding] = field(default_factory=list)
    visiting: set[str] = field(default_factory=set)

    def visit(self, domain: str, record: str, *, top: bool = False) -> str | None:
        """Walk one record; returns the qualifier of its `all` (via redirect too), or None."""
        if domain in self.visiting:
            self.findings.append(AuthFinding(Mark.FAIL, f"include loop at {domain}"))
            return None
        self.visiting.add(domain)
        where = "" if top else f" (in the record of {domain.rstrip('.')})"
        terms = parse_spf(record)
        all_qualifier: str | None = None
        redirect: SPFTerm | None = None
        for term in terms:
            if term.problem is not None:
                self.findings.append(AuthFinding(Mark.FAIL, term.problem + where))
                continue
            if term.macro:
                self.findings.append(
                    AuthFinding(Mark.INFO, f"{term.text!r} uses macros, not expanded here{where}")
                )
            if term.name == "all" and not term.modifier:
                all_qualifier = term.qualifier
            if term.name == "ptr" and not term.modifier:
                # RFC 7208 §5.5: "ptr" SHOULD NOT be used.
                self.findings.append(AuthFinding(Mark.WARN, f"ptr should not be used{where}"))
            if term.modifier and term.name == "redirect":
                redirect = term
        for term, queries in spf_queries(domain, record):
            self.lookups += 1
            if self.lookups > 3 * SPF_LOOKUP_LIMIT:
                return all_qualifier  # far past the limit: stop walking
            answers = [self.fetch(q) for q in queries]
            if any(isinstance(a, Exception) for a in answers):
                error = next(a for a in answers if isinstance(a, Exception))
                self.findings.append(
                    AuthFinding(Mark.FAIL, f"{term.text}: lookup failed: {error}{where}")
                )
                continue
            if queries and all(a is None or a == () for a in answers):
                self.voids += 1
            if term.name in ("include", "redirect") and term.argument and not term.macro:
                target = _absolute(term.argument)
                texts = answers[0] if isinstance(answers[0], tuple) else ()
                inner, problems = spf_record(texts)
                self.findings += problems
                if inner is None:
                    if not problems:
                        # RFC 7208 §5.2, §6.1: no SPF record at the target is a permerror.
                        self.findings.append(
                            AuthFinding(
                                Mark.FAIL,
                                f"{term.text}: {target.rstrip('.')} has no SPF record "
                                f"(permerror){where}",
                            )
                        )
                    continue
                inner_all = self.visit(target, inner)
                if term == redirect and all_qualifier is None:
                    all_qualifier = inner_all  # RFC 7208 §6.1: redirect when no all matched
        self.visiting.discard(domain)
        return all_qualifier


# -- DMARC (RFC 7489) ------------------------------------------------------------------------

_POLICIES = ("none", "quarantine", "reject")


def judge_dmarc(
    texts: Sequence[str] | None, *, organizational: bool = True
) -> tuple[dict[str, str] | None, list[AuthFinding]]:
    """Judge the DMARC record at `_dmarc.<domain>` (RFC 7489 §6.3, §6.6.3).

    Returns the tags of the record (None when there is none) and findings,
    with the staged-rollout advice: p=none with rua to learn, then
    quarantine with pct steps, then reject (RFC 7489 §6.6.4 pct, §6.7).
    """
    if texts is None:
        return None, [AuthFinding(Mark.FAIL, "the TXT lookup of _dmarc failed")]
    values, findings = _records_with_prefix(texts, "v=DMARC1")
    if not values:
        return None, [
            *findings,
            AuthFinding(
                Mark.WARN,
                'no DMARC record: publish "v=DMARC1; p=none; rua=mailto:..." at _dmarc '
                "to start collecting reports (RFC 7489 §6.1)",
            ),
        ]
    if len(values) > 1:
        # RFC 7489 §6.6.3: more than one record means no DMARC policy at all.
        return None, [
            *findings,
            AuthFinding(Mark.FAIL, f"{len(values)} DMARC records: receivers ignore them all"),
        ]
    tags, problems = parse_tags(values[0])
    findings += [AuthFinding(Mark.FAIL, p) for p in problems]
    if tags.get("v") != "DMARC1":
        findings.append(AuthFinding(Mark.FAIL, "the record must start with v=DMARC1 (§6.3)"))
    policy = tags.get("p", "").lower()
    if policy not in _POLICIES:
        # RFC 7489 §6.6.3: without a valid p, a record with rua is treated as p=none.
        findings.append(
            AuthFinding(
                Mark.FAIL,
                f"p={tags.get('p', '(missing)')}: p must be none, quarantine "
                "or reject (RFC 7489 §6.3)",
            )
        )
    for name in ("sp", "np"):
        if name in tags and tags[name].lower() not in _POLICIES:
            findings.append(AuthFinding(Mark.FAIL, f"{name}={tags[name]} is not a policy (§6.3)"))
    for name in ("adkim", "aspf"):
        if name in tags and tags[name].lower() not in ("r", "s"):
            findings.append(AuthFinding(Mark.FAIL, f"{name}={tags[name]}: must be r or s (§6.3)"))
    pct = 100
    if "pct" in tags:
        if tags["pct"].isdigit() and int(tags["pct"]) <= 100:
            pct = int(tags["pct"])
        else:
            findings.append(AuthFinding(Mark.FAIL, f"pct={tags['pct']}: an integer 0-100 (§6.3)"))
    for name in ("rua", "ruf"):
        if name in tags:
            for uri in tags[name].split(","):
                if not uri.strip().lower().startswith("mailto:"):
                    findings.append(
                        AuthFinding(Mark.WARN, f"{name} URI {uri.strip()!r} is not mailto: (§6.2)")
                    )
    if "rua" not in tags:
        findings.append(
            AuthFinding(Mark.WARN, "no rua: you get no aggregate reports to see who sends as you")
        )
    findings += _dmarc_stage(policy, pct, tags)
    return tags, findings


def _dmarc_stage(policy: str, pct: int, tags: Mapping[str, str]) -> list[AuthFinding]:
    """Where the domain is on the road none -> quarantine (pct steps) -> reject."""
    if policy == "none":
        return [
            AuthFinding(
                Mark.WARN,
                "p=none only monitors: once the aggregate reports show all your mail passing, "
                "move to p=quarantine; pct=25, then 50, 100",
            )
        ]
    if policy == "quarantine":
        if pct < 100:
            step = 50 if pct < 50 else 100
            return [
                AuthFinding(
                    Mark.INFO,
                    f"p=quarantine at pct={pct}: if reports stay clean, raise to pct={step}",
                )
            ]
        return [
            AuthFinding(Mark.INFO, "p=quarantine: the next and last step is p=reject (pct=100)")
        ]
    if policy == "reject":
        if pct < 100:
            return [AuthFinding(Mark.INFO, f"p=reject at pct={pct}: raise pct to 100")]
        sub = tags.get("sp", "").lower()
        if sub in ("none",):
            return [AuthFinding(Mark.WARN, "p=reject, but sp=none leaves subdomains open")]
        return [AuthFinding(Mark.PASS, "p=reject: mail failing DMARC is refused")]
    return []


# -- DKIM (RFC 6376) ---------------------------------------------------------------------------

_M365_DKIM = re.compile(
    r"^selector[12]-[a-z0-9-]+\._domainkey\.([a-z0-9-]+)\.(?:[a-z0-9-]+\.)?onmicrosoft\.com\.?$"
)


def microsoft_dkim_tenant(cname_target: str) -> str | None:
    """The Microsoft 365 tenant a `selector1`/`selector2` CNAME points to, or None.

    Microsoft 365 publishes the keys at
    `selectorN-<domain>._domainkey.<tenant>.onmicrosoft.com` (newer tenants
    add a region label); the domain owner publishes CNAMEs there.
    """
    found = _M365_DKIM.match(cname_target.lower())
    return found.group(1) if found else None


def judge_dkim(
    selector: str, texts: Sequence[str] | None, cname_chain: Sequence[str]
) -> list[AuthFinding]:
    """Judge the key record of one DKIM selector (RFC 6376 §3.6.1); None: lookup failed."""
    name = f"selector {selector}"
    findings: list[AuthFinding] = []
    if cname_chain:
        tenant = microsoft_dkim_tenant(cname_chain[0])
        via = cname_chain[-1].rstrip(".")
        if tenant is not None:
            findings.append(
                AuthFinding(Mark.INFO, f"{name}: CNAME to Microsoft 365 tenant {tenant} ({via})")
            )
        else:
            findings.append(AuthFinding(Mark.INFO, f"{name}: CNAME to {via}"))
    if texts is None:
        return [*findings, AuthFinding(Mark.FAIL, f"{name}: the lookup failed")]
    if not texts:
        hint = ""
        if selector in DKIM_M365_SELECTORS and not cname_chain:
            hint = " (Microsoft 365: publish the selector CNAMEs shown in the Defender portal)"
        elif cname_chain:
            hint = " (the CNAME target has no key: is DKIM signing enabled there?)"
        return [*findings, AuthFinding(Mark.FAIL, f"{name}: no key record{hint}")]
    keys = []
    for text in texts:
        try:
            value = txt_value(text)
        except ValueError as exc:
            findings.append(AuthFinding(Mark.FAIL, f"{name}: {exc}"))
            continue
        keys.append(value)
    if len(keys) != 1:
        return [*findings, AuthFinding(Mark.FAIL, f"{name}: {len(keys)} TXT records, expected 1")]
    tags, problems = parse_tags(keys[0])
    findings += [AuthFinding(Mark.FAIL, f"{name}: {p}") for p in problems]
    if "v" in tags and tags["v"] != "DKIM1":
        findings.append(AuthFinding(Mark.FAIL, f"{name}: v={tags['v']}, must be DKIM1 (§3.6.1)"))
    if "p" not in tags:
        findings.append(AuthFinding(Mark.FAIL, f"{name}: no p= tag (public key) (§3.6.1)"))
    elif tags["p"] == "":
        findings.append(AuthFinding(Mark.WARN, f"{name}: p= is empty: the key is revoked (§3.6.1)"))
    else:
        key_type = tags.get("k", "rsa")
        if key_type not in ("rsa", "ed25519"):
            findings.append(AuthFinding(Mark.FAIL, f"{name}: unknown key type k={key_type}"))
        elif not re.fullmatch(r"[A-Za-z0-9+/=\s]+", tags["p"]):
            findings.append(AuthFinding(Mark.FAIL, f"{name}: p= is not base64"))
        else:
            bits = len(re.sub(r"\s", "", tags["p"])) * 6
            if key_type == "rsa" and bits < 1500:  # a 1024-bit key's SPKI is ~216 base64 chars
                findings.append(
                    AuthFinding(Mark.WARN, f"{name}: short RSA key; use 2048 bits (RFC 8301 §3.2)")
                )
            else:
                findings.append(AuthFinding(Mark.PASS, f"{name}: {key_type} key published"))
    if "y" in tags.get("t", "").split(":"):
        findings.append(AuthFinding(Mark.WARN, f"{name}: t=y: the domain is testing DKIM"))
    return findings


# -- MTA-STS (RFC 8461 §3.1) and TLS-RPT (RFC 8460 §3) ------------------------------------------


def judge_mta_sts(texts: Sequence[str] | None) -> list[AuthFinding]:
    """The `_mta-sts` TXT record: exactly one, `v=STSv1; id=<1-32 alphanumerics>`."""
    if texts is None:
        return [AuthFinding(Mark.FAIL, "the TXT lookup of _mta-sts failed")]
    values, findings = _records_with_prefix(texts, "v=STSv1")
    if not values:
        return [
            *findings,
            AuthFinding(
                Mark.WARN,
                "no MTA-STS record: senders without DANE support get no downgrade protection "
                "(RFC 8461)",
            ),
        ]
    if len(values) > 1:
        # RFC 8461 §3.1: more than one record: treat as if there were none.
        return [*findings, AuthFinding(Mark.FAIL, f"{len(values)} MTA-STS records, expected 1")]
    tags, problems = parse_tags(values[0])
    findings += [AuthFinding(Mark.FAIL, p) for p in problems]
    if tags.get("v") != "STSv1":
        findings.append(AuthFinding(Mark.FAIL, "v=STSv1 must come first (RFC 8461 §3.1)"))
    sts_id = tags.get("id")
    if sts_id is None or not re.fullmatch(r"[A-Za-z0-9]{1,32}", sts_id):
        # RFC 8461 §3.1: sts-id = 1*32(ALPHA / DIGIT)
        findings.append(AuthFinding(Mark.FAIL, f"id={sts_id}: 1 to 32 letters and digits"))
    elif not any(f.mark is Mark.FAIL for f in findings):
        findings.append(
            AuthFinding(
                Mark.PASS,
                f"MTA-STS record with id={sts_id} (the HTTPS policy file is not fetched)",
            )
        )
    return findings


def judge_tls_rpt(texts: Sequence[str] | None) -> list[AuthFinding]:
    """The `_smtp._tls` TXT record: `v=TLSRPTv1; rua=<mailto: or https: URIs>` (RFC 8460 §3)."""
    if texts is None:
        return [AuthFinding(Mark.FAIL, "the TXT lookup of _smtp._tls failed")]
    values, findings = _records_with_prefix(texts, "v=TLSRPTv1")
    if not values:
        return [
            *findings,
            AuthFinding(
                Mark.WARN,
                "no TLS-RPT record: you will not hear of senders failing to reach you over TLS "
                "(RFC 8460)",
            ),
        ]
    if len(values) > 1:
        # RFC 8460 §3: more than one record: no reports are sent.
        return [*findings, AuthFinding(Mark.FAIL, f"{len(values)} TLS-RPT records, expected 1")]
    tags, problems = parse_tags(values[0])
    findings += [AuthFinding(Mark.FAIL, p) for p in problems]
    if tags.get("v") != "TLSRPTv1":
        findings.append(AuthFinding(Mark.FAIL, "v=TLSRPTv1 must come first (RFC 8460 §3)"))
    rua = [u.strip() for u in tags.get("rua", "").split(",") if u.strip()]
    if not rua:
        findings.append(AuthFinding(Mark.FAIL, "no rua= with a reporting address (RFC 8460 §3)"))
    for uri in rua:
        if not uri.lower().startswith(("mailto:", "https:")):
            findings.append(AuthFinding(Mark.FAIL, f"rua {uri!r}: mailto: or https: (§3)"))
    if rua and not any(f.mark is Mark.FAIL for f in findings):
        findings.append(AuthFinding(Mark.PASS, f"TLS-RPT reports go to {', '.join(rua)}"))
    return findings
