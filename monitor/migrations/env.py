"""Alembic environment: runs on the connection slamon hands over (see monitor/database.py)."""

from alembic import context

from monitor.models import db

target_metadata = db.metadata
connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
