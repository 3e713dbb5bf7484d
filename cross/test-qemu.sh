#!/usr/bin/env bash
# Runs the storage tests (unit, model, power-cut, process-kill, concurrency, corruption, edge
# cases) and the daemon's unit tests for aarch64 and armv7 under qemu-user. 32-bit ARM is the
# point: mmap lengths, usize offsets, 64-bit atomics and the time64 ABI must be right there.
#
# Cargo runs each test binary through a runner (CARGO_TARGET_<T>_RUNNER) that is qemu-user with
# Debian's cross sysroot. The process-kill test re-executes its own (ARM) binary as the child it
# kills; the kernel runs that through binfmt_misc, registered here from Debian's
# qemu-user-binfmt unless it already is. Where binfmt_misc cannot be registered (an unprivileged
# container), that one test is skipped and the script says so.
#
# Heavy tests are scaled for emulation through their own knobs (override any of them):
# EDGECAP_POWER_CUTS=5000 (100k natively), EDGECAP_MODEL_RUNS=50, EDGECAP_KILL_ROUNDS=10.
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/common.sh

need_gnu_cross
apt_need qemu-user-binfmt

export EDGECAP_POWER_CUTS=${EDGECAP_POWER_CUTS:-5000}
export EDGECAP_MODEL_RUNS=${EDGECAP_MODEL_RUNS:-50}
export EDGECAP_KILL_ROUNDS=${EDGECAP_KILL_ROUNDS:-10}

# No debuginfo in these test builds: it roughly doubles their compile and link time on two
# cores, and a failing test still prints its file:line and seed. No incremental state either:
# these builds start cold in CI.
export CARGO_PROFILE_DEV_DEBUG=false
export CARGO_INCREMENTAL=0

# QEMU_LD_PREFIX / QEMU_CPU rather than -L / -cpu: a child the test spawns inherits them.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="env QEMU_LD_PREFIX=/usr/aarch64-linux-gnu qemu-aarch64"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER="env QEMU_LD_PREFIX=/usr/arm-linux-gnueabihf QEMU_CPU=cortex-a7 qemu-arm"

# binfmt_misc entries for ARM binaries, so that an emulated process can exec another one.
binfmt=/proc/sys/fs/binfmt_misc
register_binfmt() {
  [ -e "$binfmt/register" ] || as_root mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || return 1
  local arch
  for arch in aarch64 arm; do
    if [ ! -e "$binfmt/qemu-$arch" ]; then
      as_root sh -c "cat /usr/lib/binfmt.d/qemu-$arch.conf > $binfmt/register" 2>/dev/null || return 1
    fi
    grep -qx enabled "$binfmt/qemu-$arch" || return 1
  done
}
skip=()
if register_binfmt; then
  echo "== binfmt_misc: ARM binaries run through qemu-user"
else
  echo "== binfmt_misc unavailable here: SKIPPING the process-kill test (it execs an ARM child)"
  skip=(-- --skip sigkill_never_loses_an_acked_seq)
fi

echo "== cargo test -p edgecap-storage ($AARCH64, $ARMV7) under qemu-user" \
  "(EDGECAP_POWER_CUTS=$EDGECAP_POWER_CUTS EDGECAP_MODEL_RUNS=$EDGECAP_MODEL_RUNS EDGECAP_KILL_ROUNDS=$EDGECAP_KILL_ROUNDS)"
cargo test -p edgecap-storage --target "$AARCH64" --target "$ARMV7" --no-fail-fast "${skip[@]}"

echo "== cargo test -p edgecap --no-default-features --lib ($AARCH64, $ARMV7) under qemu-user"
# The daemon's unit tests are quick even unoptimised, while its dependency tree (tokio, clap,
# rumqttc, ...) is most of this script's build time: build those dependencies at opt-level 0.
cargo test -p edgecap --no-default-features --lib --target "$AARCH64" --target "$ARMV7" --no-fail-fast \
  --config 'profile.dev.package."*".opt-level=0'

echo "cross/test-qemu.sh: storage and daemon unit tests passed on $AARCH64 and $ARMV7"
