"""The SQL mirror: sessions copied into SQLite or PostgreSQL by the worker, for queries.

``database.py`` (the URL, the schema and its Alembic migrations, read-only queries),
``schema.py`` (the tables), ``rows.py`` (a session as rows, one transaction each) and
``run.py`` (a run: the sessions the event stream names since the last one).
"""
