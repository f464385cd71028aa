"""Tests against the real PostgreSQL and Redis servers the test session starts."""
