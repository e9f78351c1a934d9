"""The database: engine settings per dialect, and schema migrations (alembic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from flask import Flask
from sqlalchemy import Engine, event

from monitor.models import db

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 10}


def prepare_sqlite(url: str) -> str:
    """A SQLite file database's URL with an absolute path (relative paths are the working
    directory's, as users expect, not Flask's instance folder), its folder created."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + ":memory:"):
        return url
    path = Path(url.removeprefix(prefix)).expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    return prefix + str(path)


def tune(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:  # WAL: readers never wait for the writer
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


def upgrade(app: Flask) -> None:
    """Apply every migration not yet applied (``slamon db upgrade``)."""
    with app.app_context(), db.engine.begin() as connection:
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def alembic_config() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config
