#!/usr/bin/env bash
# Builds the Debian packages with cargo-deb (pinned, from crates.io) from the binaries that
# cross/build.sh made (it runs build.sh first when one is missing):
#
#   target/debian/edgecap_<version>_amd64.deb   x86_64 glibc binary
#   target/debian/edgecap_<version>_arm64.deb   aarch64 glibc binary (Pi 3/4/5, 64-bit OS)
#   target/debian/edgecap_<version>_armhf.deb   static ARMv6 binary (every 32-bit Pi OS, Pi Zero/1
#                                               included: Raspberry Pi OS's armhf is ARMv6)
#
# Each holds /usr/bin/edgecap, edgecap.service, the sysusers and tmpfiles snippets, the default
# /etc/edgecap/edgecap.toml as a conffile, the man page and docs. Checks every package's
# architecture, contents, conffiles and binary, and that Depends covers the glibc symbols used.
# cross/install-check.sh then installs the amd64 one on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/common.sh

for target in "$HOST_TARGET" "$AARCH64" "$ARMV6"; do
  if [ ! -x "$(bin_of "$target")" ]; then
    echo "== $(bin_of "$target") is missing: running cross/build.sh"
    bash cross/build.sh
    break
  fi
done
need_cargo_deb

# Depends says libc6 (>= 2.34) (daemon/Cargo.toml): no glibc binary may need a newer symbol.
for target in "$HOST_TARGET" "$AARCH64"; do
  newest=$(readelf --dyn-syms -W "$(bin_of "$target")" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
  if [ "$(printf '%s\n' "$newest" GLIBC_2.34 | sort -V | tail -1)" != GLIBC_2.34 ]; then
    echo "FAIL: $target needs $newest; raise libc6 in [package.metadata.deb] depends" >&2
    exit 1
  fi
done

version=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="edgecap"))')
mkdir -p target/debian
rm -f target/debian/edgecap_*.deb

# deb_for TARGET DEBARCH MACHINE [cargo-deb options]: builds and checks one package.
deb_for() {
  local target=$1 arch=$2 machine=$3; shift 3
  echo "== cargo deb --target $target $*"
  # --no-build: the binaries are cross/build.sh's. --no-strip: the release profile already
  # strips, and the host's strip cannot handle ARM objects.
  cargo deb -p edgecap --no-build --no-strip --target "$target" --output target/debian/ "$@" >/dev/null
  local deb=target/debian/edgecap_${version}-1_${arch}.deb
  [ -f "$deb" ] || { echo "FAIL: $deb was not made" >&2; exit 1; }
  [ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || { echo "FAIL: $deb architecture" >&2; exit 1; }
  local contents
  contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
  for path in ./usr/bin/edgecap ./etc/edgecap/edgecap.toml ./usr/lib/systemd/system/edgecap.service \
    ./usr/lib/sysusers.d/edgecap.conf ./usr/lib/tmpfiles.d/edgecap.conf \
    ./usr/share/man/man1/edgecap.1.gz ./usr/share/doc/edgecap/DEPLOY.md; do
    grep -qx "$path" <<<"$contents" || { echo "FAIL: $deb lacks $path" >&2; exit 1; }
  done
  local control
  control=$(mktemp -d)
  dpkg-deb -e "$deb" "$control"
  grep -qx /etc/edgecap/edgecap.toml "$control/conffiles" || { echo "FAIL: $deb: config is not a conffile" >&2; exit 1; }
  grep -q systemd-sysusers "$control/postinst" || { echo "FAIL: $deb: postinst does not create the user" >&2; exit 1; }
  rm -rf "$control"
  # The binary inside is the one for this architecture.
  local unpacked
  unpacked=$(mktemp -d)
  dpkg-deb -x "$deb" "$unpacked"
  readelf -h "$unpacked/usr/bin/edgecap" | grep -q "Machine: *$machine" \
    || { echo "FAIL: $deb: /usr/bin/edgecap is not $machine" >&2; exit 1; }
  cmp -s "$unpacked/usr/bin/edgecap" "$(bin_of "$target")" || { echo "FAIL: $deb: binary differs from $(bin_of "$target")" >&2; exit 1; }
  rm -rf "$unpacked"
  printf '%-40s %8d bytes  Depends: %s\n' "$deb" "$(stat -c %s "$deb")" "$(dpkg-deb -f "$deb" Depends)"
}

deb_for "$HOST_TARGET" amd64 'Advanced Micro Devices X86-64'
deb_for "$AARCH64" arm64 AArch64
deb_for "$ARMV6" armhf ARM --variant static
echo "cross/package.sh: packages in target/debian/"
