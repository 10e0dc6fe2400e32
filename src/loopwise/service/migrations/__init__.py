"""Alembic migrations for loopwise, as raw SQL revisions (see ``versions/``)."""
