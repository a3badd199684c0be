"""Alembic migrations of the SQL mirror's schema, one per change (run by mirror/database.py)."""
