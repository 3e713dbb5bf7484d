#!/usr/bin/env bash
# Power cuts in a real VM (issue 10, item 1). A process kill keeps the page cache; this does not.
#
# A Linux guest (Debian's own kernel package, and an initramfs built here from busybox-static,
# the kernel's modules and the shipped amd64 `edgecap` binary with the libraries ldd names) runs
# `edgecap run` on an ext4 data disk and a producer streaming events into it; the daemon forwards
# to a mosquitto on this host (slirp: 10.0.2.2). Every reply line the producer gets goes to the
# host over a serial port. The host SIGKILLs qemu at a random moment (after a random number of
# acks): the guest loses its page cache and everything in flight, as at a power cut. Then the
# guest boots again and the daemon's own start recovers. Each boot checks (tests/vm/init.sh and
# below): `log verify` clean after the daemon's recovery, the daemon healthy, the forward cursor
# not ahead of the durable log, no acked seq handed out again. After the last cut a check boot
# stops the daemon cleanly; the host then reads the log out of the image (debugfs, no mount) and
# checks that every acked seq is there with its source and value, and that no seq repeats.
#
#   sync = "always":   nothing acked may be lost.
#   sync = "interval": what may be lost is bounded by the interval: every acked event at or
#                      below the last durable seq the guest saw before the cut must be there, and
#                      a written event becomes durable within interval + slack (measured).
#
# Usage: tests/powercut-vm.sh [always|interval]...   (default: both)
#   EDGECAP_CUTS=N     cuts per sync mode (default 10; tests/soak.sh: 100)
#   EDGECAP_MAX_ACKS=N the random cut point is after 1..N acks (default 3000)
#   EDGECAP_SEED=N     the cut points' seed (printed)
#   EDGECAP_VM_BIN=F   boot this edgecap binary instead of building the amd64 one
#   EDGECAP_KEEP=1     keep the work directory (images, serial logs)
# Uses KVM when /dev/kvm opens, plain emulation (slower, longer deadlines) otherwise. Needs
# apt (qemu-system-x86, busybox-static, the kernel package: downloaded, never installed) and
# nothing else from the network. Skips with a printed reason when qemu cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/common.sh
# depmod, mkfs.ext4 and debugfs live in /usr/sbin, off a normal user's PATH.
PATH=$PATH:/usr/sbin:/sbin

