"""Alembic migrations; run with ``cloudwindow db upgrade`` (``server.storage.migrate``)."""
