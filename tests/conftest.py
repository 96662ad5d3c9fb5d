"""Fixtures for every test. Plain helper functions shared across folders live in
``tests/helpers.py`` (``from helpers import ...``): a conftest is never imported by name."""
