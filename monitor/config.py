"""The service's config: one schema, the reference for every key, and its loading.

``load_config`` reads YAML, fills ``${NAME}`` from the environment and ``${file:/path}``
with a file's content, validates against :class:`Config` and builds the rule set. Every
problem found comes back at once as :class:`ConfigErrors`, each ``PATH:LINE: key: message``.
Secrets are ``SecretStr`` and never appear in messages, reprs or ``public()`` views. Reading
the file (references, lines, placing errors) is monitor/config_file.py.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from connectors.base import START_BACK
from monitor.config_file import REDACTED, Document, Loc, read
from monitor.config_file import ConfigErrors as ConfigErrors  # re-exported
from rules.errors import ConfigError
from rules.events import PRIORITIES, STATUSES
from rules.policies import RuleSet
from rules.schema import (
    CalendarSpec,
    Duration,
    Names,
    PolicySpec,
    RulesSpec,
    build_rules,
    key_path,
)

DEFAULT_DATABASE = "sqlite:///slamon-data/slamon.db"
DEFAULT_LISTEN = "127.0.0.1:9181"
SECRET_KEYS = frozenset(
    {"token", "oauth_token", "api_key", "pat", "password", "app_secret", "client_secret"}
    | {"refresh_token", "webhook_secret", "api_token"}
)


# --- value types ---------------------------------------------------------------------------


def _http_url(value: str) -> str:
    # The value is not echoed: a URL may carry credentials (bitrix24's webhook code).
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


def _secret_url(value: SecretStr) -> SecretStr:
    _http_url(value.get_secret_value())
    return value


def _base_url(value: str) -> str:
    return _http_url(value).rstrip("/")


def _filled(value: SecretStr) -> SecretStr:
    if not value.get_secret_value():
        raise ValueError("must not be empty (leave the key out instead)")
    return value


def _str_keys(value: Any) -> Any:
    # YAML reads `4: urgent` (Freshdesk's numeric priorities) with an int key.
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


def _as_datetime(value: Any) -> Any:
    if isinstance(value, str) and len(value.strip()) == 10:
        try:
            value = dt.date.fromisoformat(value.strip())
        except ValueError:
            pass  # pydantic says what is wrong with it
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return dt.datetime.combine(value, dt.time(), dt.UTC)
    return value


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _positive(seconds: int) -> int:
    if seconds < 1:
        raise ValueError("must be at least 1s")
    return seconds


def _agent(value: str) -> str:
    if "@" not in value:
        raise ValueError(f"{value!r} is not an address (ann@acme.com) or a domain (@acme.com)")
    return value.strip().lower()


BaseUrl = Annotated[str, AfterValidator(_base_url)]
Secret = Annotated[SecretStr, AfterValidator(_filled)]
Status = Literal[STATUSES]  # type: ignore[valid-type]
StatusMap = Annotated[dict[str, Status], BeforeValidator(_str_keys)]
PriorityMap = Annotated[dict[str, Literal[PRIORITIES]], BeforeValidator(_str_keys)]  # type: ignore[valid-type]
Start = Annotated[dt.datetime, BeforeValidator(_as_datetime), AfterValidator(_utc)]
Interval = Annotated[Duration, AfterValidator(_positive)]
Agents = Annotated[Names, AfterValidator(lambda agents: [_agent(a) for a in agents])]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


def _one_way(spec: BaseModel, *ways: tuple[str, ...]) -> None:
    """Exactly one of the alternative key groups is given, and completely."""
    given = [way for way in ways if any(getattr(spec, key) is not None for key in way)]
    joint = ", or " if any(len(way) > 1 for way in ways) else " or "
    text = joint.join(" + ".join(way) for way in ways)
    if len(given) > 1:
        raise ValueError(f"give {text}, not both" if len(ways) == 2 else f"give one of {text}")
    if not given or any(getattr(spec, key) is None for key in given[0]):
        raise ValueError(f"give {text}")


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list | dict):
        return value.copy()
    return value


# --- connectors ----------------------------------------------------------------------------


class ConnectorBase(_Model):
    """Keys every connector takes."""

    name: str
    type: str
    interval: Interval = 60
    start: Start  # default: 30 days back from the load time
    statuses: StatusMap = Field(default_factory=dict)
    priorities: PriorityMap = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _default_start(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and "start" not in data:
            now = (info.context or {}).get("now") or dt.datetime.now(dt.UTC)
            data = {**data, "start": _utc(now).replace(microsecond=0) - START_BACK}
        return data

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        # The name appears in URLs (/api/v1/webhooks/<name>) and metric labels.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError(f"{value!r}: use letters, digits, '.', '_' and '-'")
        return value

    def options(self) -> dict[str, Any]:
        """Plain values, secrets revealed, to build the connector from (name and type aside)."""
        fields = (key for key in type(self).model_fields if key not in ("name", "type"))
        return {**{key: _reveal(getattr(self, key)) for key in fields}, **self._resolved()}

    def public(self) -> dict[str, Any]:
        """JSON-ready values for the API, every secret shown as ``***``."""
        data = {**self.model_dump(mode="json"), **self._resolved()}
        for key in type(self).model_fields:
            if isinstance(getattr(self, key), SecretStr):
                data[key] = REDACTED
        return data

    def _resolved(self) -> dict[str, Any]:
        """Values that defaults derive from other keys (never secrets)."""
        return {}


class _Signed(ConnectorBase):
    webhook_secret: Secret | None = None


class ZendeskSpec(_Signed):
    type: Literal["zendesk"]
    url: BaseUrl | None = None
    subdomain: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+$")] | None = None
    email: str | None = None
    token: Secret | None = None
    oauth_token: Secret | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        _one_way(self, ("url",), ("subdomain",))
        _one_way(self, ("email", "token"), ("oauth_token",))
        return self

    def _resolved(self) -> dict[str, Any]:
        return {"url": self.url or f"https://{self.subdomain}.zendesk.com"}


class FreshdeskSpec(_Signed):
    type: Literal["freshdesk"]
    url: BaseUrl | None = None
    domain: Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]+$")] | None = None
    api_key: Secret

    @model_validator(mode="after")
    def _check(self) -> Self:
        _one_way(self, ("url",), ("domain",))
        return self

    def _resolved(self) -> dict[str, Any]:
        domain = self.domain or ""
        host = domain if "." in domain else f"{domain}.freshdesk.com"  # `acme` is enough
        return {"url": self.url or f"https://{host}"}


class JiraSpec(_Signed):
    type: Literal["jira"]
    url: BaseUrl
    email: str | None = None
    token: Secret | None = None
    pat: Secret | None = None
    projects: Annotated[Names, Field(min_length=1)]
    jql: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        _one_way(self, ("email", "token"), ("pat",))
        return self


class ZammadSpec(_Signed):
    type: Literal["zammad"]
    url: BaseUrl
    token: Secret


class HelpscoutSpec(_Signed):
    type: Literal["helpscout"]
    url: BaseUrl = "https://api.helpscout.net"
    app_id: str
    app_secret: Secret
    mailboxes: Names | None = None


class RtSpec(ConnectorBase):
    type: Literal["rt"]
    url: BaseUrl
    token: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    queues: Names | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        _one_way(self, ("token",), ("username", "password"))
        return self


class Bitrix24Spec(_Signed):
    type: Literal["bitrix24"]
    url: Annotated[SecretStr, AfterValidator(_secret_url)]  # its path holds a secret code
    client_id: str | None = None
    client_secret: Secret | None = None
    refresh_token: Secret | None = None
    oauth_url: BaseUrl | None = (
        None  # the OAuth server; default https://oauth.bitrix.info/oauth/token/
    )
    lines: Names | None = None
    calls: bool = True
    emails: bool = True

    @model_validator(mode="after")
    def _check(self) -> Self:
        oauth = ("client_id", "client_secret", "refresh_token")
        if any(getattr(self, key) is not None for key in oauth):
            _one_way(self, oauth)
        elif not re.fullmatch(r"/rest/\d+/[^/]+/?", urlsplit(self.url.get_secret_value()).path):
            raise ValueError(
                "url must be the inbound webhook URL https://PORTAL/rest/USER_ID/CODE/, or the"
                " portal URL with client_id + client_secret + refresh_token"
            )
        return self

    def public(self) -> dict[str, Any]:
        parts = urlsplit(self.url.get_secret_value())
        path = "" if parts.path in ("", "/") else f"/{REDACTED}"
        return {**super().public(), "url": f"{parts.scheme}://{parts.hostname}{path}"}


class ImapSpec(ConnectorBase):
    type: Literal["imap"]
    host: str
    port: Port | None = None  # default 993 with tls, else 143
    tls: bool = True
    username: str
    password: Secret
    folders: Annotated[Names, Field(min_length=1)] = ["INBOX"]
    sent_folder: str | None = None
    agents: Agents = []
    solved_keyword: str | None = None
    solved_folder: str | None = None
    pending_on_reply: bool = False  # an agent's reply sets pending (waiting on the customer)
    idle: bool = True  # IMAP IDLE: sync as soon as the server reports new mail

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.agents and self.sent_folder is None:
            raise ValueError("give agents (addresses or @domains) or a sent_folder, or both")
        return self

    def _resolved(self) -> dict[str, Any]:
        return {"port": self.port or (993 if self.tls else 143)}


class GmailSpec(ConnectorBase):
    type: Literal["gmail"]
    url: BaseUrl = "https://gmail.googleapis.com"
    client_id: str
    client_secret: Secret
    refresh_token: Secret
    user: str = "me"
    agents: Agents = []
    solved_label: str | None = None
    pending_on_reply: bool = False


class GraphSpec(ConnectorBase):
    type: Literal["graph"]
    url: BaseUrl = "https://graph.microsoft.com"
    tenant_id: str
    client_id: str
    client_secret: Secret
    mailbox: str
    agents: Agents = []
    solved_folder: str | None = None
    pending_on_reply: bool = False


class DemoSpec(ConnectorBase):
    type: Literal["demo"]
    seed: int = 1
    tickets_per_hour: Annotated[float, Field(gt=0)] = 30.0
    backfill: Duration = 3 * 86400


ConnectorSpec = Annotated[
    ZendeskSpec
    | FreshdeskSpec
    | JiraSpec
    | ZammadSpec
    | HelpscoutSpec
    | RtSpec
    | Bitrix24Spec
    | ImapSpec
    | GmailSpec
    | GraphSpec
    | DemoSpec,
    Field(discriminator="type"),
]
CONNECTOR_SPECS: dict[str, type[ConnectorBase]] = {
    get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in get_args(get_args(ConnectorSpec)[0])
}


# --- the rest of the config ----------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9181`` for IPv6) as (host, port)."""
    host, _, port = str(text).strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (like 127.0.0.1:9181 or 0.0.0.0:9181)")
    return host, int(port)


