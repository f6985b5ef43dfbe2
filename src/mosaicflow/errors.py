"""Exceptions raised by mosaicflow; each message names the file, tile or parameter at fault."""

from __future__ import annotations


class MosaicflowError(Exception):
    """Base class of every error mosaicflow raises on purpose."""


class TileSetError(MosaicflowError):
    """The acquisition folder or its grid description is unusable (missing, empty, inconsistent)."""


class TileReadError(MosaicflowError):
    """One tile cannot be read: truncated, wrong size, unknown metadata, undecodable."""


class ConfigError(MosaicflowError, ValueError):
    """A configuration value or function parameter is invalid."""


class StoreError(MosaicflowError):
    """The run store is missing, incompatible with the requested run, or incomplete."""


class ClusterError(MosaicflowError):
    """The Dask cluster cannot be started or reached."""


class CheckpointError(MosaicflowError):
    """A checkpoint file is missing, unreadable, or does not fit the architecture it declares."""


class ClassifierError(MosaicflowError):
    """A classifier file, its training data or the table it is applied to is unusable."""


class Interrupted(MosaicflowError):
    """The user stopped a run (Ctrl-C); what was written is kept and the run can be resumed."""
