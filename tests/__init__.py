"""The test suite: unit, integration and acceptance tiers (see tests/conftest.py)."""
