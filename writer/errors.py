"""Errors of the writer, under the product's one tree (mescache.errors): `WriterError` is
their root, and each also stands in the branch that says whether a retry can help."""

from mescache.errors import Fatal, MesCacheError, Retryable


class WriterError(MesCacheError):
    """The writer failed (the root of its errors; never raised by itself)."""


class MalformedEntry(WriterError, Fatal):
    """A stream entry lacks a field or carries a value no status change can have."""


class LockLost(WriterError, Retryable):
    """The connection holding the active writer's lock is gone: another may take over."""


class NoOutbox(WriterError, Fatal):
    """CDC_MODE=notify, but the database has no cache_outbox to read positions from."""


class UnknownDeadLetter(WriterError, Fatal):
    """An id names no dead letter (or one that cannot be retried)."""
