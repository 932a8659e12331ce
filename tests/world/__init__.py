"""The test world: a private DNSSEC hierarchy on real NSD and Unbound, on loopback.

Declare zones as data (:class:`Zone`), then::

    with start_world(tmp_path, default_zones()) as world:
        reply = ask(world.resolver, "mx.ecdsa.test.", "A")
        assert reply.status is Status.SECURE

``start_world(workdir, zones) -> World`` generates keys (ldns-keygen), adds NS/glue/DS to
parents, signs (ldns-signzone), applies the declared breakage, serves every zone from one
NSD and starts a validating and a non-validating Unbound, all on 127.0.0.1 with free ports.
``World`` has ``resolver``, ``nonvalidating_resolver`` and ``authoritative`` as
``(host, port)``, ``trust_anchor_file`` (DS of the private root), ``workdir``, ``signed``
(zone files and keys) and ``stop()``; it is also a context manager. Missing binaries raise
:class:`MissingTool` naming the Debian package.

To add zones (e.g. TLSA records for certificates made at test time)::

    zones = replace_zone(default_zones(), Zone("dane.test.", records=(...)))

Modules: :mod:`.model` (declarations), :mod:`.zones` (the default world, its table of names
and :data:`EXPECTATIONS`), :mod:`.signer`, :mod:`.servers`, :mod:`.query`, :mod:`.world`.
"""

from .model import (
    Algorithm,
    Breakage,
    CorruptSignature,
    Delegation,
    Denial,
    ExpiredSignatures,
    Forge,
    Signing,
    StripSignatures,
    Zone,
    replace_zone,
)
from .query import Reply, Status, ask, resolve
from .servers import ServerError
from .signer import SignedWorld, SignedZone, SignerError
from .tools import MissingTool
from .world import World, start_world
from .zones import EXPECTATIONS, TLD, Expectation, default_zones, mail_records, placeholder_digest

__all__ = [
    "EXPECTATIONS",
    "TLD",
    "Algorithm",
    "Breakage",
    "CorruptSignature",
    "Delegation",
    "Denial",
    "Expectation",
    "ExpiredSignatures",
    "Forge",
    "MissingTool",
    "Reply",
    "ServerError",
    "SignedWorld",
    "SignedZone",
    "SignerError",
    "Signing",
    "Status",
    "StripSignatures",
    "World",
    "Zone",
    "ask",
    "default_zones",
    "mail_records",
    "placeholder_digest",
    "replace_zone",
    "resolve",
    "start_world",
]
