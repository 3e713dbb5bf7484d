#!/bin/sh
# PID 1 of the power-cut VM (built into its initramfs by tests/powercut-vm.sh; runs under
# busybox ash). The kernel command line says what this boot does:
#   edgecap.mode=run    recover (the daemon's own start), check, then stream events until the
#                       host kills the VM (the power cut)
#   edgecap.mode=check  recover, check, stop the daemon with SIGTERM, unmount, power off
#   edgecap.mode=probe  say so and power off (the host's test of the accelerator)
#   edgecap.cycle=N     the producer's source is "cN" and its values count 0, 1, 2, ...
#   edgecap.sync=always|interval, edgecap.interval_ms=MS, edgecap.port=PORT (the host's broker)
# Serial ports: ttyS0 console (lines for the host start with "EDGECAP "), ttyS1 the producer's
# reply lines (one per event sent, in order), ttyS2 status samples ("T <uptime> <status json>").
/bin/busybox mkdir -p /proc /sys /dev /run /data /tmp /bin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin

# Plain lines for the host: no \r added to the console, nothing changed on the data ports.
stty -F /dev/ttyS0 -onlcr
stty -F /dev/ttyS1 raw -echo
stty -F /dev/ttyS2 raw -echo
say() { echo "EDGECAP $*" >/dev/ttyS0; }
die() {
  say "FAIL $*"
  poweroff -f
}

mode=run cycle=0 sync=always interval_ms=50 port=1883
for arg in $(cat /proc/cmdline); do
  case $arg in
    edgecap.mode=*) mode=${arg#*=} ;;
    edgecap.cycle=*) cycle=${arg#*=} ;;
    edgecap.sync=*) sync=${arg#*=} ;;
    edgecap.interval_ms=*) interval_ms=${arg#*=} ;;
    edgecap.port=*) port=${arg#*=} ;;
  esac
done

if [ "$mode" = probe ]; then # the host checks that this accelerator boots the kernel at all
  say "PROBE"
  poweroff -f
fi
for m in $(cat /modules.order); do insmod "/modules/$m" || die "insmod $m"; done
# wait_for TRIES CMD...: CMD until it succeeds, every 50 ms, at most TRIES times.
wait_for() {
  tries=$1
  shift
  until "$@" 2>/dev/null; do
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || return 1
    sleep 0.05
  done
}
wait_for 200 test -b /dev/vda || die "no /dev/vda"
# ext4 replays its journal here: the filesystem's own recovery, no fsck, no human.
mount -t ext4 /dev/vda /data || die "mount /dev/vda"
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 || die "network"

cat >/etc/edgecap.toml <<EOF
device_id = "vm"
[storage]
dir = "/data/log"
segment_size = "1MiB"
max_disk = "192MiB"
sync = "$sync"
sync_interval_ms = $interval_ms
[ingest]
socket = "/run/edgecap.sock"
[upstream]
host = "10.0.2.2"
port = $port
keep_alive_secs = 5
[retry]
initial_backoff_ms = 100
max_backoff_ms = 1000
EOF

say "BOOTED uptime=$(cut -d' ' -f1 /proc/uptime)"
# What the cut left, read-only, before anything repairs it (the host checks that no cursor is
# ahead of the last readable seq). On the first boot there is no data directory yet (rc 2).
edgecap log verify --json --dir /data/log >/tmp/pre 2>/dev/null
say "PREVERIFY rc=$? $(head -c 65536 /tmp/pre)"

# start_daemon: `edgecap run` in the background ($daemon), ready once it answers a status
# request: recovery is done and the socket bound (at most 60 s).
start_daemon() {
  edgecap run --config /etc/edgecap.toml >/dev/ttyS0 2>&1 &
  daemon=$!
  wait_for 1200 edgecap status --socket /run/edgecap.sock --json >/tmp/status || die "daemon not ready"
}
say "STARTING uptime=$(cut -d' ' -f1 /proc/uptime)"
start_daemon
say "RECOVERED uptime=$(cut -d' ' -f1 /proc/uptime)"
say "STATUS $(cat /tmp/status)"
# The daemon's own recovery ran at that start; stop it cleanly so that verify reads a log no
# one is writing (a cursor slot being rewritten could be read torn).
kill -TERM "$daemon"
wait "$daemon"
say "STOPPED rc=$?"
edgecap log verify --dir /data/log >/tmp/verify 2>&1
say "VERIFY rc=$?"
while read -r line; do say "VERIFY| $line"; done </tmp/verify

if [ "$mode" = check ]; then
  umount /data || die "umount"
  say "DONE"
  poweroff -f
fi
start_daemon
say "READY uptime=$(cut -d' ' -f1 /proc/uptime)"

# Status samples on one connection (a process per sample is slow under emulation), each
# stamped with the uptime at which its reply was read, so the host can tell what was durable
# when the power went and how long an appended event waited to become durable.
(
  while :; do
    echo '{"op":"status"}'
    sleep 0.02
  done | edgecap publish --socket /run/edgecap.sock - 2>/dev/null | while read -r reply; do
    read -r up _ </proc/uptime
    echo "T $up $reply"
  done >/dev/ttyS2
) &
i=0
while :; do
  echo "{\"source\":\"c$cycle\",\"value\":$i}"
  i=$((i + 1))
done | edgecap publish --socket /run/edgecap.sock - >/dev/ttyS1 2>/dev/ttyS0
die "the producer ended"
