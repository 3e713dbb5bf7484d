#!/usr/bin/env bash
# Builds the device binary (`edgecap`, no demo feature) for every Raspberry Pi, without Docker,
# and checks each one on this machine:
#
#   aarch64-unknown-linux-gnu       Pi 3/4/5, 64-bit OS       Debian's gcc-aarch64-linux-gnu links
#   armv7-unknown-linux-gnueabihf   Pi 2/3, 32-bit OS          Debian's gcc-arm-linux-gnueabihf links
#   arm-unknown-linux-musleabihf    Pi Zero/1 (ARMv6), and     -Zbuild-std + cargo-zigbuild, static
#                                   every 32-bit Pi OS
#   the host (x86_64)               the amd64 package, and the writer of the cross-arch smoke data
#
# Checks: the ARMv6 binary's `readelf -A` says Tag_CPU_arch: v6; every binary prints
# `--version` under qemu-user (ARMv6 on the arm1176 core); a log written by the host binary
# verifies and dumps identically with each Pi binary, and a log written by the ARMv6 daemon
# under qemu verifies and dumps identically on the host; each of those two daemons forwards
# its events over TLS with a client certificate to a local mosquitto (ring on ARMv6 for real);
# the aarch64 binary is at most 6 MiB.
# Prints the stripped sizes. Installs what it needs (apt, rustup, a venv under target/).
# Why these routes and not `cross`: cross/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/common.sh

need_gnu_cross
need_armv6_tools
# The cross-architecture smoke forwards over TLS to a local broker (openssl makes its PKI).
apt_need mosquitto openssl

echo "== cargo build --release (host, $AARCH64, $ARMV7)"
# One cargo invocation for three targets: cargo's job queue overlaps one target's long
# single-threaded LTO link with the others' compiles, which separate runs could not.
# (Running the ARMv6 build alongside, in its own target directory, gained nothing on two
# cores: this script took 702 s so in CI, against 628 s one after the other in the CI run
# before; that whole run was about 10% slower, so the two are a wash at best.)
cargo build --release -p edgecap --no-default-features \
  --target "$HOST_TARGET" --target "$AARCH64" --target "$ARMV7"

echo "== cargo zigbuild --release ($ARMV6, -Zbuild-std)"
# rustup has no standard library for ARMv6 here, and Debian's armhf gcc emits ARMv7 code: so
# std is rebuilt for the target (rust-src + RUSTC_BOOTSTRAP=1 on the stable toolchain) and zig
# links against its own ARMv6 musl. link-self-contained=no: zig provides crt objects and libc,
# not the (absent) rustup musl ones.
RUSTC_BOOTSTRAP=1 \
CARGO_TARGET_ARM_UNKNOWN_LINUX_MUSLEABIHF_RUSTFLAGS="-C link-self-contained=no" \
  cargo zigbuild --release -p edgecap --no-default-features --target "$ARMV6" \
  -Zbuild-std=std,panic_abort

echo "== readelf -A $(bin_of "$ARMV6")"
readelf -A "$(bin_of "$ARMV6")" | tee target/armv6-readelf.txt
grep -Eq '^ *Tag_CPU_arch: v6$' target/armv6-readelf.txt \
  || { echo "FAIL: the ARMv6 binary is not ARMv6 code" >&2; exit 1; }
grep -Eq '^ *Tag_CPU_arch: v7$' <(readelf -A "$(bin_of "$ARMV7")") \
  || { echo "FAIL: the armv7 binary is not ARMv7 code" >&2; exit 1; }

# The arm1176 model must reject ARMv7 code, or running the ARMv6 binary on it proves nothing.
# (In a subshell, so that the shell's "Illegal instruction" notice goes to /dev/null too.)
if (qemu-arm -cpu arm1176 -L /usr/arm-linux-gnueabihf "$(bin_of "$ARMV7")" --version; exit $?) >/dev/null 2>&1; then
  echo "FAIL: qemu-arm -cpu arm1176 ran ARMv7 code; the ARMv6 check would prove nothing" >&2
  exit 1
fi
echo "(the armv7 binary dies with SIGILL on qemu-arm -cpu arm1176, as on a Pi Zero)"

echo "== --version under qemu-user"
for target in "$HOST_TARGET" "$AARCH64" "$ARMV7" "$ARMV6"; do
  runner "$target"
  printf '%-32s %s\n' "$target" "$("${RUN[@]}" --version)"