cuts=${EDGECAP_CUTS:-10}
seed=${EDGECAP_SEED:-$((RANDOM * 32768 + RANDOM))}
RANDOM=$seed
max_acks=${EDGECAP_MAX_ACKS:-3000}
modes=("$@")
[ ${#modes[@]} -gt 0 ] || modes=(always interval)
interval_ms=50
vm=$PWD/target/vm
work=$(mktemp -d "${TMPDIR:-/tmp}/edgecap-vm.XXXXXX")
qemu_pid= broker_pid=
# reap PID SECONDS: waits for our child PID to exit, SIGKILLs it after SECONDS.
# (Its stderr is dropped: bash reports a SIGKILLed job there, "Killed ...", which is expected.)
reap() {
  {
    local deadline=$((SECONDS + $2))
    while kill -0 "$1" && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
    kill -KILL "$1" || true
    wait "$1" || true
  } 2>/dev/null
}
cleanup() {
  [ -z "$qemu_pid" ] || reap "$qemu_pid" 0
  if [ -n "$broker_pid" ]; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    reap "$broker_pid" 10
  fi
  if [ "${EDGECAP_KEEP:-0}" = 1 ]; then echo "(kept $work)"; else rm -rf "$work"; fi
}
trap cleanup EXIT

apt_need qemu-system-x86 kmod cpio e2fsprogs jq mosquitto python3

# ---- the guest ------------------------------------------------------------------------------
# The kernel: Debian's linux-image-amd64 dependency, downloaded and unpacked under target/vm.
kernel_of_meta() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1; }
kernel_pkg=$(kernel_of_meta || true)
if [ -z "$kernel_pkg" ]; then
  as_root apt-get update -qq
  kernel_pkg=$(kernel_of_meta || true)
fi
[ -n "$kernel_pkg" ] || { echo "FAIL: apt knows no linux-image-amd64 kernel" >&2; exit 1; }
kver=${kernel_pkg#linux-image-}
if [ ! -f "$vm/kernel/boot/vmlinuz-$kver" ]; then
  echo "== $kernel_pkg (download and unpack, not installed)"
  rm -rf "$vm/kernel" "$vm/debs"
  mkdir -p "$vm/debs" "$vm/kernel"
  (cd "$vm/debs" && apt-get download -q "$kernel_pkg" >/dev/null)
  dpkg-deb -x "$vm"/debs/"$kernel_pkg"_*.deb "$vm/kernel"
  depmod -b "$vm/kernel" "$kver"
fi
moddir=$vm/kernel/lib/modules/$kver

if [ -n "${EDGECAP_VM_BIN:-}" ]; then
  bin=$EDGECAP_VM_BIN # another build under test (an older one, say)
else
  bin=$(bin_of "$HOST_TARGET")
  echo "== cargo build --release (the amd64 package's binary: $bin)"
  cargo build --release -q -p edgecap --no-default-features --target "$HOST_TARGET"
fi

# mod_closure NAME...: the modules' paths (from modules.dep) in load order, dependencies first.
declare -A mod_seen=()
mod_order=()
mod_visit() { # path
  local path=$1 dep
  [ -z "${mod_seen[$path]:-}" ] || return 0
  mod_seen[$path]=1
  for dep in $(sed -n "s|^$path: *||p" "$moddir/modules.dep"); do mod_visit "$dep"; done
  mod_order+=("$path")
}
mod_closure() {
  local name path
  for name in "$@"; do
    path=$(grep -oE "^[^:]*/$name\.ko(\.xz|\.zst)?:" "$moddir/modules.dep" | head -1)
    path=${path%:}
    if [ -z "$path" ]; then
      grep -qE "/$name\.ko" "$moddir/modules.builtin" && continue # built in
      [ "${optional:-0}" = 1 ] && continue
      echo "FAIL: no module $name in $kernel_pkg" >&2
      exit 1
    fi
    mod_visit "$path"
  done
}
# virtio PCI, disk and network; ext4, and the crc32c it asks the crypto API for at mount (a
# library, not a module, in newer kernels).
mod_closure virtio_pci virtio_blk virtio_net ext4
optional=1 mod_closure crc32c_generic

mkdir -p "$vm/debs"
root=$work/initramfs
mkdir -p "$root/bin" "$root/modules" "$root/etc"
busybox_deb=$(ls "$vm"/debs/busybox-static_*.deb 2>/dev/null | head -1 || true)
if [ -z "$busybox_deb" ]; then
  (cd "$vm/debs" && apt-get download -q busybox-static >/dev/null)
  busybox_deb=$(ls "$vm"/debs/busybox-static_*.deb | head -1)
fi
dpkg-deb --fsys-tarfile "$busybox_deb" | tar -x -O ./bin/busybox >"$root/bin/busybox"
chmod 755 "$root/bin/busybox"
ln -s busybox "$root/bin/sh" # the interpreter of /init; init.sh installs the other applets
cp "$bin" "$root/bin/edgecap"
# The shipped binary is dynamic (glibc): take exactly the libraries the loader resolves.
for lib in $(ldd "$bin" | grep -oE '/[^ ]+'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
: >"$root/modules.order"
# busybox insmod takes plain .ko files: compressed modules (Debian 13) are unpacked here.
for path in "${mod_order[@]}"; do
  name=$(basename "$path")
  case $name in
    *.ko.xz) xz -dc "$moddir/$path" >"$root/modules/${name%.xz}" ;;
    *.ko.zst) zstd -qdc "$moddir/$path" >"$root/modules/${name%.zst}" ;;
    *) cp "$moddir/$path" "$root/modules/" ;;
  esac
  echo "${name%.ko*}.ko" >>"$root/modules.order"
done
cp tests/vm/init.sh "$root/init"
chmod 755 "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"
echo "guest: $kernel_pkg, initramfs $(du -k "$work/initrd.gz" | cut -f1) KiB (busybox, edgecap, ${#mod_order[@]} modules)"