class BasicAuthSpec(_Model):
    username: str
    password: Secret


class ServerSpec(_Model):
    listen: str = DEFAULT_LISTEN
    api_token: Secret | None = None  # Bearer token for /api and the board
    metrics_basic_auth: BasicAuthSpec | None = None

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]


class AlertmanagerSpec(_Model):
    url: BaseUrl
    ticket_url: str | None = None  # a link template: {id} and {connector} are filled in

    @field_validator("ticket_url")
    @classmethod
    def _valid_template(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"not a link template: {exc}") from None
        if not fields <= {"id", "connector"}:
            raise ValueError(f"{value!r}: only {{id}} and {{connector}} are filled in")
        return _http_url(value)


def _database_url(value: str) -> str:
    # Not echoed: the URL may hold a password.
    if not re.match(r"^[a-z][a-z0-9]*(\+[a-z0-9_]+)?://", value):
        raise ValueError(
            "not a database URL (like sqlite:///slamon-data/slamon.db"
            " or postgresql+psycopg://user@host/db)"
        )
    return value


def redact_password(url: str) -> str:
    """A URL with the password of its user part (``user:pw@host``) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return REDACTED
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:{REDACTED}@{host}").geturl()


class Config(_Model):
    """A whole slamon config, as CONTRACT.md's "Configuration (YAML)" spells it."""

    database: Annotated[str, AfterValidator(_database_url)] = DEFAULT_DATABASE
    server: ServerSpec = Field(default_factory=ServerSpec)
    calendars: list[CalendarSpec] = Field(default_factory=list)
    policies: list[PolicySpec] = Field(default_factory=list)
    # Per connector: source status -> normalized status; merged under each connector's own
    # `statuses` at load (the connector's own entries win).
    statuses: Annotated[dict[str, StatusMap], BeforeValidator(_str_keys)] = Field(
        default_factory=dict
    )
    connectors: list[ConnectorSpec] = Field(default_factory=list)
    alertmanager: AlertmanagerSpec | None = None
    _rules: RuleSet | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # `statuses:` with every entry commented out reads as null: the same as absent.
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data

    @property
    def rules(self) -> RuleSet:
        """Calendars and ordered policies, built once (at load)."""
        if self._rules is None:
            self._rules = build_rules(RulesSpec(calendars=self.calendars, policies=self.policies))
        return self._rules

    def secrets(self) -> list[str]:
        """Every secret value in the config, to scrub from text before it is shown."""
        found = [_password(self.database), *_secret_values(self)]
        for spec in self.connectors:
            if isinstance(spec, Bitrix24Spec):  # the code in the webhook URL's path
                found += urlsplit(spec.url.get_secret_value()).path.strip("/").split("/")[2:3]
        return [secret for secret in found if secret]

    def connector(self, name: str) -> ConnectorBase | None:
        return next((spec for spec in self.connectors if spec.name == name), None)

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            yield key, redact_password(value) if key == "database" else value