done

# --- Cross-architecture smoke: one data directory, written on one architecture, read on
# another. The on-disk format is little-endian and fixed-width, so a 32-bit reader (mmap
# offsets, usize) must see exactly what the 64-bit writer wrote, and the reverse.
work=$(mktemp -d)
daemon_pid=
broker_pid=
cleanup() {
  if [ -n "$daemon_pid" ]; then kill -KILL "$daemon_pid" 2>/dev/null || true; fi
  if [ -n "$broker_pid" ]; then kill -KILL "$broker_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
runner "$HOST_TARGET"; HOST_RUN=("${RUN[@]}")

# A mosquitto on a free loopback port with a TLS listener that requires a client certificate:
# each daemon below forwards its events there, so ring's code runs on each architecture
# (ARMv6 on the arm1176 core included) through a real handshake and real records.
pki=$work/pki
mkdir -p "$pki"
# openssl's chatter goes to a log, shown if a step fails.
openssl_quiet() {
  openssl "$@" 2>>"$pki/openssl.log" \
    || { cat "$pki/openssl.log" >&2; echo "FAIL: openssl $1" >&2; exit 1; }
}
openssl_quiet req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=edgecap-smoke-ca -keyout "$pki/ca.key" -out "$pki/ca.pem"
for name in server client; do
  openssl_quiet req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=$name" -keyout "$pki/$name.key" -out "$pki/$name.csr"
done
openssl_quiet x509 -req -in "$pki/server.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 2 -out "$pki/server.pem" -extfile <(printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n')
openssl_quiet x509 -req -in "$pki/client.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 2 -out "$pki/client.pem" -extfile <(printf 'extendedKeyUsage=clientAuth\n')
mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
# start_broker: mosquitto on a port the kernel just said was free. Another process can take
# it in between; then mosquitto exits (it cannot bind) and a new port is tried, up to 5 times.
start_broker() {
  local attempt
  for attempt in 1 2 3 4 5; do
    tls_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf '%s\n' "listener $tls_port 127.0.0.1" "allow_anonymous true" "cafile $pki/ca.pem" \
      "certfile $pki/server.pem" "keyfile $pki/server.key" "require_certificate true" "user root" \
      "log_dest file $pki/mosquitto.log" >"$pki/mosquitto.conf"
    : >"$pki/mosquitto.log"
    "$mosquitto_bin" -c "$pki/mosquitto.conf" >>"$pki/mosquitto.log" 2>&1 &
    broker_pid=$!
    local deadline=$((SECONDS + 20))
    # Ours is listening once its log says so (a /dev/tcp probe cannot tell whose port it is).
    until grep -q "Opening ipv4 listen socket on port $tls_port" "$pki/mosquitto.log" \
          && (exec 3<>"/dev/tcp/127.0.0.1/$tls_port") 2>/dev/null; do
      kill -0 "$broker_pid" 2>/dev/null || break
      [ $SECONDS -lt $deadline ] || { echo "FAIL: mosquitto did not listen in 20 s" >&2; exit 1; }
      sleep 0.1
    done
    kill -0 "$broker_pid" 2>/dev/null && return 0
    echo "(mosquitto could not use port $tls_port, attempt $attempt)"
    broker_pid=
  done
  cat "$pki/mosquitto.log" >&2
  echo "FAIL: mosquitto did not start" >&2
  exit 1
}
start_broker

# write_log TARGET NAME: runs TARGET's daemon on a fresh directory, publishes events through
# TARGET's client (tiny segments, so they rotate), stops it with SIGTERM (exit 0 expected).
write_log() {
  local target=$1 name=$2 dir=$work/$2
  mkdir -p "$dir"
  cat >"$dir.toml" <<EOF
device_id = "smoke-$name"
[storage]
dir = "$dir/data"
segment_size = "36KiB"
max_disk = "4MiB"
[ingest]
socket = "$dir/ingest.sock"
[upstream]
host = "127.0.0.1"
port = $tls_port
tls = { ca = "$pki/ca.pem", cert = "$pki/client.pem", key = "$pki/client.key" }
EOF
  runner "$target"
  EDGECAP_LOG=warn "${RUN[@]}" run --config "$dir.toml" &
  daemon_pid=$!
  # Wait for the socket to answer, with a deadline (qemu-user starts in well under a second).
  local deadline=$((SECONDS + 60))
  until "${HOST_RUN[@]}" status --socket "$dir/ingest.sock" >/dev/null 2>&1; do
    kill -0 "$daemon_pid" 2>/dev/null || { echo "FAIL: $target daemon exited" >&2; exit 1; }
    [ $SECONDS -lt $deadline ] || { echo "FAIL: $target daemon did not listen in 60 s" >&2; exit 1; }
    sleep 0.1
  done
  "${RUN[@]}" publish --socket "$dir/ingest.sock" --source temp0 21.5 >/dev/null
  for i in $(seq 1 400); do
    printf '{"source":"s%d","value":{"n":%d,"text":"%s"}}\n' $((i % 7)) "$i" "$(printf 'x%.0s' $(seq 1 $((i % 50))))"
  done | "${RUN[@]}" publish --socket "$dir/ingest.sock" - >/dev/null
  "${RUN[@]}" publish --socket "$dir/ingest.sock" --source cmd --kind command '"reboot"' >/dev/null
  # Everything stored is forwarded over TLS (forwarded_seq catches up with durable_seq).
  local status forwarded durable
  deadline=$((SECONDS + 120))
  while :; do
    status=$("${HOST_RUN[@]}" status --socket "$dir/ingest.sock" --json) \
      || { echo "FAIL: $target daemon does not answer status" >&2; exit 1; }
    forwarded=$(sed -n 's/.*"forwarded_seq":\([0-9]*\).*/\1/p' <<<"$status")
    durable=$(sed -n 's/.*"durable_seq":\([0-9]*\).*/\1/p' <<<"$status")
    [[ $forwarded =~ ^[0-9]+$ && $durable =~ ^[0-9]+$ ]] \
      || { echo "FAIL: unexpected status from $target: $status" >&2; exit 1; }
    [ "$forwarded" -lt "$durable" ] || break
    [ $SECONDS -lt $deadline ] || { echo "FAIL: $target did not forward over TLS: $status" >&2; exit 1; }
    sleep 0.2
  done
  kill -TERM "$daemon_pid"
  local rc=0
  wait "$daemon_pid" || rc=$?
  daemon_pid=
  [ $rc -eq 0 ] || { echo "FAIL: $target daemon exited $rc on SIGTERM" >&2; exit 1; }
  runner "$target"
  "${RUN[@]}" log dump --dir "$dir/data" >"$dir.dump"
  local events segments
  events=$(grep -c '"kind":"sensor"\|"kind":"command"' "$dir.dump")
  segments=$(find "$dir/data" -type f | wc -l)
  [ "$events" -eq 402 ] || { echo "FAIL: $target stored $events of 402 events" >&2; exit 1; }
  echo "$name: $target wrote 402 events ($(wc -l <"$dir.dump") with system events) in $segments files, all forwarded over TLS"
}

# read_log TARGET NAME: TARGET verifies NAME's directory and dumps exactly what its writer did.
read_log() {
  local target=$1 name=$2 dir=$work/$2
  runner "$target"
  "${RUN[@]}" log verify --dir "$dir/data" >/dev/null \
    || { echo "FAIL: $target: log verify of the $name log" >&2; exit 1; }
  "${RUN[@]}" log dump --dir "$dir/data" | cmp -s - "$dir.dump" \
    || { echo "FAIL: $target dumps the $name log differently" >&2; exit 1; }
  echo "  $target: verify clean, dump identical"
}

echo "== cross-architecture smoke"
write_log "$HOST_TARGET" host
for target in "$ARMV6" "$ARMV7" "$AARCH64"; do read_log "$target" host; done
write_log "$ARMV6" armv6
read_log "$HOST_TARGET" armv6

echo "== stripped sizes"
for target in "$AARCH64" "$ARMV7" "$ARMV6" "$HOST_TARGET"; do
  bytes=$(stat -c %s "$(bin_of "$target")")
  printf '%-32s %9d bytes  %5.2f MiB  %s\n' "$target" "$bytes" \
    "$(awk -v b="$bytes" 'BEGIN { print b / 1048576 }')" "$(bin_of "$target")"
done | tee target/device-sizes.txt
aarch64_bytes=$(stat -c %s "$(bin_of "$AARCH64")")
[ "$aarch64_bytes" -le $((6 * 1024 * 1024)) ] \
  || { echo "FAIL: aarch64 binary is $aarch64_bytes bytes, over the 6 MiB goal" >&2; exit 1; }
echo "cross/build.sh: all device binaries built and checked"
