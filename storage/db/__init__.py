"""Databases: configdb, missiondb and caldb in one SQLAlchemy metadata, migrated by Alembic."""

from storage.db.engine import get_engine, make_engine, transaction, upgrade_to_head

__all__ = ["get_engine", "make_engine", "transaction", "upgrade_to_head"]
