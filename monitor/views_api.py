"""The JSON API (/api/v1) and the webhook endpoint."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import select

from connectors.base import connector_types
from monitor.auth import needs_token
from monitor.models import ConnectorState, db
from monitor.queries import RUNNING, iso, running_tickets, ticket_detail

bp = Blueprint("api", __name__, url_prefix="/api/v1")
METRICS = ("first_response", "next_response", "periodic_update", "resolution")


def shown_cursor(kind: str, cursor: Any) -> Any:
    """A cursor as the API shows it: the keys its connector type declares secret
    (``cursor_secrets``) as ``***``."""
    connector = connector_types().get(kind)
    hidden = connector.cursor_secrets if connector is not None else ()
    if not isinstance(cursor, dict) or not hidden:
        return cursor
    return {k: "***" if k in hidden and v else v for k, v in cursor.items()}


def error(status: int, message: str, detail: Any = None) -> tuple[Response, int]:
    return jsonify({"error": message, "detail": detail}), status


@bp.get("/tickets")
@needs_token
def tickets() -> Any:
    state = request.args.get("state") or None
    metric = request.args.get("metric") or None
    if state is not None and state not in RUNNING:
        return error(400, "bad state", f"one of {', '.join(RUNNING)}")
    if metric is not None and metric not in METRICS:
        return error(400, "bad metric", f"one of {', '.join(METRICS)}")
    try:
        limit = int(request.args.get("limit", "100"))
    except ValueError:
        return error(400, "bad limit", "a whole number from 1 to 1000")
    if not 1 <= limit <= 1000:
        return error(400, "bad limit", "a whole number from 1 to 1000")
    ext = current_app.extensions["slamon"]
    found = running_tickets(
        db.session,
        ext.now(),
        states=(state,) if state else RUNNING,
        metric=metric,
        connector=request.args.get("connector") or None,
        policy=request.args.get("policy") or None,
        limit=limit,
        rules=ext.rules,
    )
    return jsonify({"tickets": found, "count": len(found)})


@bp.get("/tickets/<connector>/<path:ticket>")
@needs_token
def ticket(connector: str, ticket: str) -> Any:
    ext = current_app.extensions["slamon"]
    found = ticket_detail(db.session, connector, ticket, ext.now(), ext.rules)
    if found is None:
        return error(404, "no such ticket", {"connector": connector, "ticket": ticket})
    return jsonify(found)


@bp.get("/connectors")
@needs_token
def connectors() -> Any:
    ext = current_app.extensions["slamon"]
    now = ext.now()
    states = {s.name: s for s in db.session.scalars(select(ConnectorState))}
    out = []
    for spec in ext.config.connectors:
        state = states.get(spec.name)
        out.append(
            {
                "name": spec.name,
                "type": spec.type,
                "config": spec.public(),
                "up": bool(state and state.up),
                "last_success": iso(state.last_success) if state else None,
                "last_error": ext.redact(state.last_error) if state and state.last_error else None,
                "lag_seconds": round(now - state.newest_change)
                if state and state.newest_change
                else None,
                "cursor": shown_cursor(spec.type, state.cursor) if state else None,
                "notes": list(state.notes or []) if state else [],
            }
        )
    return jsonify({"connectors": out})


@bp.post("/webhooks/<connector>")
def webhook(connector: str) -> Any:
    ext = current_app.extensions["slamon"]
    instance = ext.connectors.get(connector)
    if instance is None:
        return error(404, "no such connector", connector)
    verify = getattr(instance, "verify_webhook", None)
    if verify is None:
        return error(404, "this connector takes no webhooks", connector)
    body = request.get_data()
    if not verify(request.headers, body):
        return error(401, "bad signature")
    try:
        tickets = list(instance.webhook_tickets(body))
    except Exception:  # an odd body: sync instead
        tickets = []
    if ext.scheduler is not None:
        if tickets:
            ext.scheduler.fetch(connector, tickets)
        else:
            ext.scheduler.poke(connector)
    return jsonify({"accepted": True, "tickets": tickets}), 202
