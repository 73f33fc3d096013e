"""Errors a user can act on. Each message names what was wrong and the fix."""


class EcgRayError(Exception):
    """Base class: the CLI prints these as one paragraph and exits with status 2."""


class ConfigError(EcgRayError, ValueError):
    """An experiment file or CLI value is unknown, of the wrong type or out of range."""


class DataError(EcgRayError, ValueError):
    """Input data is missing, unreadable or inconsistent."""
