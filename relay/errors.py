"""Exceptions for bugs and bad input at the edges; expected outcomes are values, not exceptions."""


class RelayError(Exception):
    """Base class of dane-relay's own exceptions."""


class UsageError(RelayError):
    """Bad input from a user (command line, file, record text): reported in one line, exit 2."""


class ConfigError(UsageError):
    """An invalid configuration file or key; the message names the key."""
