"""The listener daemon: follows PostgreSQL's change stream and keeps Redis right."""
