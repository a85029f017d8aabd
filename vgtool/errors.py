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


class OutputLocked(InputError):
    """Another run is writing into the output folder."""


class OutputWriteError(VgtoolError):
    """An output could not be written: the disk is full, or write permission was lost."""


class ModelSourceError(VgtoolError):
    """A backbone or text encoder cannot be found locally or on the hub."""


class Interrupted(VgtoolError):
    """The user stopped a command (Ctrl-C: exit status 130, SIGTERM: 143); the message says what
    was kept and how to go on."""

    exit_code = 130

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived during a grounding run. It unwinds the run as Ctrl-C does (it is a
    ``KeyboardInterrupt``), so whatever keeps finished work on Ctrl-C keeps it here too."""

    exit_code = 143
