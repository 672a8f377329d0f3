"""Persistence: engine set-up, ORM tables, migrations and repositories.

All SQL lives here.  Repositories take an ``AsyncSession`` and never commit;
the request or job boundary does (``Database.transaction``).  Differences
between SQLite and PostgreSQL stay inside this package.
"""
