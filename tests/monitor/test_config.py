"""The config file: what loads, and every problem as ``PATH:LINE: key: message``.

Each YAML text below starts on line 1 right after its opening quotes, so the line numbers
in the expected messages can be counted off the text.
"""

import datetime as dt
from pathlib import Path

import pytest
from pydantic import SecretStr

from monitor import build_connectors
from monitor.config import (
    CONNECTOR_SPECS,
    DEMO_YAML,
    SECRET_KEYS,
    Config,
    ConfigErrors,
    demo_config,
    load_config,
    load_rules_file,
    parse_listen,
)
from rules.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOW = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)
TYPES = "zendesk, freshdesk, jira, zammad, helpscout, rt, bitrix24, imap, gmail, graph, demo"
STATUS_CHOICES = "'new', 'open', 'pending', 'on_hold', 'solved' or 'closed'"

CONTRACT_EXAMPLE = """\
database: sqlite:///slamon-data/slamon.db     # or postgresql+psycopg://user@host/db
server:
  listen: 127.0.0.1:9181
  api_token: ${SLAMON_API_TOKEN}               # optional: Bearer token for /api and the board
  metrics_basic_auth: {username: prom, password: ${METRICS_PASSWORD}}   # optional

calendars:                       # "24x7" always exists
  - name: berlin-office
    timezone: Europe/Berlin
    hours:
      mon-fri: ["09:00-12:30", "13:30-18:00"]
      sat: "10:00-14:00"
    holidays:
      country: DE                # public holidays from the `holidays` package
      subdivision: BE            # optional
      dates: ["2026-12-24", "2026-12-31"]

statuses:                        # optional overrides of each connector's default mapping
  zd: {hold: on_hold}

policies:                        # ordered: the first policy whose match holds applies
  - name: urgent
    match: {priority: [urgent]}
    calendar: 24x7
    targets: {first_response: 30m, next_response: 1h, resolution: 4h}
    warning: 80%                 # at_risk once 80% of a target is used; or a duration: 15m
  - name: standard
    match: {connector: [zd, support-mail], tags_none: [no-sla]}
    calendar: berlin-office
    targets: {first_response: 4h, next_response: 8h, periodic_update: 1d, resolution: 3d}
    pause_on: [pending, on_hold] # statuses that pause resolution (this is the default)

connectors:
  - name: zd
    type: zendesk
    url: https://acme.zendesk.com  # or subdomain: acme
    email: bot@acme.com
    token: ${ZENDESK_TOKEN}
    interval: 60s
    start: 2026-01-01            # how far back the first sync reaches
  - name: support-mail
    type: imap
    host: imap.acme.com
    username: support@acme.com
    password: ${IMAP_PASSWORD}
    agents: ["@acme.com"]        # senders that count as agents

alertmanager:                    # optional: push one alert per breached/at-risk ticket
  url: http://127.0.0.1:9093
  ticket_url: https://acme.zendesk.com/agent/tickets/{id}
"""

SECRETS = {
    "SLAMON_API_TOKEN": "api-token-7f3a9c",
    "METRICS_PASSWORD": "metrics-pw-51be02",
    "ZENDESK_TOKEN": "zendesk-token-c0ffee",
    "IMAP_PASSWORD": "imap-pw-9d8e7f",
}


