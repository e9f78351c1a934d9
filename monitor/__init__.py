"""slamon's service: the Flask application, storage, sync loop, /metrics, API and board."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, jsonify
from prometheus_client import CollectorRegistry
from werkzeug.exceptions import HTTPException

from connectors.base import Connector, connector_types
from monitor.database import engine_options, prepare_sqlite, tune
from monitor.metrics import StoredMetrics
from monitor.models import ConnectorState, db
from monitor.scheduler import Job, Scheduler
from monitor.secrets import Redactor
from rules import RuleSet

if TYPE_CHECKING:
    from monitor.config import Config

try:
    VERSION = version("slamon")
except PackageNotFoundError:  # running from a checkout that was not installed
    VERSION = "0.0.0"


@dataclass
class Slamon:
    """What the application holds besides Flask's own: bound in ``create_app``."""

    config: Config
    rules: RuleSet
    connectors: dict[str, Connector]
    redact: Redactor
    registry: CollectorRegistry
    scheduler: Scheduler | None = None
    api_token: str | None = None
    metrics_auth: tuple[str, str] | None = None
    now: Callable[[], float] = time.time  # the app's clock as Unix time (API, board)
    extras: dict[str, Any] = field(default_factory=dict)


def build_connectors(config: Config) -> dict[str, Connector]:
    types = connector_types()
    out = {}
    for spec in config.connectors:
        cls = types.get(spec.type)
        if cls is None:
            raise ValueError(f"connector {spec.name}: type {spec.type!r} is not available")
        out[spec.name] = cls(spec.name, spec.options())
    return out


def create_app(
    config: Config,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    connectors: dict[str, Connector] | None = None,
) -> Flask:
    """The application for a loaded config. The sync loop is not started here (see
    ``start_sync``), so tests, the CLI and the web server decide when it runs."""
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = prepare_sqlite(config.database)
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(config.database)
    db.init_app(app)
    with app.app_context():
        tune(db.engine)
    server = config.server
    basic = server.metrics_basic_auth
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        StoredMetrics(lambda: db.Session(bind=_engine(app)), VERSION, lambda: clock().timestamp())
    )
    built = connectors if connectors is not None else build_connectors(config)
    ext = Slamon(
        config=config,
        rules=config.rules,
        connectors=built,
        redact=Redactor(config.secrets()),
        registry=registry,
        api_token=server.api_token.get_secret_value() if server.api_token else None,
        metrics_auth=(basic.username, basic.password.get_secret_value()) if basic else None,
        now=lambda: clock().timestamp(),
    )
    for connector in built.values():  # tokens a source rotates, unknown to the config
        ext.redact.watch(connector.secrets_in_use)
    jobs = {
        name: Job(c, spec.interval)
        for spec in config.connectors
        for name, c in built.items()
        if name == spec.name
    }
    ext.scheduler = Scheduler(app, jobs, ext.redact, clock)
    if config.alertmanager is not None:
        from monitor.alerts import AlertPusher, PushMetrics

        ext.scheduler.alerts = AlertPusher(app, config.alertmanager, ext.redact, clock)
        registry.register(PushMetrics(lambda: db.Session(bind=_engine(app))))
    app.extensions["slamon"] = ext

    from monitor import views_api, views_board, views_metrics

    app.register_blueprint(views_metrics.bp)
    app.register_blueprint(views_api.bp)
    app.register_blueprint(views_board.bp)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _server_error)
    return app


def _engine(app: Flask) -> Any:
    with app.app_context():
        return db.engine


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    return jsonify({"error": exc.name.lower(), "detail": exc.description}), exc.code or 500


def _server_error(exc: Exception) -> tuple[Response, int]:
    app_log = __import__("logging").getLogger("slamon.http")
    app_log.error("request failed: %s", type(exc).__name__)
    return jsonify({"error": "internal error", "detail": None}), 500


def register_connectors(app: Flask) -> None:
    """Make sure every configured connector has its row (cursor, health)."""
    ext: Slamon = app.extensions["slamon"]
    with app.app_context():
        for spec in ext.config.connectors:
            state = db.session.get(ConnectorState, spec.name)
            if state is None:
                db.session.add(ConnectorState(name=spec.name, type=spec.type, up=False))
            elif state.type != spec.type:
                state.type, state.cursor = spec.type, None  # another source now: start over
        db.session.commit()
