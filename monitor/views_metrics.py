"""GET /metrics, /healthz and /readyz."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client.exposition import choose_encoder
from sqlalchemy import text

from monitor.auth import metrics_auth_ok, metrics_denied
from monitor.models import db

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    if not metrics_auth_ok():
        return metrics_denied()
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(current_app.extensions["slamon"].registry)
    return Response(body, content_type=content_type)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    try:
        db.session.execute(text("SELECT 1"))
    except Exception:
        return jsonify({"status": "unavailable", "detail": "the database does not answer"}), 503
    return jsonify({"status": "ready"}), 200