# boots_under SECONDS ACCEL...: the guest kernel reaches /init under these qemu options in time.
# (A paused start is not enough: nested KVM of the PVM kind, which some cloud sandboxes have,
# creates the VM and then never gets through the kernel's decompressor.)
boots_under() {
  local secs=$1
  shift
  : >"$work/probe.log"
  timeout "$secs" qemu-system-x86_64 "$@" -machine q35 -m 256 -no-reboot -no-user-config -nodefaults \
    -display none -monitor none -kernel "$vm/kernel/boot/vmlinuz-$kver" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 panic=-1 quiet edgecap.mode=probe" -serial "file:$work/probe.log" \
    >"$work/probe.err" 2>&1 || true
  grep -q '^EDGECAP PROBE' "$work/probe.log"
}
# KVM when the kernel boots under it (in 10 s; it takes 1-2 s): the host's CPU model less
# IA32_ARCH_CAPABILITIES, which nested KVM may refuse to set ("failed to set MSR 0x10a").
# Else plain emulation (the kernel reaches /init in about 5 s).
accel=() deadline_scale=1
if (exec 3<>/dev/kvm) 2>/dev/null; then
  if boots_under 10 -accel kvm -cpu host,-arch-capabilities; then
    accel=(-accel kvm -cpu host,-arch-capabilities)
  else
    kvm_note="the kernel does not boot under this machine's KVM"
  fi
else
  kvm_note="/dev/kvm cannot be opened"
