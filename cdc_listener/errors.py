"""Errors of the listener, under the product's one tree (mescache.errors): `ListenerError`
is their root, and each also stands in the branch that says whether a retry can help."""

from mescache.errors import Fatal, MesCacheError, Retryable


class ListenerError(MesCacheError):
    """The listener failed (the root of its errors; never raised by itself)."""


class DecodeError(ListenerError, Fatal):
    """A replication message could not be decoded."""


class ProtocolViolation(ListenerError, Fatal):
    """The stream broke pgoutput's rules: a row change outside a transaction, before its
    relation, or with more or fewer values than the relation has columns."""


class SlotInUse(ListenerError, Retryable):
    """Another listener holds the replication slot (SQLSTATE 55006)."""


class StreamEnded(ListenerError, Retryable):
    """The server ended the replication stream."""


class StreamSilent(StreamEnded):
    """Nothing arrived from the server within the liveness bound: the connection is dead."""


class StreamRefused(ListenerError, Fatal):
    """The server refused to start the stream (a missing publication, a bad option)."""


class SourceUnavailable(ListenerError, Fatal):
    """The database cannot serve this source (wal_level, missing outbox, privileges)."""