def _secret_values(value: Any) -> Iterator[str]:
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, BaseModel):
        for key in type(value).model_fields:
            yield from _secret_values(getattr(value, key))
    elif isinstance(value, list):
        for item in value:
            yield from _secret_values(item)


# --- loading -------------------------------------------------------------------------------


def load_config(path: str | Path, *, now: dt.datetime | None = None) -> Config:
    """The validated config in a YAML file; ``now`` (default: the clock) anchors defaults
    like a connector's ``start``. Raises :class:`ConfigErrors` listing every problem."""
    return _load_text(read(path), str(path), Path(path).parent, now=now)


def demo_config(data_dir: Path, *, now: dt.datetime | None = None) -> Config:
    """The config of ``slamon run --demo``: the demo connector, example calendars and
    policies, SQLite in ``data_dir`` (which the caller creates)."""
    database = f"sqlite:///{Path(data_dir) / 'slamon.db'}"
    return _load_text(DEMO_YAML, "<demo>", Path.cwd(), now=now, overrides={"database": database})


def load_rules_file(path: str | Path) -> RuleSet:
    """Calendars and policies alone (``slamon backtest --policies FILE``): a YAML file with
    only the ``calendars:`` and ``policies:`` keys of a config, checked the same way."""
    document = _document(read(path), str(path), Path(path).parent)
    spec = document.validate(RulesSpec)
    rules = None
    if spec is not None:
        try:
            rules = build_rules(spec)
        except ConfigError as exc:
            document.errors.append(exc)
    if document.errors or rules is None:
        raise document.failure()
    return rules


