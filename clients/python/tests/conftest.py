"""Shared pytest configuration (paths live in tests/_paths.py)."""
