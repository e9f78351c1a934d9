"""A fake Bitrix24 portal, serving what HELPDESK-APIS.md ("Bitrix24 REST API") describes,
to the field name.

Served: inbound-webhook URLs ``/rest/{user_id}/{code}/{method}[.json][/]`` and OAuth calls
``/rest/{method}?auth=…`` (or ``"auth"`` in the body) with ``/oauth/token/`` refreshing a
token (the refresh token rotates; an expired access token gets 401 ``expired_token``);
method names in any case; parameters as JSON, form or query with PHP brackets. Answers are
``result``/``next``/``total``/``time`` envelopes with 50-row pages (``start=-1`` on
``crm.activity.list`` and ``user.get``: top 50, ``total`` 0, no ``next``), ``batch`` with its
nested ``result``/``result_error``/``result_total``/``result_next``/``result_time`` maps
(``[]`` when empty), a leaky bucket (2 requests/s, burst 50, on a clock ``speed`` times
real time) answering 503 ``QUERY_LIMIT_EXCEEDED``, and 429 ``OPERATION_TIME_LIMIT`` for the
methods in :attr:`blocked`.

Data: users (operators, bots, connector clients), Open Lines (some with CRM off: their
sessions get no activity), sessions with ID-keyed histories (client, operator, bot and
system messages; vote messages with ``IMOL_VOTE`` params, camel-cased like the docs'
``connectorMid``), one ``IMOPENLINES_SESSION`` activity per session on a CRM line,
``CRM_EMAIL`` activities and ``voximplant.statistic.get`` rows. CRM scalars are strings;
times are in the portal's zone (Europe/Berlin: +01:00 in winter, +02:00 in summer).
``LAST_UPDATED`` is the fake's own clock at the change, and moves only when Bitrix24 moves
it (created, first answer, transfer, close), not on every chat message.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from flask import Flask, jsonify, request

from tests.fakes.scenario import Step, Story

PORTAL_ZONE = ZoneInfo("Europe/Berlin")
PAGE = 50
BATCH_MAX = 50
BUCKET_SIZE, BUCKET_RATE = 50, 2.0  # X and Y of the "other tariffs"
CONNECTOR_IDS = {"chat": "livechat", "social": "telegrambot"}
CLOSE_TYPES = ("solved", "closed")


class ApiError(Exception):
    def __init__(self, status: int, code: str, description: str = "") -> None:
        super().__init__(code)
        self.status, self.code, self.description = status, code, description


def portal_time(when: dt.datetime) -> str:
    """A time as the portal renders it: ISO 8601 with the portal's offset of that day."""
    return when.astimezone(PORTAL_ZONE).isoformat(timespec="seconds")


def php_params(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``filter[>ID]=5&select[]=ID`` as PHP's parse_str reads it."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"\[([^\]]*)\]", key)
        head = key.split("[", 1)[0]
        node: Any = out
        path = [head, *parts]
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, list):
                if last:
                    node.append(value)
                else:
                    node.append({} if path[i + 1] else [])
                    node = node[-1]
                continue
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, [] if path[i + 1] == "" else {})
    return out


def _camel(key: str) -> str:
    head, *rest = key.lower().split("_")
    return head + "".join(word.title() for word in rest)