# `slamon run --demo`: every state shows within minutes (urgent and high on 24x7 clocks,
# the rest on office hours). Loaded like any file, so it cannot drift from the schema.
DEMO_YAML = """\
calendars:
  - name: berlin-office
    timezone: Europe/Berlin
    hours:
      mon-fri: ["09:00-12:30", "13:30-18:00"]
      sat: "10:00-14:00"
    holidays: {country: DE, subdivision: BE}

policies:
  - name: urgent
    match: {priority: [urgent]}
    calendar: 24x7
    targets: {first_response: 10m, next_response: 30m, resolution: 4h}
    warning: 80%
  - name: high
    match: {priority: [high]}
    calendar: 24x7
    targets: {first_response: 1h, next_response: 2h, periodic_update: 4h, resolution: 1d}
    warning: 15m
  - name: standard
    calendar: berlin-office
    targets: {first_response: 4h, next_response: 8h, periodic_update: 1d, resolution: 3d}

connectors:
  - name: demo
    type: demo
    interval: 5s
"""


def _load_text(
    text: str,
    source: str,
    base: Path,
    *,
    now: dt.datetime | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    document = _document(text, source, base)
    config = document.validate(Config, overrides, now=now)
    if config is not None:
        config = _merge_statuses(config)
        problems = _references(config)
        if not problems:
            try:
                config.rules  # noqa: B018  (build now: cross-reference errors surface at load)
            except ConfigError as exc:
                problems.append(exc)
        document.errors += problems
    if document.errors or config is None:
        raise document.failure()
    return config


def _document(text: str, source: str, base: Path) -> Document:
    """A config file's text, read with what the schema says is secret and how it words
    its errors."""
    return Document(
        text,
        source,
        base,
        secret_keys=SECRET_KEYS,
        secrets_in=_secrets_in,
        explain=_in_config_terms,
    )


def _secrets_in(mapping: dict[Any, Any], loc: Loc) -> Iterator[str]:
    """Secrets of a mapping in the file that no SECRET_KEYS key holds."""
    if mapping.get("type") == "bitrix24" and isinstance(mapping.get("url"), str):
        yield mapping["url"]  # the webhook URL's path holds a secret code
    if not loc and isinstance(mapping.get("database"), str):
        yield _password(mapping["database"])


def _in_config_terms(err: ErrorDetails, message: str) -> tuple[str, str]:
    """A validation error's key and message as the config spells them."""
    loc = list(err["loc"])
    if loc[:1] == ["connectors"] and len(loc) >= 3:
        del loc[2]  # the union's tag (the connector's type), which the config does not spell
    key = key_path(loc)
    if err["type"] == "union_tag_invalid":
        key += ".type"
        given = err["input"].get("type") if isinstance(err["input"], dict) else None
        message = f"unknown connector type {given!r} (known: {', '.join(CONNECTOR_SPECS)})"
    elif err["type"] == "union_tag_not_found":
        key += ".type"
        message = f"required key is missing (one of: {', '.join(CONNECTOR_SPECS)})"
    return key, message


def _password(url: str) -> str:
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


def _merge_statuses(config: Config) -> Config:
    if not config.statuses:
        return config
    connectors = [
        spec.model_copy(
            update={"statuses": {**config.statuses.get(spec.name, {}), **spec.statuses}}
        )
        for spec in config.connectors
    ]
    return config.model_copy(update={"connectors": connectors})


def _references(config: Config) -> list[ConfigError]:
    errors, names = [], []
    for i, spec in enumerate(config.connectors):
        if spec.name in names:
            message = f"connector {spec.name!r} is defined twice"
            errors.append(ConfigError(message, key=f"connectors[{i}].name"))
        names.append(spec.name)
    known = f"(known: {', '.join(names)})" if names else "(no connectors are configured)"
    for name in config.statuses:
        if name not in names:
            errors.append(
                ConfigError(f"no connector named {name!r} {known}", key=f"statuses.{name}")
            )
    for i, policy in enumerate(config.policies):
        for name in policy.match.connector or ():
            if name not in names:
                key = f"policies[{i}].match.connector"
                errors.append(ConfigError(f"no connector named {name!r} {known}", key=key))
    return errors
