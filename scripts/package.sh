#!/usr/bin/env bash
# Builds the Debian packages: ${CARGO_TARGET_DIR:-target}/packages/tether_<version>_<arch>.deb.
#
#   bash scripts/package.sh                          # amd64, arm64 and armhf
#   PACKAGE_ARCHES=amd64 bash scripts/package.sh     # just one
#
# Each package holds the device build of its target (the same `cargo build` as the `cross`
# phase of .ci/run, a no-op when that has run): amd64 x86_64-unknown-linux-gnu, arm64
# aarch64-unknown-linux-musl (static), armhf armv7-unknown-linux-gnueabihf.
#
# Packaged with dpkg-deb from a staged tree: dpkg-deb is part of dpkg, on every Debian
# machine, so CI needs no `cargo install cargo-deb` (minutes of compiling on every fresh
# machine) and the maintainer scripts are plain files under packaging/deb/.
#
# Environment:
#   PACKAGE_ARCHES          Debian architectures to build (default "amd64 arm64 armhf")
#   PACKAGE_VERSION_SUFFIX  appended to Cargo.toml's version, e.g. "+ci1" for a rebuild
#   PACKAGE_CONFIG          the shipped /etc/tether/tether.toml (default config/tether.example.toml)
#   PACKAGE_SKIP_BUILD=1    package the binaries already in the target dir; fail if one is missing
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

die() {
  echo "package.sh: $*" >&2
  exit 1
}

arches=${PACKAGE_ARCHES:-amd64 arm64 armhf}
config=${PACKAGE_CONFIG:-config/tether.example.toml}
target_dir=${CARGO_TARGET_DIR:-target}
out_dir="$target_dir/packages"
maintainer="tether developers <dev@tether.invalid>"

for tool in dpkg-deb readelf gzip; do
  command -v "$tool" >/dev/null || die "$tool is missing: apt install dpkg binutils gzip"
done
[ -f "$config" ] || die "the config to ship ($config) does not exist: set PACKAGE_CONFIG to a file"

triple_of() {
  case $1 in
  amd64) echo x86_64-unknown-linux-gnu ;;
  arm64) echo aarch64-unknown-linux-musl ;;
  armhf) echo armv7-unknown-linux-gnueabihf ;;
  *) die "unknown architecture '$1' in PACKAGE_ARCHES: use amd64, arm64 or armhf" ;;
  esac
}

# readelf's machine name for each architecture, to refuse a binary built for another one.
machine_of() {
  case $1 in
  amd64) echo "Advanced Micro Devices X86-64" ;;
  arm64) echo "AArch64" ;;
  armhf) echo "ARM" ;;
  esac
}

# Cargo.toml's [package] version; a Cargo pre-release (1.2.0-rc.1) sorts before its
# release in Debian only as 1.2.0~rc.1.
cargo_version() {
  local v
  v=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)
  [ -n "$v" ] || die "no version in Cargo.toml's [package] section"
  echo "${v//-/\~}"
}

