"""The breach board at /: breached and at-risk tickets, nearest deadline first."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from flask import Blueprint, current_app, render_template

from monitor.auth import needs_token
from monitor.models import db
from monitor.queries import running_tickets

bp = Blueprint("board", __name__)
REFRESH_SECONDS = 15


def until(deadline: float | None, now: float) -> str:
    """``due in 12m`` or ``breached 1h 5m ago``."""
    if deadline is None:
        return ""
    seconds = int(abs(deadline - now))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours else []
    parts += [f"{minutes}m"] if minutes or not parts else []
    span = " ".join(parts[:2])
    return f"due in {span}" if deadline >= now else f"breached {span} ago"


@bp.get("/")
@needs_token
def board() -> Any:
    ext = current_app.extensions["slamon"]
    now = ext.now()
    tickets = running_tickets(
        db.session, now, states=("breached", "at_risk"), limit=200, rules=ext.rules
    )
    rows = []
    for ticket in tickets:
        for clock in ticket["clocks"]:
            deadline = ticket_deadline(clock)
            rows.append({"ticket": ticket, "clock": clock, "when": until(deadline, now)})
    breached = sum(1 for r in rows if r["clock"]["state"] == "breached")
    return render_template(
        "board.html",
        rows=rows,
        breached=breached,
        at_risk=len(rows) - breached,
        refresh=REFRESH_SECONDS,
        generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now)),
    )


def ticket_deadline(clock: dict[str, Any]) -> float | None:
    if not clock["deadline"]:
        return None
    return (
        dt.datetime.strptime(clock["deadline"], "%Y-%m-%dT%H:%M:%SZ")
        .replace(tzinfo=dt.UTC)
        .timestamp()
    )
