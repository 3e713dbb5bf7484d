# shellcheck shell=bash disable=SC2034  # variables used by the scripts that source this
# Shared by cross/build.sh, cross/test-qemu.sh and cross/package.sh (sourced, not run).
# Installs what the device builds need, idempotently, on Debian 12 with only Rust installed.

# The Pi targets. ARMv6 (Pi Zero/1) has no rustup standard library here, so it is built with
# -Zbuild-std for musl through cargo-zigbuild (cross/README.md).
HOST_TARGET=$(rustc -vV | sed -n 's/^host: //p')
AARCH64=aarch64-unknown-linux-gnu
ARMV7=armv7-unknown-linux-gnueabihf
ARMV6=arm-unknown-linux-musleabihf
# Pinned so every CI run builds with the same tools.
CARGO_ZIGBUILD_VERSION=0.24.1
ZIGLANG_VERSION=0.17.1
CARGO_DEB_VERSION=3.8.0
# Where the Python tools live (under target/, so `cargo clean` resets them too).
DEVICE_TOOLS=${DEVICE_TOOLS:-$PWD/target/device-tools}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# apt_need PACKAGE...: installs the packages that are not installed yet.
apt_need() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== apt-get install ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# rustup_targets TARGET...: the rustup standard libraries for these targets.
rustup_targets() {
  local installed t
  installed=$(rustup target list --installed)
  for t in "$@"; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
  done
}

# Debian's cross linkers and C libraries for aarch64/armv7, and qemu-user to run the results.
need_gnu_cross() {
  apt_need gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross \
    qemu-user binutils
  rustup_targets "$AARCH64" "$ARMV7"
}

# The ARMv6 route: rust-src for -Zbuild-std, and cargo-zigbuild with zig from PyPI in a venv.
need_armv6_tools() {
  apt_need qemu-user binutils
  rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src
  local venv=$DEVICE_TOOLS/venv
  if ! "$venv/bin/python3" -c 'import ziglang' 2>/dev/null \
     || [ "$("$venv/bin/cargo-zigbuild" --version 2>/dev/null)" != "cargo-zigbuild $CARGO_ZIGBUILD_VERSION" ] \
     || [ "$("$venv/bin/python3" -m ziglang version 2>/dev/null)" != "$ZIGLANG_VERSION" ]; then
    # Debian's own python3 needs python3-venv for `-m venv`; a pyenv or other CPython has it.
    python3 -c 'import ensurepip' 2>/dev/null || apt_need python3-venv
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check \
      "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION" "ziglang==$ZIGLANG_VERSION"
  fi
  # cargo-zigbuild runs `python3 -m ziglang` when there is no `zig` on PATH: the venv's python3.
  export PATH="$venv/bin:$PATH"
}

# need_cargo_deb: cargo-deb from crates.io at the pinned version.
need_cargo_deb() {
  if [ "$(cargo deb --version 2>/dev/null | awk '{print $NF}')" != "$CARGO_DEB_VERSION" ]; then
    # dpkg-dev brings dpkg-shlibdeps, which cargo-deb uses for the native package's Depends.
    apt_need dpkg-dev
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
  fi
}

# The binaries cross/build.sh leaves behind.
bin_of() { echo "target/$1/release/edgecap"; }

# runner TARGET: sets RUN to the command that runs TARGET's binary on this machine: under
# qemu-user for the Pi targets (with Debian's cross sysroot for the glibc ones), directly
# for the host.
runner() {
  local bin
  bin=$(bin_of "$1")
  case $1 in
    "$AARCH64") RUN=(qemu-aarch64 -L /usr/aarch64-linux-gnu "$bin") ;;
    # cortex-a7: the Pi 2 core.
    "$ARMV7") RUN=(qemu-arm -cpu cortex-a7 -L /usr/arm-linux-gnueabihf "$bin") ;;
    # arm1176: the Pi Zero/1 core. An ARMv7 instruction is a SIGILL here, as on the device.
    "$ARMV6") RUN=(qemu-arm -cpu arm1176 "$bin") ;;
    *) RUN=("$bin") ;;
  esac
}
