"""The ``slamon`` command line (CONTRACT.md, "Command line")."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
DEMO_DIR = Path("slamon-data")


def _config_path(given: str | None) -> str:
    return given or os.environ.get("SLAMON_CONFIG") or "slamon.yaml"


def _fail_config(errors: Any) -> NoReturn:
    for problem in errors:
        click.echo(str(problem), err=True)
    sys.exit(EXIT_CONFIG)


def load(given: str | None, demo: bool = False) -> Any:
    """The config, or the demo's; a bad config prints ``PATH:LINE: message`` lines, exits 2."""
    from monitor.config import ConfigErrors, demo_config, load_config

    try:
        return demo_config(DEMO_DIR) if demo else load_config(_config_path(given))
    except ConfigErrors as exc:
        _fail_config(exc.errors)


def app_for(config: Any) -> Any:
    from monitor import create_app, register_connectors
    from monitor.database import upgrade

    try:
        app = create_app(config)
    except ValueError as exc:
        _fail_config([f"{_config_path(None)}:0: {exc}"])
    upgrade(app)
    register_connectors(app)
    return app


config_option = click.option(
    "--config",
    "config_file",
    metavar="PATH",
    help="Config file (default: $SLAMON_CONFIG, else ./slamon.yaml).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="slamon")
def main() -> None:
    """slamon: service-level clocks for support tickets."""


@main.command("check-config")
@config_option
def check_config(config_file: str | None) -> None:
    """Validate the config and exit."""
    from monitor import build_connectors

    config = load(config_file)
    try:
        build_connectors(config)  # every type available, every option acceptable
    except Exception as exc:
        _fail_config([f"{_config_path(config_file)}:0: {app_redact(config, str(exc))}"])
    counts = f"{len(config.connectors)} connectors, {len(config.rules.policies)} policies"
    click.echo(f"{_config_path(config_file)}: ok ({counts})")


@main.command()
@config_option
@click.option(
    "--demo", is_flag=True, help="No config: SQLite in ./slamon-data and the built-in demo source."
)
@click.option("--listen", metavar="HOST:PORT", help="Address to serve on (default: server.listen).")
def run(config_file: str | None, demo: bool, listen: str | None) -> None:
    """Serve /metrics, the API and the board; keep every connector syncing."""
    from monitor.server import serve

    config = load(config_file, demo=demo)
    app = app_for(config)
    serve(app, listen or config.server.listen)


@main.command()
@config_option
@click.option("--once", is_flag=True, required=True, help="One full incremental sync, then exit.")
@click.option("--connector", "only", metavar="NAME", help="Sync only this connector.")
def sync(config_file: str | None, once: bool, only: str | None) -> None:
    """Sync each connector to the end of its stream, evaluate, and exit."""
    config = load(config_file)
    app = app_for(config)
    scheduler = app.extensions["slamon"].scheduler
    names = [c.name for c in config.connectors]
    if only is not None and only not in names:
        click.echo(
            f"no connector named {only!r} (configured: {', '.join(names) or 'none'})", err=True
        )
        sys.exit(EXIT_CONFIG)
    failed = []
    for name in names:
        if only in (None, name) and not scheduler.sync_once(name, _progress(name)):
            failed.append(name)
    if sys.stderr.isatty():
        click.echo("", err=True)
    scheduler.tick()
    with app.app_context():
        from monitor.models import ConnectorState, db

        for name in names:
            state = db.session.get(ConnectorState, name)
            if only in (None, name) and state is not None:
                for note in state.notes or []:
                    click.echo(f"warning: {name}: {note}", err=True)
                if name in failed:
                    click.echo(f"{name}: failed: {state.last_error}", err=True)
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


def _progress(name: str) -> Any:
    """A live count of what a long backfill has stored, when someone is watching."""
    if not sys.stderr.isatty():
        return None

    def show(stored: int) -> None:
        click.echo(f"\r{name}: {stored:,} changes stored", err=True, nl=False)

    return show


@main.command()
@config_option
@click.option("--at", "at", metavar="ISO8601", help="Evaluate as of this instant (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def clocks(config_file: str | None, at: str | None, as_json: bool) -> None:
    """Evaluate every stored ticket as of an instant; one row per clock."""
    from monitor.reports import clocks_at, format_clock_rows

    config = load(config_file)
    app = app_for(config)
    when = _instant(at) if at else dt.datetime.now(dt.UTC)
    rows = clocks_at(app, when)
    click.echo(json.dumps(rows, indent=1) if as_json else format_clock_rows(rows))


@main.command()
@config_option
@click.option(
    "--policies",
    "policies_file",
    required=True,
    metavar="FILE",
    help="YAML with calendars: and policies: to compare.",
)
@click.option("--since", metavar="ISO8601", help="Only tickets created since this instant.")
def backtest(config_file: str | None, policies_file: str, since: str | None) -> None:
    """Replay stored history under other policies and compare compliance."""
    from monitor.config import ConfigErrors, load_rules_file
    from monitor.reports import backtest as run_backtest

    config = load(config_file)
    try:
        other = load_rules_file(policies_file)
    except ConfigErrors as exc:
        _fail_config(exc.errors)
    app = app_for(config)
    click.echo(run_backtest(app, config.rules, other, _instant(since) if since else None))


@main.command("suggest-policies")
@config_option
@click.option("--connector", "name", required=True, metavar="NAME")
def suggest_policies(config_file: str | None, name: str) -> None:
    """Print the targets and working hours the source defines as calendars and policies."""
    from monitor import create_app, register_connectors
    from monitor.database import upgrade as apply
    from monitor.models import ConnectorState, db

    config = load(config_file)
    app = create_app(config)
    ext = app.extensions["slamon"]
    connector = ext.connectors.get(name)
    if connector is None:
        click.echo(f"no connector named {name!r}", err=True)
        sys.exit(EXIT_CONFIG)
    suggest = getattr(connector, "suggest_policies", None)
    if suggest is None:
        click.echo(
            f"{name}: a {connector.type} source defines no targets slamon can read", err=True
        )
        sys.exit(EXIT_FAILED)
    apply(app)
    register_connectors(app)
    with app.app_context():  # the stored cursor holds the newest rotated credentials
        state = db.session.get(ConnectorState, name)
        assert state is not None
        try:
            text = suggest(state.cursor)
        except Exception as exc:  # unreachable source
            click.echo(f"{name}: {ext.redact(str(exc))}", err=True)
            sys.exit(EXIT_FAILED)
        rotated = connector.cursor_secrets_now()
        if rotated:  # the source rotated a token: the next sync must use the new one
            state.cursor = {**(state.cursor or {}), **rotated}
            db.session.commit()
    click.echo(text)


@main.group()
def db() -> None:
    """Database schema."""


@db.command()
@config_option
def upgrade(config_file: str | None) -> None:
    """Apply schema migrations."""
    from monitor import create_app
    from monitor.database import upgrade as apply

    apply(create_app(load(config_file)))
    click.echo("database is up to date")


def app_redact(config: Any, text: str) -> str:
    from monitor.secrets import Redactor

    return Redactor(config.secrets())(text)


def _instant(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 instant") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


if __name__ == "__main__":
    main()
