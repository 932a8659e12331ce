"""dane-relay: an outbound SMTP relay that delivers only to DANE-authenticated servers."""

__version__ = "0.1.0"
