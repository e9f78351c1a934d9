#!/usr/bin/env bash
# Debian packages the test suite runs for real: promtool/Prometheus, Alertmanager,
# PostgreSQL 15, Chromium, Request Tracker 5 (standalone server, SQLite) and Dovecot IMAP. Installs only
# what is missing; never starts a system daemon.
set -euo pipefail

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -x /usr/share/request-tracker5/libexec/rt-server ] || need+=(request-tracker5 rt5-db-sqlite rt5-standalone)
command -v dovecot >/dev/null 2>&1 || need+=(dovecot-core dovecot-imapd)
compgen -G "/usr/lib/*/faketime/libfaketime.so.1" >/dev/null || need+=(faketime)  # RT told at a story's own instants
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing ${need[*]}; run as root or install them: apt-get install ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Package scripts must not start daemons listening on 0.0.0.0.
[ -x /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; }
# RT's debconf questions, answered; the tests run their own instance from a temp dir, so the
# package's own database is not created.
if [[ " ${need[*]} " == *" request-tracker5 "* ]]; then
  debconf-set-selections <<'EOF'
request-tracker5 request-tracker5/rtname string sla-test
request-tracker5 request-tracker5/organization string example.test
request-tracker5 request-tracker5/correspondaddress string rt@example.test
request-tracker5 request-tracker5/commentaddress string rt-comment@example.test
request-tracker5 request-tracker5/webbaseurl string http://127.0.0.1:18080
request-tracker5 request-tracker5/webpath string /rt
request-tracker5 request-tracker5/install-cronjobs boolean false
request-tracker5 request-tracker5/handle-siteconfig-permissions boolean true
request-tracker5 request-tracker5/dbconfig-install boolean false
request-tracker5 request-tracker5/database-type select sqlite3
request-tracker5 request-tracker5/initial-root-password password rtpass123
EOF
fi
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need[@]}" >/tmp/slamon-apt.log 2>&1 \
  || { tail -30 /tmp/slamon-apt.log >&2; exit 1; }
echo "system-deps: installed ${need[*]}"
