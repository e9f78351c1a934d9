"""Real services the tests start on loopback: a throwaway PostgreSQL cluster, a throwaway
Request Tracker 5, Alertmanager and Dovecot IMAP."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PGBIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _daemon(
    name: str,
    command: list[str],
    log: Path,
    ready: Callable[[], bool],
    deadline: float,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process with its output in ``log``, waited for until ``ready()`` (or its
    exit, or ``deadline`` seconds: errors quoting the log's tail), then stopped: SIGTERM,
    and SIGKILL if it has not gone within 15 s."""
    with open(log, "ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        until = time.monotonic() + deadline
        while not ready():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited: {_tail(log)}")
            if time.monotonic() > until:
                raise RuntimeError(f"{name} not ready within {deadline:.0f} s: {_tail(log)}")
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(url: str, **kwargs: Any) -> bool:
    """``url`` answers 200 (a readiness probe)."""
    import requests

    try:
        return requests.get(url, timeout=2, **kwargs).status_code == 200
    except requests.RequestException:
        return False


def _as_postgres(*args: str) -> list[str]:
    """initdb refuses root: run the server tools as the postgres user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return list(args)


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL 15 server on a free loopback port; yields a SQLAlchemy URL."""
    if not (PGBIN / "initdb").exists():
        raise RuntimeError("PostgreSQL 15 is not installed: run scripts/system-deps.sh")
    base = Path(tempfile.mkdtemp(prefix="slamon-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    data, port = base / "data", free_port()
    subprocess.run(
        _as_postgres(str(PGBIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                     "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"),
        check=True, capture_output=True,
    )  # fmt: skip
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    subprocess.run(
        _as_postgres(str(PGBIN / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w",
                     "-t", "60", "-o", options, "start"),
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres(str(PGBIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"),
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


RT_HOME = Path("/usr/share/request-tracker5")
FAKETIME = next(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"), Path("libfaketime.so.1"))
RT_PASSWORD = "rtpass123"  # root's, and the test users' (throwaway instance on loopback)
RT_SITE_CONFIG = """Set($rtname, 'sla-test');
Set($Organization, 'example.test');
Set($WebDomain, '127.0.0.1');
Set($WebPort, {port});
Set($WebPath, '');
Set($WebBaseURL, 'http://127.0.0.1:{port}');
Set($DatabaseType, 'SQLite');
Set($DatabaseName, '{db}');
Set($LogToSTDERR, 'warning');
Set($LogToSyslog, undef);
Set($LogToFile, undef);
Set($CorrespondAddress, 'rt@example.test');
Set($CommentAddress, 'rt-comment@example.test');
Set($MailCommand, 'testfile');
Set($Timezone, '{timezone}');
1;
"""
# Users, rights, a second queue and root's API token: RT's own Perl API, one process.
RT_SETUP = r"""
use strict; use warnings; use lib "/usr/share/request-tracker5/lib";
use RT; RT::LoadConfig(); RT::Init();
my $pw = shift @ARGV;
my $root = RT::CurrentUser->new(RT->SystemUser); $root->Load("root");
my $agent = RT::User->new(RT->SystemUser);
my ($aid, $amsg) = $agent->Create(Name => "agent", EmailAddress => 'agent@example.test',
    Privileged => 1, Password => $pw);
die "agent: $amsg\n" unless $aid;
$agent->PrincipalObj->GrantRight(Right => "SuperUser", Object => RT->System);
my $customer = RT::User->new(RT->SystemUser);
my ($cid, $cmsg) = $customer->Create(Name => 'customer@example.test',
    EmailAddress => 'customer@example.test', Privileged => 0, Password => $pw);
die "customer: $cmsg\n" unless $cid;
my $everyone = RT::Group->new(RT->SystemUser); $everyone->LoadSystemInternalGroup("Everyone");
for my $right (qw(CreateTicket ReplyToTicket SeeQueue ShowTicket)) {
    $everyone->PrincipalObj->GrantRight(Right => $right, Object => RT->System);
}
for my $name (qw(Support Billing)) {
    my ($qid, $qmsg) = RT::Queue->new(RT->SystemUser)->Create(Name => $name);
    die "queue $name: $qmsg\n" unless $qid;
}
for my $what ("slamon tests", "to revoke") {
    my ($tid, $tmsg, $token) = RT::AuthToken->new($root)->Create(Owner => $root->id,
        Description => $what);
    die "token: $tmsg\n" unless $tid;
    print "$token\n";
}
"""
RT_REVOKE = r"""
use strict; use warnings; use lib "/usr/share/request-tracker5/lib";
use RT; RT::LoadConfig(); RT::Init();
my ($user_id, $secret) = RT::AuthToken->ParseAuthString(shift @ARGV) or die "not a token\n";
my $tokens = RT::AuthTokens->new(RT->SystemUser);
$tokens->Limit(FIELD => "Owner", VALUE => $user_id);
my $gone = 0;
while (my $token = $tokens->Next) {
    next unless $token->IsToken($secret);
    my ($ok, $msg) = $token->Delete; die "$msg\n" unless $ok; $gone++;
}
die "no such token\n" unless $gone;
"""


@dataclass(frozen=True)
class RequestTracker:
    """A running throwaway RT: its base URL, two API tokens of root's (``spare`` is there
    to be revoked), the users the tests act as (``agent`` is privileged,
    ``customer@example.test`` is not; both use ``password``) and the queues General,
    Support and Billing."""

    url: str
    token: str
    spare: str
    password: str
    env: dict[str, str]
    faketime_file: Path | None = None

    def revoke(self, token: str) -> None:
        """Delete an API token (as an admin would in RT's web UI)."""
        subprocess.run(["perl", "-e", RT_REVOKE, token], env=self.env, check=True,
                       capture_output=True, timeout=60)  # fmt: skip

    def set_clock(self, when: dt.datetime | None) -> None:
        """Stop RT's clock at ``when`` (aware), or give it the real time again (None).
        Only for a server started with ``faketime_file``; it reads the file on every call."""
        if self.faketime_file is None:
            raise RuntimeError("this RT was started without faketime_file")
        if when is None:
            self.faketime_file.unlink(missing_ok=True)
        else:
            stamp = f"{when.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}\n"
            self.faketime_file.write_text(stamp)


@contextlib.contextmanager
def request_tracker(
    timezone: str = "UTC", deadline: float = 60.0, faketime_file: Path | None = None
) -> Iterator[RequestTracker]:
    """Request Tracker 5 (Debian's rt5-standalone) on a free loopback port with its own
    config and SQLite database in a temp dir (REAL-COMPONENTS.md §4); Debian's
    /etc/request-tracker5 is not read. ``timezone`` is RT's ``$Timezone`` (TicketSQL dates
    without a zone are read in it). With ``faketime_file`` the server runs under libfaketime
    reading that file on every clock call: while it holds an absolute ``YYYY-MM-DD hh:mm:ss``
    (UTC) RT's clock stands still at that instant; while it is absent RT keeps the real
    time. Stopped and removed afterwards."""
    server = RT_HOME / "libexec" / "rt-server"
    if not server.exists():
        raise RuntimeError("Request Tracker 5 is not installed: run scripts/system-deps.sh")
    base = Path(tempfile.mkdtemp(prefix="slamon-rt-"))
    port = free_port()
    (base / "etc" / "RT_SiteConfig.d").mkdir(parents=True)
    (base / "var").mkdir()
    config = base / "etc" / "RT_SiteConfig.pm"
    config.write_text(
        RT_SITE_CONFIG.format(port=port, db=base / "var" / "rt.sqlite", timezone=timezone)
    )
    (base / "etc" / "root-password").write_text(RT_PASSWORD + "\n")
    env = {**os.environ, "RT_SITE_CONFIG": str(config),
           "RT_SITE_CONFIG_DIR": str(base / "etc" / "RT_SiteConfig.d")}  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        subprocess.run(
            ["/usr/sbin/rt-setup-database", "--action", "init", "--skip-create",
             "--root-password-file", str(base / "etc" / "root-password")],
            env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=deadline,
        )  # fmt: skip
        token, spare = subprocess.run(
            ["perl", "-e", RT_SETUP, RT_PASSWORD],
            env=env, check=True, capture_output=True, text=True, timeout=deadline,
        ).stdout.split()  # fmt: skip
        served = env
        if faketime_file is not None:
            if not FAKETIME.exists():
                raise RuntimeError("libfaketime is not installed: run scripts/system-deps.sh")
            served = {**env, "LD_PRELOAD": str(FAKETIME), "TZ": "UTC",  # the file's times are UTC
                      "FAKETIME_TIMESTAMP_FILE": str(faketime_file),
                      "FAKETIME_NO_CACHE": "1"}  # fmt: skip
        command = [str(server), "--host", "127.0.0.1", "--port", str(port)]
        probe = f"{url}/REST/2.0/queues/all"

        def ready() -> bool:
            return _answers(probe, auth=("root", RT_PASSWORD))

        with _daemon("rt-server", command, base / "rt-server.log", ready, deadline, served):
            yield RequestTracker(url, token, spare, RT_PASSWORD, env, faketime_file)
    finally:  # SIGTERM: the Starlet master takes its workers with it
        shutil.rmtree(base, ignore_errors=True)
        if faketime_file is not None:
            faketime_file.unlink(missing_ok=True)


ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")


@contextlib.contextmanager
def alertmanager(
    config_yaml: str, port: int | None = None, deadline: float = 30.0
) -> Iterator[str]:
    """Alertmanager (Debian's prometheus-alertmanager) on a loopback port (a free one unless
    ``port`` is given: a restart on the same address) with gossip off and its storage in a
    fresh temp dir (REAL-COMPONENTS.md §2); yields its base URL. Stopped and removed after."""
    if not ALERTMANAGER.exists():
        raise RuntimeError("Alertmanager is not installed: run scripts/system-deps.sh")
    base = Path(tempfile.mkdtemp(prefix="slamon-am-"))
    (base / "alertmanager.yml").write_text(config_yaml)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(ALERTMANAGER), f"--config.file={base / 'alertmanager.yml'}",
               f"--storage.path={base / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
               "--cluster.listen-address="]  # fmt: skip
    try:
        with _daemon("alertmanager", command, base / "alertmanager.log",
                     lambda: _answers(f"{url}/-/ready"), deadline):  # fmt: skip
            yield url
    finally:
        shutil.rmtree(base, ignore_errors=True)


DOVECOT = Path("/usr/sbin/dovecot")
DOVECOT_CONFIG = """base_dir = {run}
state_dir = {base}/state
instance_name = slamon-test-dovecot-{port}
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/users
}}
userdb {{
  driver = static
  args = uid={user} gid={group} home={base}/mail/%u
}}
mail_location = maildir:~/Maildir
mailbox_list_index = yes
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
  mailbox Solved {{
    auto = create
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""
# Without root the daemon cannot switch users: everything runs as the caller
# (REAL-COMPONENTS.md §3, "As an unprivileged user").
DOVECOT_UNPRIVILEGED = """default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
service imap-login {{
  chroot =
}}
service anvil {{
  chroot =
}}
"""


@dataclass(frozen=True)
class Dovecot:
    """A running throwaway Dovecot: where it listens, its one user, and its config (for
    ``doveadm``). INBOX, ``Sent`` (SPECIAL-USE ``\\Sent``) and ``Solved`` exist."""

    host: str
    port: int
    user: str
    password: str
    config: Path
    maildir: Path  # the user's Maildir (for messages no client may APPEND)

    def doveadm(self, *args: str) -> str:
        done = subprocess.run(["doveadm", "-c", str(self.config), *args], check=True,
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        return done.stdout


@contextlib.contextmanager
def dovecot(tmp: Path | None = None, deadline: float = 30.0) -> Iterator[Dovecot]:
    """Dovecot IMAP (Debian's dovecot-imapd) on a free loopback port, plain text (no TLS),
    from its own config in a temp dir (REAL-COMPONENTS.md §3); Debian's /etc/dovecot is not
    read. One user in a passwd-file. Its sockets live in a short /tmp path (a Unix socket's
    path is limited to 108 bytes); the rest in ``tmp`` if given, which the unprivileged mail
    processes must be able to traverse (pytest's ``tmp_path`` is not). Stopped and removed
    afterwards."""
    import grp
    import pwd

    if not DOVECOT.exists() or not Path("/usr/lib/dovecot/imap").exists():
        raise RuntimeError("Dovecot IMAP is not installed: run scripts/system-deps.sh")
    base = Path(tempfile.mkdtemp(prefix="slamon-dovecot-", dir=tmp))
    base.chmod(0o755)
    port = free_port()
    root = os.geteuid() == 0
    user = "nobody" if root else pwd.getpwuid(os.geteuid()).pw_name
    group = "nogroup" if root else grp.getgrgid(os.getegid()).gr_name
    run = Path(tempfile.mkdtemp(prefix="slamon-dc-"))
    run.chmod(0o755)
    for sub in ("state", "mail"):
        (base / sub).mkdir()
    if root:
        shutil.chown(base / "mail", user, group)
    account = Dovecot("127.0.0.1", port, "support@example.test", "hunter2",
                      base / "dovecot.conf",
                      base / "mail" / "support@example.test" / "Maildir")  # fmt: skip
    (base / "users").write_text(f"{account.user}:{{PLAIN}}{account.password}\n")
    config = DOVECOT_CONFIG.format(base=base, run=run, port=port, user=user, group=group)
    if not root:
        config += DOVECOT_UNPRIVILEGED.format(user=user, group=group)
    account.config.write_text(config)
    command = [str(DOVECOT), "-F", "-c", str(account.config)]
    try:
        with _daemon("dovecot", command, base / "dovecot.log", lambda: _imap_ready(port), deadline):
            yield account
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)


def _imap_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(64).startswith(b"* OK")
    except OSError:
        return False


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:] if path.exists() else ""


PROMETHEUS = Path("/usr/bin/prometheus")


@contextlib.contextmanager
def prometheus(
    rule_files: list[Path] | tuple[Path, ...],
    targets: list[str] | tuple[str, ...],
    alertmanager: str | None = None,
    deadline: float = 30.0,
) -> Iterator[str]:
    """Prometheus 2 (Debian's) on a free loopback port, scraping ``targets`` ("host:port")
    as job ``slamon`` every second, evaluating ``rule_files`` every second and, when given,
    sending alerts to ``alertmanager`` ("host:port"). Yields its base URL; stopped and its
    temp dir removed afterwards (REAL-COMPONENTS.md §1)."""
    import json

    if not PROMETHEUS.exists():
        raise RuntimeError("Prometheus is not installed: run scripts/system-deps.sh")
    base = Path(tempfile.mkdtemp(prefix="slamon-prom-"))
    port = free_port()
    config: dict[str, object] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(Path(f).resolve()) for f in rule_files],
        "scrape_configs": [{"job_name": "slamon", "static_configs": [{"targets": list(targets)}]}],
    }
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    (base / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    url = f"http://127.0.0.1:{port}"
    command = [str(PROMETHEUS), f"--config.file={base / 'prometheus.yml'}",
               f"--storage.tsdb.path={base / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
               f"--web.external-url={url}/"]  # fmt: skip
    try:
        with _daemon("prometheus", command, base / "prometheus.log",
                     lambda: _answers(f"{url}/-/ready"), deadline):  # fmt: skip
            yield url
    finally:
        shutil.rmtree(base, ignore_errors=True)
