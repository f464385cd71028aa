"""Errors of the writer: one root, subclasses that say what went wrong."""


class WriterError(Exception):
    """The writer failed."""


class MalformedEntry(WriterError):
    """A stream entry lacks a field or carries a value no status change can have."""


class LockLost(WriterError):
    """The connection holding the active writer's lock is gone: another may take over."""