# The Depends field from the binary's dynamic section: glibc at the newest symbol version
# the binary uses; nothing for a static binary. An unknown library is an error, not a guess.
depends_of() {
  local bin=$1 lib libs=() glibc="" deps=()
  mapfile -t libs < <(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  [ ${#libs[@]} -eq 0 ] && return 0
  for lib in "${libs[@]}"; do
    case $lib in
    libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | libutil.so.1 | ld-linux*.so.* | ld64.so.*)
      glibc=yes
      ;;
    libgcc_s.so.1) deps+=("libgcc-s1") ;;
    *) die "$bin needs $lib, which has no Debian package in depends_of(): add it there" ;;
    esac
  done
  if [ -n "$glibc" ]; then
    local min
    min=$(readelf -V "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -u -V | tail -n 1)
    [ -n "$min" ] || die "$bin links glibc but names no GLIBC_ symbol version"
    deps=("libc6 (>= $min)" "${deps[@]}")
  fi
  local IFS=,
  echo "${deps[*]}" | sed 's/,/, /g'
}

# The changelog's newest entry must be this version; a rebuild with a suffix gets an entry.
changelog_for() {
  local version=$1 date=$2 top
  top=$(sed -n '1s/^tether (\([^)]*\)).*/\1/p' packaging/deb/changelog)
  if [ "$top" != "$version" ]; then
    printf 'tether (%s) unstable; urgency=medium\n\n  * Rebuild of %s.\n\n -- %s  %s\n\n' \
      "$version" "$top" "$maintainer" "$(date -u -R -d "@$date")"
  fi
  cat packaging/deb/changelog
}

stage() {
  local arch=$1 bin=$2 version=$3 root=$4 epoch=$5
  rm -rf "$root"
  install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
    "$root/usr/lib/sysusers.d" "$root/usr/share/doc/tether/examples" "$root/usr/share/lintian/overrides" \
    "$root/usr/share/man/man8"
  install -d -m 0750 "$root/etc/tether"
  install -m 0755 "$bin" "$root/usr/bin/tether"
  install -m 0644 systemd/tether.service "$root/lib/systemd/system/tether.service"
  install -m 0644 systemd/tether.sysusers "$root/usr/lib/sysusers.d/tether.conf"
  install -m 0640 "$config" "$root/etc/tether/tether.toml"
  install -m 0644 README.md "$root/usr/share/doc/tether/README.md"
  install -m 0644 config/tether.example.toml "$root/usr/share/doc/tether/examples/tether.example.toml"
  install -m 0644 packaging/deb/copyright "$root/usr/share/doc/tether/copyright"
  changelog_for "$version" "$epoch" | gzip -9 -n >"$root/usr/share/doc/tether/changelog.gz"
  chmod 0644 "$root/usr/share/doc/tether/changelog.gz"
  gzip -9 -n -c packaging/deb/tether.8 >"$root/usr/share/man/man8/tether.8.gz"
  chmod 0644 "$root/usr/share/man/man8/tether.8.gz"
  install -m 0644 packaging/deb/lintian-overrides "$root/usr/share/lintian/overrides/tether"
  install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"
  echo /etc/tether/tether.toml >"$root/DEBIAN/conffiles"
  chmod 0644 "$root/DEBIAN/conffiles"
  # Checksums of every file but the conffile (dpkg records a conffile's own).
  (cd "$root" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' |
    LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
  chmod 0644 "$root/DEBIAN/md5sums"

  local depends size
  depends=$(depends_of "$bin")
  size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  {
    echo "Package: tether"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: $maintainer"
    echo "Installed-Size: $size"
    [ -n "$depends" ] && echo "Depends: $depends"
    echo "Section: net"
    echo "Priority: optional"
    echo "Description: edge gateway tethering a building controller to a cloud hub"
    echo " tether runs unattended on a building or IoT controller: one MQTT connection"
    echo " to Azure IoT Hub or any broker, a REST relay to the controller, a durable"
    echo " outbox that never loses an accepted message, and an afLib4 UART bridge."
  } >"$root/DEBIAN/control"
  chmod 0644 "$root/DEBIAN/control"
  # Reproducible: every file dated to the commit, and dpkg-deb dates the archive members.
  find "$root" -exec touch --no-dereference -d "@$epoch" {} +
}

version="$(cargo_version)${PACKAGE_VERSION_SUFFIX:-}"
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH=$epoch

triples=()
for arch in $arches; do triples+=("$(triple_of "$arch")"); done
if [ "${PACKAGE_SKIP_BUILD:-0}" != 1 ]; then
  target_args=()
  for triple in "${triples[@]}"; do target_args+=(--target "$triple"); done
  cargo build --release --locked -p tether --bin tether "${target_args[@]}"
fi

mkdir -p "$out_dir"
for arch in $arches; do
  bin="$target_dir/$(triple_of "$arch")/release/tether"
  [ -x "$bin" ] || die "$bin is missing: build it, or run without PACKAGE_SKIP_BUILD=1"
  machine=$(readelf -h "$bin" | sed -n 's/^ *Machine: *//p')
  [ "$machine" = "$(machine_of "$arch")" ] || die "$bin is built for '$machine', not for $arch"
  root="$out_dir/stage-$arch"
  stage "$arch" "$bin" "$version" "$root" "$epoch"
  deb="$out_dir/tether_${version}_${arch}.deb"
  dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
  rm -rf "$root"
  echo "package: $deb ($(stat -c %s "$deb") bytes)"
done
