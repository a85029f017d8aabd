"""Errors that the CLI turns into one clean line and a non-zero exit."""

from __future__ import annotations


class VgtoolError(Exception):
    """Base of all errors whose message is meant for the user as it is."""

    exit_code = 1


class ConfigError(VgtoolError):
    """A recipe, preset or override is malformed."""


class CheckpointError(VgtoolError):
    """A checkpoint is missing, corrupt, or does not match the architecture."""


class InputError(VgtoolError):
    """Inputs (images, phrases, paths) cannot be used."""


class ModelSourceError(VgtoolError):
    """A backbone or text encoder cannot be found locally or on the hub."""


class Interrupted(VgtoolError):
    """The user stopped a command (Ctrl-C); the message says what was kept and how to go on."""

    exit_code = 130