fi
if [ ${#accel[@]} -gt 0 ]; then
  echo "accelerator: KVM (-cpu ${accel[3]})"
elif ! qemu-system-x86_64 -accel tcg -machine q35 -display none -nodefaults -S \
       -monitor none -serial none -daemonize -pidfile "$work/probe.pid" >"$work/probe.err" 2>&1; then
  echo "SKIP: qemu-system-x86_64 cannot start a machine here: $(tail -1 "$work/probe.err")"
  exit 0
else
  kill -KILL "$(cat "$work/probe.pid")" 2>/dev/null || true
  # qemu runs: a guest that does not boot is this test's failure, not the machine's.
  boots_under 60 -accel tcg -cpu max || { tail -40 "$work/probe.log" >&2; echo "FAIL: the guest does not boot under TCG" >&2; exit 1; }
  accel=(-accel tcg -cpu max)
  deadline_scale=5
  echo "accelerator: none ($kvm_note): plain emulation (TCG), deadlines x$deadline_scale"
fi

# ---- the host side --------------------------------------------------------------------------
start_broker() {
  local attempt
  for attempt in 1 2 3 4 5; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf '%s\n' "listener $port 127.0.0.1" "allow_anonymous true" "user root" \
      "log_dest file $work/mosquitto.log" >"$work/mosquitto.conf"
    : >"$work/mosquitto.log"
    "$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c "$work/mosquitto.conf" >>"$work/mosquitto.log" 2>&1 &
    broker_pid=$!
    local deadline=$((SECONDS + 20))
    until grep -q "Opening ipv4 listen socket on port $port" "$work/mosquitto.log"; do
      kill -0 "$broker_pid" 2>/dev/null || break
      [ $SECONDS -lt $deadline ] || { echo "FAIL: mosquitto did not listen in 20 s" >&2; exit 1; }
      sleep 0.1
    done
    kill -0 "$broker_pid" 2>/dev/null && return 0
    broker_pid=
  done
  echo "FAIL: mosquitto did not start" >&2
  exit 1
}
start_broker

# start_qemu MODE CYCLE SYNC: starts the guest in the background (qemu_pid); its serial ports go to
# $run/console-CYCLE.log, acks-CYCLE.log and status-CYCLE.log.
start_qemu() {
  local mode=$1 cycle=$2 sync=$3
  : >"$run/console-$cycle.log"
  qemu-system-x86_64 "${accel[@]}" -machine q35 -m 512 -smp 2 -no-reboot -no-user-config \
    -nodefaults -display none -monitor none \
    -kernel "$vm/kernel/boot/vmlinuz-$kver" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 panic=-1 quiet edgecap.mode=$mode edgecap.cycle=$cycle edgecap.sync=$sync edgecap.interval_ms=$interval_ms edgecap.port=$port" \
    -drive "file=$run/data.img,format=raw,if=virtio,cache=writeback" \
    -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
    -serial "file:$run/console-$cycle.log" -serial "file:$run/acks-$cycle.log" \
    -serial "file:$run/status-$cycle.log" &
  qemu_pid=$!
}

# boot MODE CYCLE SYNC: starts the guest and waits for its init's first line. qemu itself
# crashing before that (seen once: TCG segfaulted at start) is retried, twice at most: the
# guest has not touched its disk yet. Anything later is the test's to judge.
boot() {
  local attempt status deadline
  for attempt in 1 2 3; do
    start_qemu "$@"
    deadline=$((SECONDS + 60 * deadline_scale))
    until grep -q '^EDGECAP BOOTED' "$run/console-$2.log"; do
      if ! kill -0 "$qemu_pid" 2>/dev/null; then
        status=0
        wait "$qemu_pid" 2>/dev/null || status=$?
        qemu_pid=
        echo "  (qemu ended with status $status before the guest's init ran: attempt $attempt of 3)"
        continue 2
      fi
      [ $SECONDS -lt $deadline ] || fail "the guest's init did not start within $((60 * deadline_scale)) s"
      sleep 0.05
    done
    return 0
  done
  cycle=$2 fail "qemu did not start the guest in 3 attempts"
}

fail() { # message: prints the boot's console and ends the test
  echo "FAIL: $*" >&2
  echo "---- console of boot $cycle (last 60 lines) ----" >&2
  tail -60 "$run/console-$cycle.log" >&2 || true
  exit 1
}

# guest_alive CYCLE: fails the test when the guest reported a failure or the VM is gone.
guest_alive() {
  if grep -q '^EDGECAP FAIL' "$run/console-$1.log"; then
    fail "the guest says: $(grep '^EDGECAP FAIL' "$run/console-$1.log")"
  fi
  kill -0 "$qemu_pid" 2>/dev/null || fail "the VM ended unexpectedly"
}

# wait_console CYCLE PATTERN SECONDS: until the guest's console has a line matching PATTERN.
wait_console() {
  local deadline=$((SECONDS + $3 * deadline_scale))
  until grep -q "$2" "$run/console-$1.log"; do
    grep -q "$2" "$run/console-$1.log" || guest_alive "$1"
    [ $SECONDS -lt $deadline ] || fail "no '$2' from the guest within $(($3 * deadline_scale)) s"
    sleep 0.05
  done
}

# complete_acks CYCLE: the ok replies the host has in full (a line cut by the power is not);
# any refusal fails the test (the producer sends only valid events).
complete_acks() {
  if grep -q '"ok":false' "$run/acks-$1.log" 2>/dev/null; then
    fail "the daemon refused an event: $(grep -m1 '"ok":false' "$run/acks-$1.log")"
  fi
  grep -c '^{"ok":true,"seq":[0-9]*}$' "$run/acks-$1.log" 2>/dev/null || true
}

# check_boot CYCLE MODE: what every boot must show: what the cut left has no cursor ahead of
# the last readable seq (checked read-only before anything repairs it); the daemon's own
# recovery leaves it healthy, handing out no acked seq again, and `log verify` clean.
check_boot() {
  local cycle=$1 mode=$2 pre status appended
  wait_console "$cycle" '^EDGECAP VERIFY rc=' 60
  pre=$(sed -n 's/^EDGECAP PREVERIFY rc=[0-9]* //p' "$run/console-$cycle.log")
  if [ "$cycle" -gt 1 ]; then
    jq -e '(.last_seq // 0) as $last | [.cursors[].seq <= $last] | all' <<<"$pre" >/dev/null \
      || fail "a cursor is ahead of the log the cut left: $pre"
  fi
  if [ "$mode" = check ]; then
    # The check is not vacuous: by now the forwarder has persisted a cursor.
    jq -e '[.cursors[].seq] | max > 0' <<<"$pre" >/dev/null || fail "no forward cursor was ever persisted: $pre"
  fi
  status=$(sed -n 's/^EDGECAP STATUS //p' "$run/console-$cycle.log")
  [ "$(jq -r .healthy <<<"$status")" = true ] || fail "the daemon is not healthy: $status"
  appended=$(jq -r .appended_seq <<<"$status")
  # A seq acked before the cut is never handed out again: the next seq is past it (under
  # "interval", past every seq that was durable when the power went).
  [ "$appended" -ge "$must_keep" ] || fail "the log restarts at $appended, below seq $must_keep that was acked (and durable)"
  grep -q '^EDGECAP STOPPED rc=0$' "$run/console-$cycle.log" || fail "the daemon did not stop with exit 0"
  grep -q '^EDGECAP VERIFY rc=0$' "$run/console-$cycle.log" \
    || fail "log verify after the daemon's recovery is not clean"
  local t0 t1
  t0=$(sed -n 's/^EDGECAP STARTING uptime=//p' "$run/console-$cycle.log")
  t1=$(sed -n 's/^EDGECAP RECOVERED uptime=//p' "$run/console-$cycle.log")
  ready_ms+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", (b - a) * 1000 }')")
  if [ "$mode" = run ]; then
    wait_console "$cycle" '^EDGECAP READY' 60
  else
    wait_console "$cycle" '^EDGECAP DONE' 30
    # Forwarding worked during the run: the broker acknowledged events.
    [ "$(jq -r .forwarded_seq <<<"$status")" -gt 0 ] || fail "nothing was ever forwarded: $status"
  fi
}

# acks_table CYCLE: "seq source value" for every complete ok reply (the k-th reply answers the
# event with value k).
acks_table() {
  awk -v src="c$1" '/^\{"ok":true,"seq":[0-9]+\}$/ { print substr($0, 18, length($0) - 18), src, NR - 1 }' \
    "$run/acks-$1.log"
}

# last_durable CYCLE: the highest durable_seq in the status samples the host has in full.
last_durable() {
  { grep -oE '"durable_seq":[0-9]+.*}$' "$run/status-$1.log" || true; } | cut -d, -f1 | cut -d: -f2 | sort -n | tail -1
}

# samples CYCLE: the complete status samples the host has.
samples() { grep -c '}$' "$run/status-$1.log" 2>/dev/null || true; }

# sync_lag_ms CYCLE: an upper bound of the longest time from an append to its durability: a
# seq first seen appended in sample j was appended after sample j-1, and was durable by the
# first sample k that shows it durable; the bound is t(k) - t(j-1).
sync_lag_ms() {
  { grep '}$' "$run/status-$1.log" || true; } | sed -nE 's/^T ([0-9.]+) .*"appended_seq":([0-9]+).*"durable_seq":([0-9]+).*$/\1 \2 \3/p' \
    | awk '{ t[NR] = $1; a[NR] = $2; d[NR] = $3 }
      END { worst = 0; k = 1
        for (j = 1; j <= NR; j++) {
          if (k < j) k = j
          while (k <= NR && d[k] < a[j]) k++
          # Never seen durable: it waited at least until the last sample (a dead syncer shows).
          t_durable = k > NR ? t[NR] : t[k]
          lag = (t_durable - t[j > 1 ? j - 1 : 1]) * 1000; if (lag > worst) worst = lag }
        printf "%d", worst }'
}

run_mode() { # sync
  local sync=$1 cycle target lag worst_lag=0
  run=$work/$sync
  mkdir -p "$run"
  truncate -s 256M "$run/data.img"
  mkfs.ext4 -q -F "$run/data.img"
  must_keep=0 ready_ms=()
  : >"$run/acked.txt"
  : >"$run/durable-acked.txt"
  echo "== sync = \"$sync\": $cuts power cuts (EDGECAP_SEED=$seed)"
  for cycle in $(seq 1 "$cuts"); do
    boot run "$cycle" "$sync"
    check_boot "$cycle" run
    target=$((RANDOM % max_acks + 1))
    local deadline=$((SECONDS + 60 * deadline_scale))
    # Under "interval" the cut also waits for two status samples, so that the host has a
    # durable seq from this boot (the first may still show only what recovery found).
    until [ "$(complete_acks "$cycle")" -ge "$target" ] \
          && { [ "$sync" = always ] || [ "$(samples "$cycle")" -ge 2 ]; }; do
      guest_alive "$cycle"
      [ $SECONDS -lt $deadline ] || fail "fewer than $target acks within $((60 * deadline_scale)) s"
      sleep 0.01
    done
    kill -KILL "$qemu_pid"
    reap "$qemu_pid" 10
    qemu_pid=
    acks_table "$cycle" >"$run/acked-$cycle.txt"
    cat "$run/acked-$cycle.txt" >>"$run/acked.txt"
    if [ "$sync" = always ]; then
      cp "$run/acked-$cycle.txt" "$run/keep-$cycle.txt"
    else
      local durable
      durable=$(last_durable "$cycle")
      awk -v d="${durable:-0}" '$1 <= d' "$run/acked-$cycle.txt" >"$run/keep-$cycle.txt"
      lag=$(sync_lag_ms "$cycle")
      [ "$lag" -le $((worst_lag)) ] || worst_lag=$lag
    fi
    cat "$run/keep-$cycle.txt" >>"$run/durable-acked.txt"
    must_keep=$(awk -v m="$must_keep" '$1 > m { m = $1 } END { print m }' "$run/keep-$cycle.txt")
    printf '  cut %3d: after %5d acks (seqs up to %s)\n' "$cycle" "$(wc -l <"$run/acked-$cycle.txt")" "$must_keep"
  done
  cycle=$((cuts + 1))
  boot check "$cycle" "$sync"
  check_boot "$cycle" check
  reap "$qemu_pid" $((30 * deadline_scale)) # the guest powers itself off after DONE
  qemu_pid=
  check_contents "$sync"
}

# check_contents SYNC: the log as stored, read out of the image without mounting it.
check_contents() {
  local sync=$1 extract=$run/extract missing reused stored acked durable_acked lost
  rm -rf "$extract"
  mkdir -p "$extract"
  debugfs -R "rdump /log $extract" "$run/data.img" >/dev/null 2>&1
  "$bin" log verify --dir "$extract/log" >"$run/verify.txt" || { cat "$run/verify.txt" >&2; fail "host verify of the final log"; }
  "$bin" log dump --dir "$extract/log" >"$run/dump.jsonl"
  jq -r 'select(.kind == "sensor") | "\(.seq) \(.source) \(.value)"' "$run/dump.jsonl" | sort >"$run/stored.txt"
  reused=$(jq -r .seq "$run/dump.jsonl" | sort | uniq -d | wc -l)
  [ "$reused" -eq 0 ] || fail "$reused seqs appear twice in the log"
  # Acked (and, under interval, durable when the power went) must be there with its value.
  missing=$(sort "$run/durable-acked.txt" | comm -23 - "$run/stored.txt" | wc -l)
  # The same seq acked in two cycles: handed out again after a cut.
  reused=$(cut -d' ' -f1 "$run/durable-acked.txt" | sort | uniq -d | wc -l)
  acked=$(wc -l <"$run/acked.txt")
  [ "$acked" -gt 0 ] || fail "no event was acknowledged: the test proved nothing"
  # Any seq acked in two cycles (under "interval" allowed only for acked events the cut lost).
  local twice_any
  twice_any=$(cut -d' ' -f1 "$run/acked.txt" | sort | uniq -d | wc -l)
  durable_acked=$(wc -l <"$run/durable-acked.txt")
  lost=$(sort "$run/acked.txt" | comm -23 - "$run/stored.txt" | wc -l)
  stored=$(wc -l <"$run/stored.txt")
  local p50
  p50=$(printf '%s\n' "${ready_ms[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  echo "sync=$sync: $cuts cuts, $acked acked, $stored sensor events stored, acked and lost: $lost" \
    "(of $durable_acked that had to survive: $missing), seqs acked twice: $reused," \
    "verify clean after each of $((cuts + 1)) recoveries, recovery (daemon start to ready) p50 ${p50} ms"
  local lag_figure=
  [ "$sync" = always ] || lag_figure=" worst_durable_lag_ms=$worst_lag interval_ms=$interval_ms"
  echo "FIGURES vm_power_cut sync=$sync cuts=$cuts acked=$acked lost=$lost had_to_survive=$durable_acked" \
    "missing=$missing seqs_acked_twice=$reused seqs_acked_twice_any=$twice_any verify_clean=$((cuts + 1))/$((cuts + 1))" \
    "recovery_p50_ms=$p50$lag_figure accel=${accel[1]} seed=$seed"
  [ "$missing" -eq 0 ] || fail "$missing acked events that had to survive are missing or changed"
  [ "$reused" -eq 0 ] || fail "$reused seqs were acked twice"
  [ "$sync" = interval ] || [ "$twice_any" -eq 0 ] || fail "$twice_any seqs were acked twice"
  if [ "$sync" = always ]; then
    [ "$lost" -eq 0 ] || fail "sync=always lost $lost acked events"
  else
    # A written event is durable within the interval, plus a sync's own time and the sampling
    # period (a status request every ~20 ms on one connection, slower under emulation).
    [ "$worst_lag" -le $((interval_ms + 500 * deadline_scale)) ] \
      || fail "an appended event took ${worst_lag} ms to become durable (interval ${interval_ms} ms)"
  fi
}

for mode in "${modes[@]}"; do
  case $mode in
    always | interval) run_mode "$mode" ;;
    *) echo "usage: $0 [always|interval]..." >&2; exit 2 ;;
  esac
done
echo "vm power cut: passed (${modes[*]})"
