#!/usr/bin/env bash
# Installs the amd64 package that cross/package.sh made on this machine with dpkg -i and checks
# what an operator relies on: `edgecap config check /etc/edgecap/edgecap.toml` passes on the
# shipped config; the edgecap user exists; the man page is found; `systemd-analyze verify` of
# the installed unit is clean and `systemd-analyze security --offline=true` rates it <= 1.5;
# and the installed daemon, run as the edgecap user on the shipped config, starts, stores an
# event and stops cleanly on SIGTERM.
#
# Where systemd is PID 1 the package's postinst also enables and starts edgecap.service. The
# package is purged again at the end unless it was installed before this check.
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/common.sh

debs=(target/debian/edgecap_*_amd64.deb)
deb=${debs[0]}
[ -f "$deb" ] || { echo "no amd64 package: run cross/package.sh first" >&2; exit 1; }
# The checks below use systemd-analyze, man and setpriv.
apt_need systemd man-db util-linux

was_installed=no
dpkg-query -W -f='${Status}' edgecap 2>/dev/null | grep -q 'install ok installed' && was_installed=yes
had_data=no
[ -e /var/lib/edgecap ] && had_data=yes
daemon_pid=
cleanup() {
  if [ -n "$daemon_pid" ]; then as_root kill -KILL "$daemon_pid" 2>/dev/null || true; fi
  if [ "$was_installed" = no ]; then
    as_root dpkg --purge edgecap >/dev/null 2>&1 || true
    # Only what this check made: a log that was here before stays.
    if [ "$had_data" = no ]; then as_root rm -rf /var/lib/edgecap /run/edgecap; fi
  fi
}
trap cleanup EXIT

echo "== dpkg -i $deb"
as_root dpkg -i "$deb"

echo "== edgecap config check /etc/edgecap/edgecap.toml"
edgecap config check /etc/edgecap/edgecap.toml
getent passwd edgecap >/dev/null || { echo "FAIL: the package did not create the edgecap user" >&2; exit 1; }
[ "$(edgecap --version)" = "edgecap $(dpkg-query -W -f='${Version}' edgecap | sed 's/-[^-]*$//')" ] \
  || { echo "FAIL: /usr/bin/edgecap is not the packaged version" >&2; exit 1; }
man -w edgecap >/dev/null || { echo "FAIL: man page not found" >&2; exit 1; }

unit=/usr/lib/systemd/system/edgecap.service
echo "== systemd-analyze verify $unit"
verify=$(systemd-analyze verify "$unit" 2>&1) || true
if [ -n "$verify" ]; then echo "$verify" >&2; echo "FAIL: systemd-analyze verify is not clean" >&2; exit 1; fi
echo "(clean)"
echo "== systemd-analyze security --offline=true $unit"
systemd-analyze security --offline=true --threshold=15 "$unit" | tail -1
systemd-analyze security --offline=true --threshold=15 "$unit" >/dev/null \
  || { echo "FAIL: exposure above 1.5" >&2; exit 1; }

echo "== the installed daemon as user edgecap on the shipped config"
# What StateDirectory=/RuntimeDirectory= and the tmpfiles snippet do under systemd.
as_root systemd-tmpfiles --create edgecap.conf
as_root install -d -o edgecap -g edgecap -m 0750 /run/edgecap
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
# setpriv execs (no fork in between), so $! is the daemon and SIGTERM reaches it.
"${sudo[@]}" setpriv --reuid=edgecap --regid=edgecap --init-groups -- \
  env EDGECAP_LOG=warn /usr/bin/edgecap run --config /etc/edgecap/edgecap.toml &
daemon_pid=$!
deadline=$((SECONDS + 30))
until as_root edgecap status --socket /run/edgecap/ingest.sock >/dev/null 2>&1; do
  kill -0 "$daemon_pid" 2>/dev/null || { echo "FAIL: the daemon exited" >&2; exit 1; }
  [ $SECONDS -lt $deadline ] || { echo "FAIL: no socket in 30 s" >&2; exit 1; }
  sleep 0.1
done
[ "$(stat -c '%U:%G %a' /run/edgecap/ingest.sock)" = "edgecap:edgecap 660" ] \
  || { echo "FAIL: socket is $(stat -c '%U:%G %a' /run/edgecap/ingest.sock)" >&2; exit 1; }
as_root edgecap publish --socket /run/edgecap/ingest.sock --source install_check '"ok"'
as_root kill -TERM "$daemon_pid"
rc=0
wait "$daemon_pid" || rc=$?
daemon_pid=
[ $rc -eq 0 ] || { echo "FAIL: the daemon exited $rc on SIGTERM" >&2; exit 1; }
as_root edgecap log verify --dir /var/lib/edgecap >/dev/null
dump=$(as_root edgecap log dump --dir /var/lib/edgecap)
grep -q '"source":"install_check"' <<<"$dump" \
  || { echo "FAIL: the event is not in /var/lib/edgecap" >&2; exit 1; }
echo "cross/install-check.sh: amd64 package installed and checked"