class FakeBitrix24:
    def __init__(
        self,
        user_id: int = 1,
        code: str = "wh-code-5f4e3d2c1b",
        client_id: str = "local.app.1",
        client_secret: str = "app-secret-9z8y",
        refresh_token: str = "refresh-0",
        speed: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.user_id, self.code = user_id, code
        self.client_id, self.client_secret = client_id, client_secret
        self.refresh_token, self.access_token = refresh_token, ""
        self.expired: set[str] = set()
        self.refreshes = 0
        self.speed, self.clock = speed, clock
        self.bucket_on = True
        self.level, self.drained_at = 0.0, time.monotonic()
        self.requests = 0
        self.limited = 0  # 503 QUERY_LIMIT_EXCEEDED answers
        self.per_method: Counter[str] = Counter()
        self.blocked: set[str] = set()  # methods over their operation time limit
        self.batch_faults: Counter[str] = Counter()  # next N in-batch calls fail
        self.camel = True  # history params camel-cased (connectorMid, imolVote)
        self.users: dict[int, dict[str, Any]] = {}
        self.lines: dict[int, dict[str, Any]] = {}
        self.activities: dict[int, dict[str, Any]] = {}
        self.sessions: dict[int, dict[str, Any]] = {}
        self.messages: dict[int, dict[str, Any]] = {}
        self.calls: list[dict[str, Any]] = []
        self._uids = itertools.count(100)
        self._ids = itertools.count(7001)  # activities
        self._sids = itertools.count(321)  # sessions
        self._chats = itertools.count(1763)
        self._mids = itertools.count(85_833)
        self._calls = itertools.count(1)
        self._tokens = itertools.count(1)
        self.lock = threading.RLock()
        self.log: list[tuple[str, dict[str, Any]]] = []  # (method, parameters)
        self.app = self._build()

    # -- the data ------------------------------------------------------------------------

    def user(self, name: str, *, bot: bool = False, connector: bool = False) -> int:
        uid = next(self._uids)
        first, _, last = name.partition(" ")
        auth = "imconnector" if connector else ("bot" if bot else "socservices")
        self.users[uid] = {"id": str(uid), "name": name, "firstName": first, "lastName": last,
                           "extranet": connector, "bot": bot, "connector": connector,
                           "externalAuthId": auth, "departments": [] if connector else [1],
                           "type": "bot" if bot else "user"}  # fmt: skip
        return uid

    def line(
        self,
        name: str,
        *,
        crm: bool = True,
        first_answer: int = 0,
        further_answer: int = 0,
        worktime: bool = True,
        hours: tuple[str, str] = ("9", "18.30"),
        days_off: tuple[str, ...] = ("SA", "SU"),
        holidays: tuple[str, ...] = ("01.01", "25.12"),
        zone: str = "Europe/Berlin",
    ) -> int:
        """An Open Line as ``imopenlines.config.list.get`` shows it: KPIs in seconds as
        strings (``"0"``: none), working time with ``WORKTIME_FROM``/``TO`` as the portal
        answers them (``"9"``, ``"18.30"``, ``"0"``, ``"23.59"``) or ``HH:MM``, days off
        ``MO``…``SU`` and holidays ``DD.MM`` (an empty list is ``[""]``)."""
        lid = len(self.lines) + 22
        self.lines[lid] = {
            "ID": str(lid), "ACTIVE": "Y", "LINE_NAME": name, "CRM": "Y" if crm else "N",
            "CRM_CREATE": "lead", "QUEUE_TYPE": "evenly", "VOTE_MESSAGE": "Y",
            "WORKTIME_ENABLE": "Y" if worktime else "N", "WORKTIME_FROM": hours[0],
            "WORKTIME_TO": hours[1], "WORKTIME_TIMEZONE": zone,
            "WORKTIME_HOLIDAYS": list(holidays) or [""], "WORKTIME_DAYOFF": list(days_off) or [""],
            "AUTO_CLOSE_TIME": "3600", "DATE_CREATE": {}, "TEMPORARY": "N",
            "KPI_FIRST_ANSWER_TIME": str(first_answer), "KPI_FIRST_ANSWER_ALERT": "N",
            "KPI_FURTHER_ANSWER_TIME": str(further_answer), "QUEUE": [],
        }  # fmt: skip
        return lid

    def session(
        self,
        line: int,
        client: int,
        when: dt.datetime,
        *,
        connector: str = "livechat",
        subject: str = "",
        outgoing: bool = False,
        operator: int | None = None,
    ) -> int:
        """A new session (and, on a CRM line, its activity). Its messages come from
        :meth:`say`."""
        sid, chat = next(self._sids), next(self._chats)
        user_code = f"{connector}|{line}|{chat - 2}|{client}"
        with self.lock:
            self.sessions[sid] = {"id": sid, "chat": chat, "line": line, "client": client,
                                  "user_code": user_code, "messages": [], "vote_head": 0,
                                  "activity": None, "operator": operator}  # fmt: skip
            if self.lines[line]["CRM"] != "Y":
                return sid
            aid = next(self._ids)
            name = self.users[client]["name"]
            self.activities[aid] = {
                "ID": str(aid), "OWNER_ID": str(1200 + sid), "OWNER_TYPE_ID": "1",
                "TYPE_ID": "6", "PROVIDER_ID": "IMOPENLINES_SESSION",
                "PROVIDER_TYPE_ID": str(line), "PROVIDER_GROUP_ID": None,
                "ASSOCIATED_ENTITY_ID": str(sid), "SUBJECT": subject or f"{name} - Open Line",
                "START_TIME": portal_time(when), "END_TIME": portal_time(when),
                "DEADLINE": portal_time(when), "COMPLETED": "N", "STATUS": "1",
                "RESPONSIBLE_ID": str(operator or self.user_id), "PRIORITY": "2",
                "DESCRIPTION": "", "DESCRIPTION_TYPE": "1", "DIRECTION": "2" if outgoing else "1",
                "CREATED": portal_time(when), "AUTHOR_ID": str(operator or self.user_id),
                "LAST_UPDATED": self._now(), "EDITOR_ID": str(self.user_id), "SETTINGS": [],
                "ORIGIN_ID": f"IMOL_{sid}", "ORIGINATOR_ID": "0", "RESULT_STATUS": "1",
                "RESULT_STREAM": "0", "RESULT_SOURCE_ID": connector,
                "PROVIDER_PARAMS": {"USER_CODE": user_code}, "PROVIDER_DATA": None,
                "IS_INCOMING_CHANNEL": "N" if outgoing else "Y",
                "BINDINGS": [{"OWNER_TYPE_ID": "1", "OWNER_ID": str(1200 + sid)}],
                "COMMUNICATIONS": [{"ID": str(aid), "TYPE": "IM", "VALUE": f"imol|{user_code}",
                                    "ENTITY_ID": str(1200 + sid), "ENTITY_TYPE_ID": "1",
                                    "ENTITY_SETTINGS": {"NAME": name}}],
            }  # fmt: skip
            self.sessions[sid]["activity"] = aid
        return sid

    def say(
        self, sid: int, sender: int, when: dt.datetime, params: dict[str, Any] | None = None
    ) -> int:
        """A message in a session: ``sender`` 0 is the system. An operator's first answer
        marks the activity answered (that moves LAST_UPDATED); nothing else does."""
        mid = next(self._mids)
        session = self.sessions[sid]
        text = "[b]A new lead has been created[/b]" if sender == 0 else "Hello"
        with self.lock:
            self.messages[mid] = {"id": str(mid), "chatid": str(session["chat"]),
                                  "senderid": str(sender), "recipientid": f"chat{session['chat']}",
                                  "date": portal_time(when), "text": text, "textlegacy": text,
                                  "params": params or {"attach": []}}  # fmt: skip
            session["messages"].append(mid)
            user = self.users.get(sender, {})
            activity = self.activities.get(session["activity"] or 0)
            operator = sender and not user.get("bot") and not user.get("connector")
            if activity is not None and operator and activity["RESULT_STATUS"] == "1":
                activity.update(RESULT_STATUS="2", LAST_UPDATED=self._now())
        return mid

    def close(self, sid: int, when: dt.datetime) -> None:
        activity = self.activities.get(self.sessions[sid]["activity"] or 0)
        if activity is not None:
            with self.lock:
                activity.update(COMPLETED="Y", STATUS="2", END_TIME=portal_time(when),
                                LAST_UPDATED=self._now())  # fmt: skip

    def ask_vote(self, sid: int, when: dt.datetime) -> int:
        """The line's rating request: a system message whose IMOL_VOTE is the session id
        until the client answers (:meth:`vote`)."""
        params = {"IMOL_VOTE": str(sid), "IMOL_VOTE_SID": str(sid),
                  "IMOL_VOTE_TEXT": "Please rate the quality of service",
                  "IMOL_VOTE_LIKE": "Like", "IMOL_VOTE_DISLIKE": "Dislike"}  # fmt: skip
        return self.say(sid, 0, when, params)

    def vote(self, mid: int, value: str) -> None:
        self.messages[mid]["params"]["IMOL_VOTE"] = value  # like / dislike

    def head_vote(self, sid: int, rating: int) -> None:
        self.sessions[sid]["vote_head"] = rating

    def delete(self, aid: int) -> None:
        with self.lock:
            del self.activities[aid]

    def email(
        self,
        owner: tuple[int, int],
        subject: str,
        when: dt.datetime,
        *,
        incoming: bool = True,
        completed: bool = False,
        address: str = "client@example.test",
    ) -> int:
        """A CRM e-mail activity. An outgoing reply completes the open incoming mails of
        its thread (what PARENT_ID does inside Bitrix24)."""
        aid = next(self._ids)
        base = re.sub(r"^((re|fwd?|на)\s*:\s*)+", "", subject, flags=re.I).strip().lower()
        with self.lock:
            if not incoming:
                for other in self.activities.values():
                    if (other["PROVIDER_ID"] == "CRM_EMAIL" and other["DIRECTION"] == "1"
                            and (int(other["OWNER_TYPE_ID"]), int(other["OWNER_ID"])) == owner
                            and other["COMPLETED"] == "N"
                            and other["_thread"] == base):  # fmt: skip
                        other.update(COMPLETED="Y", STATUS="2", LAST_UPDATED=self._now())
            self.activities[aid] = {
                "ID": str(aid), "OWNER_ID": str(owner[1]), "OWNER_TYPE_ID": str(owner[0]),
                "TYPE_ID": "4", "PROVIDER_ID": "CRM_EMAIL", "PROVIDER_TYPE_ID": "EMAIL",
                "ASSOCIATED_ENTITY_ID": "0", "SUBJECT": subject,
                "START_TIME": portal_time(when), "END_TIME": portal_time(when),
                "CREATED": portal_time(when), "LAST_UPDATED": self._now(),
                "COMPLETED": "Y" if completed or not incoming else "N",
                "STATUS": "2" if completed or not incoming else "1",
                "RESPONSIBLE_ID": str(self.user_id), "DESCRIPTION": "", "DESCRIPTION_TYPE": "3",
                "DIRECTION": "1" if incoming else "2", "SETTINGS": [], "ORIGIN_ID": None,
                "AUTHOR_ID": str(self.user_id), "PROVIDER_PARAMS": [], "RESULT_STATUS": "0",
                "RESULT_SOURCE_ID": None, "IS_INCOMING_CHANNEL": "Y" if incoming else "N",
                "COMMUNICATIONS": [{"ID": str(aid), "TYPE": "EMAIL", "VALUE": address,
                                    "ENTITY_ID": str(owner[1]),
                                    "ENTITY_TYPE_ID": str(owner[0])}],
                "_thread": base,
            }  # fmt: skip
        return aid

    def call(
        self,
        number: str,
        when: dt.datetime,
        *,
        kind: int = 2,
        code: str = "304",
        duration: int = 0,
        operator: int = 1,
    ) -> int:
        """A ``voximplant.statistic.get`` row: ``kind`` is CALL_TYPE (1 outgoing, 2
        incoming, 3 redirected, 4 callback), ``code`` CALL_FAILED_CODE."""
        cid = next(self._calls)
        with self.lock:
            self.calls.append({
                "ID": str(cid), "PORTAL_USER_ID": str(operator), "PORTAL_NUMBER": "3",
                "PHONE_NUMBER": number, "CALL_ID": f"externalCall.{cid:032x}.{cid}",
                "CALL_CATEGORY": "external", "CALL_DURATION": str(duration),
                "CALL_START_DATE": portal_time(when), "CALL_VOTE": "0", "COST": "0.0000",
                "COST_CURRENCY": "EUR", "CALL_FAILED_CODE": code,
                "CALL_FAILED_REASON": "" if code == "200" else "Missed call",
                "CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": "797", "CRM_ACTIVITY_ID": "0",
                "TRANSCRIPT_PENDING": "N", "SESSION_ID": None, "RECORD_FILE_ID": None,
                "CALL_TYPE": str(kind),
            })  # fmt: skip
        return cid

    def load(self, stories: Iterable[Story]) -> dict[str, int]:
        """The scenario's stories, as Bitrix24 can tell them (:func:`as_told`), as Open
        Lines sessions: one line per queue, an operator, a welcome bot, one client per
        story. Returns each story's activity id (its ticket)."""
        operator = self.user("Olga Operator")
        bot = self.user("Welcome Bot", bot=True)
        lines: dict[str, int] = {}
        out = {}
        for story in map(as_told, stories):
            client = self.user(f"{story.key.title()} Client", connector=True)
            line = lines.setdefault(story.queue, self.line(story.queue))
            sid = self.session(line, client, story.created, subject=story.subject,
                               connector=CONNECTOR_IDS.get(story.channel, "livechat"),
                               outgoing=story.by == "agent", operator=operator)  # fmt: skip
            who = {"customer": client, "agent": operator, "system": bot}
            for step in story.steps:
                if step.kind == "message":
                    self.say(sid, who[step.who], step.when)
                elif step.kind == "status":
                    self.close(sid, step.when)
                elif step.kind == "rating":
                    self.vote(
                        self.ask_vote(sid, step.when), "like" if step.score == 5 else "dislike"
                    )
            out[story.key] = self.sessions[sid]["activity"]
        return out

    def _now(self) -> str:
        return portal_time(dt.datetime.fromtimestamp(self.clock(), dt.UTC))

    # -- the API -------------------------------------------------------------------------

    def _build(self) -> Flask:
        app = Flask("fake-bitrix24")
        app.add_url_rule("/rest/<int:uid>/<code>/<path:method>", view_func=self._webhook,
                         methods=["GET", "POST"])  # fmt: skip
        app.add_url_rule("/rest/<path:method>", view_func=self._oauth_call,
                         methods=["GET", "POST"])  # fmt: skip
        app.add_url_rule("/oauth/token/", view_func=self._token)
        return app

    def _params(self) -> dict[str, Any]:
        params = php_params(request.args.items(multi=True))
        if request.is_json:
            params.update(request.get_json(silent=True) or {})
        else:
            params.update(php_params(request.form.items(multi=True)))
        return params

    def _webhook(self, uid: int, code: str, method: str) -> Any:
        if uid != self.user_id or code != self.code:
            return _error(ApiError(401, "NO_AUTH_FOUND", "Wrong authorization data"))
        return self._serve(method, self._params())

    def _oauth_call(self, method: str) -> Any:
        params = self._params()
        token = params.pop("auth", None)
        if token in self.expired:
            return _error(ApiError(401, "expired_token", "The access token provided has expired"))
        if not token or token != self.access_token:
            return _error(ApiError(401, "NO_AUTH_FOUND", "Wrong authorization data"))
        return self._serve(method, params)

    def _token(self) -> Any:
        args = request.args
        if (
            args.get("client_id") != self.client_id
            or args.get("client_secret") != self.client_secret
        ):
            return jsonify(error="invalid_client", error_description="Invalid client"), 401
        if (
            args.get("grant_type") != "refresh_token"
            or args.get("refresh_token") != self.refresh_token
        ):
            return jsonify(error="invalid_grant", error_description="Invalid grant"), 400
        n = next(self._tokens)
        self.refreshes += 1
        self.access_token, self.refresh_token = f"access-{n}-x7", f"refresh-{n}-y8"
        base = request.host_url
        return jsonify(access_token=self.access_token, client_endpoint=f"{base}rest/",
                       domain="oauth.bitrix.info", expires_in=3600, expires=int(time.time()) + 3600,
                       member_id="a223c6b3710f85df22e9377d6c4f7553", user_id=self.user_id,
                       refresh_token=self.refresh_token, scope="crm,imopenlines,telephony,user",
                       server_endpoint="https://oauth.bitrix.info/rest/", status="L")  # fmt: skip

    def expire(self) -> None:
        """The access token runs out (its hour is over)."""
        self.expired.add(self.access_token)

    def _serve(self, raw: str, params: dict[str, Any]) -> Any:
        method = raw.lower().rstrip("/").removesuffix(".json")
        began = self.clock()
        with self.lock:
            self.requests += 1
            self.per_method[method] += 1
            self.log.append((method, params))
            if not self._take():
                self.limited += 1
                return _error(ApiError(503, "QUERY_LIMIT_EXCEEDED", "Too many requests"))
            try:
                if method in self.blocked:
                    raise ApiError(429, "OPERATION_TIME_LIMIT",
                                   "Method is blocked due to operation time limit.")  # fmt: skip
                if method == "batch":
                    body: dict[str, Any] = {"result": self._batch(params)}
                else:
                    result, extra = self._call(method, params)
                    body = {"result": result, **extra}
            except ApiError as exc:
                return _error(exc)
        body["time"] = _timing(began, self.clock())
        return jsonify(body)

    def _take(self) -> bool:
        """The leaky bucket: each request adds one; it drains BUCKET_RATE a second."""
        if not self.bucket_on:
            return True
        now = time.monotonic()
        self.level = max(0.0, self.level - (now - self.drained_at) * BUCKET_RATE * self.speed)
        self.drained_at = now
        if self.level + 1 > BUCKET_SIZE:
            return False
        self.level += 1
        return True

    def _batch(self, params: dict[str, Any]) -> dict[str, Any]:
        commands = params.get("cmd") or {}
        if isinstance(commands, list):
            commands = dict(enumerate(commands))
        if len(commands) > BATCH_MAX:
            raise ApiError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
        halt = str(params.get("halt", "0")) in ("1", "true")
        results, errors, totals, nexts, times = {}, {}, {}, {}, {}
        for key, text in commands.items():
            began = self.clock()
            name, _, query = str(text).partition("?")
            name = name.lower().removesuffix(".json")
            self.per_method[name] += 1
            self.log.append((name, php_params(parse_qsl(query))))
            try:
                if name == "batch":
                    raise ApiError(
                        405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Batch call is not allowed"
                    )
                if name in self.blocked:
                    raise ApiError(
                        429,
                        "OPERATION_TIME_LIMIT",
                        "Method is blocked due to operation time limit.",
                    )
                if self.batch_faults[name] > 0:
                    self.batch_faults[name] -= 1
                    raise ApiError(500, "INTERNAL_SERVER_ERROR", "Internal server error")
                result, extra = self._call(name, php_params(parse_qsl(query)))
            except ApiError as exc:
                errors[key] = {"error": exc.code, "error_description": exc.description}
                if halt:
                    break
                continue
            results[key] = result
            if "total" in extra:
                totals[key] = extra["total"]
            if "next" in extra:
                nexts[key] = extra["next"]
            times[key] = _timing(began, self.clock())
        return {name: value or [] for name, value in (
            ("result", results), ("result_error", errors), ("result_total", totals),
            ("result_next", nexts), ("result_time", times))}  # fmt: skip

    def _call(self, method: str, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        handler = {
            "crm.activity.list": self._activities,
            "imopenlines.session.history.get": self._history,
            "imopenlines.config.list.get": self._lines,
            "voximplant.statistic.get": self._statistics,
            "user.get": self._user_get,
        }.get(method)
        if handler is None:
            raise ApiError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        return handler(params)

    def _activities(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        rows = [a for a in self.activities.values() if _matches(a, params.get("filter") or {})]
        order = params.get("order") or {"START_TIME": "ASC"}
        for key, way in reversed(list(order.items())):
            rows.sort(
                key=lambda a, k=key: _sort_key(a.get(k), k), reverse=str(way).upper() == "DESC"
            )
        select = [str(s) for s in params.get("select") or []]
        shown = [_select(a, select) for a in rows]
        return _page(shown, params.get("start"), fast=True)

    def _history(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        sid, chat = params.get("SESSION_ID"), params.get("CHAT_ID")
        if not sid and not chat:
            raise ApiError(400, "MISSING_REQUIRED_PARAM", "Session ID or Chat ID must be provided")
        if sid:
            session = self.sessions.get(int(sid)) if str(sid).isdigit() else None
        else:
            found = [s for s in self.sessions.values() if str(s["chat"]) == str(chat)]
            session = found[-1] if found else None
        if session is None:
            raise ApiError(400, "INVALID_SESSION_ID", "Invalid session id")
        chat_id = session["chat"]
        messages = {str(m): self._message(self.messages[m]) for m in session["messages"]}
        senders = {int(m["senderid"]) for m in messages.values()} | {session["client"]}
        users = {str(u): self.users[u] for u in sorted(senders) if u in self.users}
        user_code = session["user_code"]
        return {
            "chatId": chat_id, "canJoin": "Y", "canVoteHead": "Y", "sessionId": session["id"],
            "sessionVoteHead": session["vote_head"], "sessionCommentHead": None,
            "userId": f"chat{chat_id}", "message": messages or [],
            "usersMessage": {f"chat{chat_id}": list(reversed(messages))}, "users": users or [],
            "openlines": [], "userInGroup": [], "woUserInGroup": [],
            "chat": {str(chat_id): {"id": str(chat_id), "name": "Open Line chat",
                                    "entityType": "LINES", "entityId": user_code,
                                    "entityData1": f"Y|LEAD|1205|N|N|{session['id']}|0|0|0|0",
                                    "messageCount": len(messages), "type": "lines"}},
            "userBlockChat": [], "userInChat": {str(chat_id): sorted(senders)}, "files": [],
        }, {}  # fmt: skip

    def _message(self, message: dict[str, Any]) -> dict[str, Any]:
        params = message["params"]
        if self.camel:
            params = {_camel(k): v for k, v in params.items()}
        return {**message, "params": params}

    def _lines(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        options = params.get("PARAMS") or {}
        limit, offset = min(200, int(options.get("limit", 50))), int(options.get("offset", 0))
        return list(self.lines.values())[offset : offset + limit], {}

    def _statistics(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        rows = [c for c in self.calls if _matches(c, params.get("FILTER") or {})]
        key = str(params.get("SORT") or "ID")
        rows.sort(key=lambda c: _sort_key(c.get(key), key),
                  reverse=str(params.get("ORDER", "ASC")).upper() == "DESC")  # fmt: skip
        start = params.get("start")
        return _page(rows, 0 if str(start) == "-1" else start, fast=False)

    def _user_get(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        staff = [{"ID": u["id"], "ACTIVE": True, "NAME": u["firstName"], "LAST_NAME": u["lastName"],
                  "EMAIL": f"{u['firstName'].lower()}@portal.test", "USER_TYPE": "employee",
                  "UF_DEPARTMENT": [1]}
                 for u in self.users.values() if not u["bot"] and not u["connector"]]  # fmt: skip
        return _page(staff, params.get("start"), fast=True)


def as_told(story: Story) -> Story:
    """A story as an Open Lines session can hold it: a chat on the line named after the
    queue, no priority (Bitrix24 has none), no internal notes, no pending; the first solve
    closes the session (what follows would be a new session), ratings are votes."""
    steps: list[Step] = []
    for step in story.steps:
        if step.kind == "message" and step.public:
            steps.append(step)
        elif step.kind == "status" and step.value in CLOSE_TYPES:
            steps.append(step)
            break
    closed = steps[-1].when if steps and steps[-1].kind == "status" else None
    steps += [s for s in story.steps if s.kind == "rating" and s.score in (1, 5)]
    steps = [s for s in steps if closed is None or s.kind != "message" or s.when <= closed]
    return Story(story.key, story.subject, story.created, "normal", "chat", story.queue,
                 story.by, tuple(sorted(steps, key=lambda s: s.when)))  # fmt: skip


def _error(exc: ApiError) -> Any:
    return jsonify(error=exc.code, error_description=exc.description), exc.status


def _timing(began: float, finish: float) -> dict[str, Any]:
    when = dt.datetime.fromtimestamp(began, dt.UTC)
    return {"start": began, "finish": finish, "duration": finish - began,
            "processing": finish - began, "date_start": portal_time(when),
            "date_finish": portal_time(dt.datetime.fromtimestamp(finish, dt.UTC))}  # fmt: skip


def _page(rows: list[Any], start: Any, fast: bool) -> tuple[list[Any], dict[str, Any]]:
    offset = int(start or 0)
    if offset < 0 and fast:  # no count query, top 50
        return rows[:PAGE], {"total": 0}
    offset = max(0, offset)
    page = rows[offset : offset + PAGE]
    extra: dict[str, Any] = {"total": len(rows)}
    if offset + len(page) < len(rows):
        extra["next"] = offset + len(page)
    return page, extra


OPERATORS = ("!=", ">=", "<=", ">", "<", "@", "!", "=")


def _matches(row: dict[str, Any], conditions: dict[str, Any]) -> bool:
    for raw, wanted in conditions.items():
        op = next((o for o in OPERATORS if raw.startswith(o)), "")
        key = raw[len(op) :]
        have = _sort_key(row.get(key), key)
        if op == "@":
            values = wanted if isinstance(wanted, list) else [wanted]
            if have not in [_sort_key(v, key) for v in values]:
                return False
            continue
        want = _sort_key(wanted, key)
        ok = {"": have == want, "=": have == want, "!": have != want,
              "!=": have != want, ">": have > want, ">=": have >= want,
              "<": have < want, "<=": have <= want}[op]  # fmt: skip
        if not ok:
            return False
    return True


def _sort_key(value: Any, key: str) -> Any:
    numeric = ("ID", "OWNER_ID", "OWNER_TYPE_ID", "TYPE_ID", "CALL_TYPE")
    if key in numeric or (key.endswith("_ID") and str(value).isdigit()):
        try:
            return int(value)
        except (TypeError, ValueError):
            return -1
    if key.endswith(("_TIME", "_DATE", "LAST_UPDATED", "CREATED")) and value:
        return dt.datetime.fromisoformat(str(value)).timestamp()
    return str(value)


def _select(row: dict[str, Any], select: list[str]) -> dict[str, Any]:
    shown = {k: v for k, v in row.items() if not k.startswith("_")}
    if not select or "*" in select:
        keep = {k for k in shown if k not in ("COMMUNICATIONS", "FILES")} | set(select)
    else:
        keep = set(select) | {"ID"}
    return {k: v for k, v in shown.items() if k in keep}


def event_body(event: str, token: str, **data: str) -> bytes:
    """An outgoing-webhook event as Bitrix24 sends it: form-encoded, PHP-bracket keys."""
    from urllib.parse import urlencode

    pairs = [("event", event), ("event_handler_id", "975")]
    pairs += [(f"data[{k.replace('.', '][')}]", v) for k, v in data.items()]
    pairs += [("ts", "1766047124"), ("auth[domain]", "portal.bitrix24.test"),
              ("auth[client_endpoint]", "https://portal.bitrix24.test/rest/"),
              ("auth[server_endpoint]", "https://oauth.bitrix.info/rest/"),
              ("auth[member_id]", "a223c6b3710f85df22e9377d6c4f7553"),
              ("auth[application_token]", token)]  # fmt: skip
    return urlencode(pairs).encode()
