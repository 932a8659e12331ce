"""`dane-relay demo`: what DANE protects against, shown on one machine (issue 8).

An in-process world on loopback (a DNSSEC-signed hierarchy with its own trust
anchor, an honest MX with a TLSA record, an attacker's MX, two men in the middle
and a DNS spoofer) and four scenarios, each run with a plain opportunistic-TLS
sender and with dane-relay's normal delivery path.  Modules: `zones` (signed
zones and DNS answers), `network` (the loopback servers), `world` (start and
stop them), `scenarios` (the runs), `results` (what they produced), `render`
(text, JSON, HTML).
"""
