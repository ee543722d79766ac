"""Alembic revisions of the cassette schema (a package so that it is installed)."""
