"""Real services the tests start on loopback: a throwaway PostgreSQL cluster and a
throwaway Request Tracker 5."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PGBIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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

    def revoke(self, token: str) -> None:
        """Delete an API token (as an admin would in RT's web UI)."""
        subprocess.run(["perl", "-e", RT_REVOKE, token], env=self.env, check=True,
                       capture_output=True, timeout=60)  # fmt: skip


@contextlib.contextmanager
def request_tracker(timezone: str = "UTC", deadline: float = 60.0) -> Iterator[RequestTracker]:
    """Request Tracker 5 (Debian's rt5-standalone) on a free loopback port with its own
    config and SQLite database in a temp dir (REAL-COMPONENTS.md §4); Debian's
    /etc/request-tracker5 is not read. ``timezone`` is RT's ``$Timezone`` (TicketSQL dates
    without a zone are read in it). Stopped and removed afterwards."""
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
    process: subprocess.Popen[bytes] | None = None
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
        with open(base / "rt-server.log", "wb") as log:
            process = subprocess.Popen(
                [str(server), "--host", "127.0.0.1", "--port", str(port)],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        _wait_for_rt(url, process, base / "rt-server.log", deadline)
        yield RequestTracker(url, token, spare, RT_PASSWORD, env)
    finally:
        if process is not None:
            process.terminate()  # the Starlet master takes its workers with it
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(base, ignore_errors=True)


def _wait_for_rt(url: str, process: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    import requests  # only the RT helper needs it

    until = time.monotonic() + deadline
    while time.monotonic() < until:
        if process.poll() is not None:
            raise RuntimeError(f"rt-server exited: {log.read_text()[-2000:]}")
        try:
            answer = requests.get(f"{url}/REST/2.0/queues/all", auth=("root", RT_PASSWORD),
                                  timeout=5)  # fmt: skip
            if answer.status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"rt-server not ready within {deadline:.0f} s: {log.read_text()[-2000:]}")
