"""The DANE core: TLSA records, certificate matching and DNSSEC-aware DNS answers.

RFCs 6698, 7671 and 7672.  Nothing in this package speaks SMTP.
"""
