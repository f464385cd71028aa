"""Errors of the listener: one root, subclasses that say what went wrong."""


class ListenerError(Exception):
    """The listener failed."""


class DecodeError(ListenerError):
    """A replication message could not be decoded."""


class SlotInUse(ListenerError):
    """Another listener holds the replication slot (SQLSTATE 55006)."""


class StreamEnded(ListenerError):
    """The server ended the replication stream."""


class SourceUnavailable(ListenerError):
    """The database cannot serve this source (wal_level, missing outbox, privileges)."""


class StreamSilent(StreamEnded):
    """Nothing arrived from the server within the liveness bound: the connection is dead."""
