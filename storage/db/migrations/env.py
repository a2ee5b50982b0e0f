"""Alembic environment: migrations run on the connection that ``upgrade_to_head`` gives."""

from __future__ import annotations

from alembic import context

from storage.db import models  # noqa: F401  (registers the tables)
from storage.db.base import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through storage.db.upgrade_to_head(url)")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    user_module_prefix="storage.db.base.",
)
with context.begin_transaction():
    context.run_migrations()