def write(tmp_path: Path, text: str, name: str = "slamon.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigErrors) as raised:
        load_config(path, now=NOW)
    return str(raised.value).splitlines()


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return SECRETS


# --- what loads ----------------------------------------------------------------------------


def test_contract_example_loads(tmp_path, secrets_env):
    config = load_config(write(tmp_path, CONTRACT_EXAMPLE), now=NOW)

    assert config.database == "sqlite:///slamon-data/slamon.db"
    assert (config.server.host, config.server.port) == ("127.0.0.1", 9181)
    assert config.server.api_token.get_secret_value() == "api-token-7f3a9c"
    basic = config.server.metrics_basic_auth
    assert (basic.username, basic.password.get_secret_value()) == ("prom", "metrics-pw-51be02")
    assert [p.name for p in config.rules.policies] == ["urgent", "standard"]
    assert config.rules.policies[1].calendar.name == "berlin-office"
    assert sorted(config.rules.calendars) == ["24x7", "berlin-office"]
    assert config.alertmanager.ticket_url == "https://acme.zendesk.com/agent/tickets/{id}"

    zd, mail = config.connectors
    assert zd.options() == {
        "interval": 60,
        "start": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "statuses": {"hold": "on_hold"},  # the top-level `statuses:` entry for zd
        "priorities": {},
        "webhook_secret": None,
        "url": "https://acme.zendesk.com",
        "subdomain": None,
        "email": "bot@acme.com",
        "token": "zendesk-token-c0ffee",
        "oauth_token": None,
    }
    assert mail.type == "imap" and config.connector("support-mail") is mail
    options = mail.options()
    assert options["password"] == "imap-pw-9d8e7f"
    assert (options["port"], options["tls"], options["folders"]) == (993, True, ["INBOX"])
    assert options["start"] == NOW - dt.timedelta(days=30)  # the default, from load time
    assert options["agents"] == ["@acme.com"]


def test_annotated_example_loads(monkeypatch):
    env = {
        "SLAMON_DB_PASSWORD": "db-pw-1",
        "SLAMON_API_TOKEN": "api-token-2",
        "SLAMON_METRICS_PASSWORD": "metrics-pw-3",
        "ZENDESK_TOKEN": "zendesk-token-4",
        "ZENDESK_WEBHOOK_SECRET": "webhook-secret-5",
        "FRESHDESK_API_KEY": "freshdesk-key-6",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = load_config(EXAMPLES / "slamon.yaml", now=NOW)

    assert config.database == "postgresql+psycopg://slamon:db-pw-1@db.internal/slamon"
    assert "db-pw-1" not in repr(config)
    assert [c.name for c in config.calendars] == ["berlin-office", "us-support"]
    assert [p.name for p in config.rules.policies] == ["urgent", "us-customers", "standard"]
    assert [(c.name, c.type) for c in config.connectors] == [
        ("zd", "zendesk"),
        ("fd", "freshdesk"),
        ("demo", "demo"),
    ]
    assert config.connectors[0].options()["webhook_secret"] == "webhook-secret-5"
    build_connectors(config)  # every type in the example is available
    assert config.alertmanager is not None
    text = repr(config) + str(config) + repr([c.public() for c in config.connectors])
    for value in env.values():
        assert value not in text


def test_demo_config_is_complete_and_needs_no_environment(tmp_path):
    config = demo_config(tmp_path / "data", now=NOW)

    assert "${" not in DEMO_YAML
    assert config.database == f"sqlite:///{tmp_path}/data/slamon.db"
    (demo,) = config.connectors
    assert (demo.name, demo.type, demo.interval) == ("demo", "demo", 5)
    assert demo.options()["backfill"] == 3 * 86400
    assert demo.options()["start"] == NOW - dt.timedelta(days=30)
    rules = config.rules
    assert [p.name for p in rules.policies] == ["urgent", "high", "standard"]
    urgent, high, standard = rules.policies
    assert urgent.targets == {"first_response": 600, "next_response": 1800, "resolution": 14400}
    assert high.targets["periodic_update"] == 4 * 3600
    assert high.calendar.name == "24x7"
    assert standard.calendar.name == "berlin-office"
    assert standard.targets["resolution"] == 3 * 86400


def test_an_empty_file_is_the_defaults(tmp_path):
    config = load_config(write(tmp_path, "# nothing yet\n"), now=NOW)
    assert config.database == "sqlite:///slamon-data/slamon.db"
    assert config.server.listen == "127.0.0.1:9181"
    assert config.connectors == [] and config.alertmanager is None
    assert [p.name for p in config.rules.policies] == []


def test_environment_and_file_references(tmp_path, monkeypatch):
    monkeypatch.setenv("ZD_HOST", "acme.zendesk.com")
    monkeypatch.setenv("PORT", "9200")
    (tmp_path / "token.txt").write_text("file-token-123\n")  # one trailing newline: dropped
    (tmp_path / "secret.txt").write_text("two lines\nkept\n\n")
    absolute = tmp_path / "token.txt"
    path = write(
        tmp_path,
        f"""\
server: {{listen: "0.0.0.0:${{PORT}}", api_token: "${{file:{absolute}}}"}}
connectors:
  - name: zd
    type: zendesk
    url: https://${{ZD_HOST}}/
    email: bot@acme.com
    token: ${{file:token.txt}}
    webhook_secret: ${{file:secret.txt}}
""",
    )
    config = load_config(path, now=NOW)

    assert config.server.port == 9200
    assert config.server.api_token.get_secret_value() == "file-token-123"
    options = config.connectors[0].options()
    assert options["url"] == "https://acme.zendesk.com"
    assert options["token"] == "file-token-123"  # relative to the config file's directory
    assert options["webhook_secret"] == "two lines\nkept\n"


def test_start_dates_and_times_become_aware_utc(tmp_path):
    path = write(
        tmp_path,
        """\
connectors:
  - {name: a, type: demo, start: 2026-01-01}
  - {name: b, type: demo, start: "2026-01-01T12:00:00+02:00"}
  - {name: c, type: demo, start: 2026-01-01 08:00:00}
""",
    )
    starts = [c.start for c in load_config(path, now=NOW).connectors]
    assert starts == [
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 1, 8, tzinfo=dt.UTC),
    ]


def test_connector_statuses_override_the_top_level_ones(tmp_path):
    path = write(
        tmp_path,
        """\
statuses:
  fd: {"2": open, "6": pending}
connectors:
  - name: fd
    type: freshdesk
    domain: acme
    api_key: key-123
    statuses: {6: on_hold}
    priorities: {4: urgent, 1: low}
""",
    )
    (fd,) = load_config(path, now=NOW).connectors
    options = fd.options()
    assert options["statuses"] == {"2": "open", "6": "on_hold"}
    assert options["priorities"] == {"4": "urgent", "1": "low"}
    assert options["url"] == "https://acme.freshdesk.com"


def test_every_secret_key_is_a_secret_str():
    for spec in CONNECTOR_SPECS.values():
        for name, field in spec.model_fields.items():
            if name in SECRET_KEYS:
                assert "SecretStr" in str(field.annotation), (spec.__name__, name)
    assert "SecretStr" in str(CONNECTOR_SPECS["bitrix24"].model_fields["url"].annotation)


def test_parse_listen():
    assert parse_listen("0.0.0.0:9181") == ("0.0.0.0", 9181)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("localhost", ":9181", "host:0", "host:99999", "host:http"):
        with pytest.raises(ValueError):
            parse_listen(bad)


# --- problems, each as PATH:LINE: key: message ---------------------------------------------

BAD = {
    "unknown top-level key": (
        """\
database: sqlite:///x.db
databse: sqlite:///y.db
""",
        ["2: databse: unknown key 'databse'"],
    ),
    "unknown key in server": (
        """\
server:
  listen: 127.0.0.1:9181
  lisen: 0.0.0.0:80
""",
        ["3: server.lisen: unknown key 'lisen'"],
    ),
    "unknown key in a connector": (
        """\
connectors:
  - name: zd
    type: zendesk
    subdomain: acme
    oauth_token: abc123
    page_size: 100
""",
        ["6: connectors[0].page_size: unknown key 'page_size'"],
    ),
    "unknown key in a policy": (
        """\
policies:
  - name: urgent
    targets: {first_response: 30m}
  - name: standard
    targets: {resolution: 3d}
    escalate_to: boss
""",
        ["6: policies[1].escalate_to: unknown key 'escalate_to'"],
    ),
    "bad duration": (
        """\
policies:
  - name: urgent
    targets: {first_response: 30m}
  - name: standard
    targets:
      first_response: 4x
""",
        [
            "6: policies[1].targets.first_response: not a duration: '4x'"
            " (write it like 90s, 30m, 4h, 1h30m, 3d)"
        ],
    ),
    "missing key: the line of its parent mapping": (
        """\
calendars: []
policies:
  - name: urgent
    match: {priority: [urgent]}
""",
        ["3: policies[0].targets: required key is missing"],
    ),
    "unknown calendar": (
        """\
policies:
  - name: standard
    calendar: berlin
    targets: {first_response: 4h}
""",
        ["3: policies[0].calendar: no calendar named 'berlin' (known: 24x7)"],
    ),
    "bad time zone and hours": (
        """\
calendars:
  - name: office
    timezone: Mars/Olympus
    hours: {mon-fri: "9-17"}
""",
        [
            "3: calendars[0].timezone: unknown time zone 'Mars/Olympus'"
            " (use an IANA name like Europe/Berlin)",
            "4: calendars[0].hours: '9-17': '9' is not a time like 09:00 (00:00 to 24:00)",
        ],
    ),
    "duplicate connector names": (
        """\
connectors:
  - name: demo
    type: demo
  - name: demo
    type: demo
    seed: 2
""",
        ["4: connectors[1].name: connector 'demo' is defined twice"],
    ),
    "wrong normalized status": (
        """\
connectors:
  - {name: zd, type: zendesk, subdomain: acme, oauth_token: abc123}
statuses:
  zd:
    hold: on-hold
""",
        [f"5: statuses.zd.hold: 'on-hold': input should be {STATUS_CHOICES}"],
    ),
    "statuses of a connector that is not configured": (
        """\
connectors:
  - {name: zd, type: zendesk, subdomain: acme, oauth_token: abc123}
statuses:
  zendesk: {hold: on_hold}
""",
        ["4: statuses.zendesk: no connector named 'zendesk' (known: zd)"],
    ),
    "policy matching a connector that is not configured": (
        """\
policies:
  - name: a
    match: {connector: [zd]}
    targets: {resolution: 1d}
""",
        ["3: policies[0].match.connector: no connector named 'zd' (no connectors are configured)"],
    ),
    "unknown connector type": (
        """\
connectors:
  - name: desk
    type: helpdesk
""",
        [f"3: connectors[0].type: unknown connector type 'helpdesk' (known: {TYPES})"],
    ),
    "connector without type": (
        """\
connectors:
  - name: desk
    url: https://desk.example.com
""",
        [f"2: connectors[0].type: required key is missing (one of: {TYPES})"],
    ),
    "bad listen address": (
        """\
server:
  listen: localhost
""",
        ["2: server.listen: 'localhost' is not HOST:PORT (like 127.0.0.1:9181 or 0.0.0.0:9181)"],
    ),
    "zendesk without credentials": (
        """\
connectors:
  - name: zd
    type: zendesk
    url: https://acme.zendesk.com
    email: bot@acme.com
""",
        ["2: connectors[0]: give email + token, or oauth_token"],
    ),
    "zendesk with url and subdomain": (
        """\
connectors:
  - name: zd
    type: zendesk
    url: https://acme.zendesk.com
    subdomain: acme
    oauth_token: abc123
""",
        ["2: connectors[0]: give url or subdomain, not both"],
    ),
    "imap: bad interval and priority": (
        """\
connectors:
  - name: mail
    type: imap
    host: imap.acme.com
    username: support@acme.com
    password: pw123456
    agents: ["@acme.com"]
    interval: 0s
    priorities: {4: critical}
""",
        [
            "8: connectors[0].interval: must be at least 1s",
            "9: connectors[0].priorities.4: 'critical':"
            " input should be 'low', 'normal', 'high' or 'urgent'",
        ],
    ),
    "imap without agents": (
        """\
connectors:
  - name: mail
    type: imap
    host: imap.acme.com
    username: support@acme.com
    password: pw123456
""",
        ["2: connectors[0]: give agents (addresses or @domains) or a sent_folder, or both"],
    ),
    "connector name unfit for URLs and labels": (
        """\
connectors:
  - name: zd desk
    type: demo
""",
        ["2: connectors[0].name: 'zd desk': use letters, digits, '.', '_' and '-'"],
    ),
    "alertmanager": (
        """\
alertmanager:
  url: localhost:9093
  ticket_url: https://acme.example/{ticket}
""",
        [
            "2: alertmanager.url: must be an http:// or https:// URL with a host",
            "3: alertmanager.ticket_url: 'https://acme.example/{ticket}':"
            " only {id} and {connector} are filled in",
        ],
    ),
    "wrong shapes": (
        """\
connectors:
  - zd
calendars: {}
""",
        ["2: connectors[0]: expected a mapping of keys", "3: calendars: expected a list"],
    ),
    "duplicate key": (
        """\
server:
  listen: 127.0.0.1:9181
  listen: 0.0.0.0:9181
""",
        ["3: server.listen: key 'listen' is given twice (first on line 2)"],
    ),
    "not a mapping": (
        "- database\n",
        [
            "1: expected a mapping of keys"
            " (database, server, calendars, policies, statuses, connectors, alertmanager)"
        ],
    ),
    "YAML syntax": (
        """\
server:
  listen: [127.0.0.1:9181
database: sqlite:///x.db
""",
        [
            "3: invalid YAML: expected ',' or ']', but got ':'"
            " (while parsing a flow sequence from line 2)"
        ],
    ),
}


@pytest.mark.parametrize(("text", "expected"), BAD.values(), ids=BAD.keys())
def test_bad_config(tmp_path, text, expected):
    path = write(tmp_path, text)
    assert problems(path) == [f"{path}:{line}" for line in expected]


def test_every_problem_is_reported_in_line_order(tmp_path):
    path = write(
        tmp_path,
        """\
server:
  listen: nowhere
  colour: blue
policies:
  - name: a
    targets: {first_response: soon}
connectors:
  - name: x
    type: demo
    tickets_per_hour: -1
  - name: y
    type: fax
""",
    )
    assert problems(path) == [
        f"{path}:2: server.listen: 'nowhere' is not HOST:PORT"
        " (like 127.0.0.1:9181 or 0.0.0.0:9181)",
        f"{path}:3: server.colour: unknown key 'colour'",
        f"{path}:6: policies[0].targets.first_response: not a duration: 'soon'"
        " (write it like 90s, 30m, 4h, 1h30m, 3d)",
        f"{path}:10: connectors[0].tickets_per_hour: Input should be greater than 0",
        f"{path}:12: connectors[1].type: unknown connector type 'fax' (known: {TYPES})",
    ]


def test_errors_are_config_errors_with_path_line_and_key(tmp_path):
    path = write(tmp_path, "server:\n  listen: nowhere\n")
    with pytest.raises(ConfigError) as raised:  # ConfigErrors is one of the family
        load_config(path)
    (error,) = raised.value.errors
    assert (error.path, error.line, error.key) == (str(path), 2, "server.listen")


def test_missing_config_file(tmp_path):
    path = tmp_path / "absent.yaml"
    assert problems(path) == [f"{path}:0: cannot read: No such file or directory"]


def test_unset_environment_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("SLAMON_NOT_SET", raising=False)
    path = write(
        tmp_path,
        """\
connectors:
  - name: zd
    type: zendesk
    subdomain: acme
    oauth_token: ${SLAMON_NOT_SET}
""",
    )
    # Only the reference is reported, not the empty token that follows from it.
    assert problems(path) == [
        f"{path}:5: connectors[0].oauth_token: environment variable SLAMON_NOT_SET is not set"
    ]


def test_unreadable_file_reference_and_bad_reference(tmp_path):
    path = write(
        tmp_path,
        """\
database: ${not a name}
server:
  api_token: ${file:missing.txt}
""",
    )
    assert problems(path) == [
        f"{path}:1: database: '${{not a name}}' is neither ${{NAME}} nor ${{file:/path}}",
        f"{path}:3: server.api_token: cannot read file {tmp_path / 'missing.txt'}:"
        " No such file or directory",
    ]


# --- secrets never show --------------------------------------------------------------------

PLANTED = "PLANTED-s3cret-value"


@pytest.mark.parametrize(
    "text",
    [
        # A secret in a config with another error.
        f"""\
connectors:
  - name: zd
    type: zendesk
    subdomain: acme
    email: bot@acme.com
    token: {PLANTED}
    interval: often
""",
        # The secret itself of a wrong type, or in a wrong place.
        f"""\
connectors:
  - name: zd
    type: zendesk
    subdomain: acme
    email: bot@acme.com
    token: [{PLANTED}]
  - name: mail
    type: imap
    host: imap.acme.com
    username: support@acme.com
    password: {{{PLANTED}: 1}}
    port: {PLANTED}
    agents: ["@acme.com"]
""",
        # A bitrix24 webhook URL (its path is the secret) of the wrong form.
        f"""\
connectors:
  - name: b24
    type: bitrix24
    url: https://acme.bitrix24.de/rest/1/{PLANTED}/crm.deal.list
""",
        # A secret quoted wrong: a YAML error.
        f"""\
server:
  api_token: "{PLANTED}
""",
        # A password inside the database URL, which is not a valid URL.
        f"database: postgresql+psycopg//slamon:{PLANTED}@db/slamon\n",
    ],
)
def test_secrets_are_not_in_error_messages(tmp_path, text):
    messages = problems(write(tmp_path, text))
    assert messages
    for message in messages:
        assert PLANTED not in message


def test_a_secret_echoed_by_another_key_is_masked(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKEN", PLANTED)
    (tmp_path / "pw.txt").write_text(PLANTED + "-file\n")
    path = write(
        tmp_path,
        """\
server:
  api_token: ${TOKEN}
  listen: ${TOKEN}
alertmanager:
  url: https://am.example
  ticket_url: "https://x/${file:pw.txt}/{ticket}"
""",
    )
    assert problems(path) == [
        f"{path}:3: server.listen: '***' is not HOST:PORT (like 127.0.0.1:9181 or 0.0.0.0:9181)",
        f"{path}:6: alertmanager.ticket_url: 'https://x/***/{{ticket}}':"
        " only {id} and {connector} are filled in",
    ]


def test_secrets_are_not_in_repr_str_or_public_views(tmp_path, secrets_env):
    config = load_config(write(tmp_path, CONTRACT_EXAMPLE), now=NOW)
    views = [repr(config), str(config), *(repr(c) for c in config.connectors)]
    views += [repr(c.public()) for c in config.connectors]
    for view in views:
        for secret in secrets_env.values():
            assert secret not in view
    assert config.connectors[0].public()["token"] == "***"
    assert config.connectors[1].public()["password"] == "***"


def test_bitrix24_webhook_url_is_a_secret(tmp_path):
    url = "https://acme.bitrix24.de/rest/1/k3yc0de42/"
    path = write(
        tmp_path,
        f"""\
connectors:
  - name: b24
    type: bitrix24
    url: {url}
    webhook_secret: app-token-77
    lines: [1, 3]
""",
    )
    (b24,) = load_config(path, now=NOW).connectors
    assert isinstance(b24.url, SecretStr) and "k3yc0de42" not in repr(b24)
    assert b24.options()["url"] == url
    assert b24.options()["lines"] == ["1", "3"]
    assert (b24.options()["calls"], b24.options()["emails"]) == (True, True)
    public = b24.public()
    assert public["url"] == "https://acme.bitrix24.de/***"
    assert public["webhook_secret"] == "***"
    assert "k3yc0de42" not in repr(public)


def test_secrets_lists_every_secret_value_for_scrubbing(tmp_path, secrets_env):
    text = CONTRACT_EXAMPLE.replace("sqlite:///slamon-data/slamon.db", "postgresql://u:dbpw1@db/x")
    bitrix = """\
  - name: b24
    type: bitrix24
    url: https://acme.bitrix24.de/rest/1/k3yc0de42/

alertmanager:"""
    text = text.replace("\nalertmanager:", bitrix)
    config = load_config(write(tmp_path, text), now=NOW)
    assert set(config.secrets()) == {
        *secrets_env.values(),
        "dbpw1",
        "https://acme.bitrix24.de/rest/1/k3yc0de42/",
        "k3yc0de42",
    }


def test_rules_file_for_backtests(tmp_path):
    path = write(
        tmp_path,
        """\
calendars:
  - {name: office, hours: {mon-fri: "09:00-17:00"}}
policies:
  - {name: all, calendar: office, targets: {first_response: 2h}}
""",
    )
    rules = load_rules_file(path)
    assert [p.name for p in rules.policies] == ["all"]
    assert rules.policies[0].calendar.name == "office"

    bad = write(
        tmp_path,
        """\
policies:
  - {name: all, calendar: office, targets: {first_response: 2h}}
connectors: []
""",
        "bad.yaml",
    )
    with pytest.raises(ConfigErrors) as raised:
        load_rules_file(bad)
    assert str(raised.value).splitlines() == [
        f"{bad}:3: connectors: unknown key 'connectors'",
    ]


def test_database_password_is_masked_in_repr():
    config = Config(database="postgresql+psycopg://slamon:hunter2@db/slamon")
    assert "hunter2" not in repr(config) and "slamon:***@db" in repr(config)


def test_the_commented_connector_examples_are_valid(monkeypatch, tmp_path):
    """The example config's commented-out sources (imap, gmail, graph, bitrix24), taken in,
    load and build: what a user uncomments works."""
    taken, inside = [], False
    for line in (EXAMPLES / "slamon.yaml").read_text().splitlines():
        inside = line.startswith("  # - name:") or (inside and line.startswith("  #   "))
        if inside:
            taken.append("  " + line[4:])  # "  # - name: x" -> "  - name: x"
    types = {line.strip() for line in taken if line.strip().startswith("type:")}
    assert types == {"type: imap", "type: gmail", "type: graph", "type: bitrix24"}
    env = {"IMAP_PASSWORD": "imap-pw", "GMAIL_CLIENT_SECRET": "g-secret",
           "GMAIL_REFRESH_TOKEN": "g-refresh", "GRAPH_CLIENT_SECRET": "m-secret",
           "BITRIX24_WEBHOOK_URL": "https://acme.bitrix24.com/rest/1/c0de/",
           "BITRIX24_APP_TOKEN": "app-token"}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "slamon.yaml"
    path.write_text("connectors:\n" + "\n".join(taken) + "\n")
    config = load_config(path, now=NOW)
    assert sorted(c.type for c in config.connectors) == ["bitrix24", "gmail", "graph", "imap"]
    build_connectors(config)
    shown = repr([c.public() for c in config.connectors])
    assert not any(value in shown for value in env.values())
