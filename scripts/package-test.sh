#!/usr/bin/env bash
# Installs, upgrades, removes and purges the amd64 Debian package on this machine, as root
# (the `package` phase of .ci/run). It installs only where no tether is installed, and
# purges what it installed on every exit, failures included, leaving the machine as it was.
#
#   bash scripts/package-test.sh     # builds with scripts/package.sh (a no-op cargo build
#                                    # after the cross phase), then tests
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

fail() {
  echo "package-test: FAILED: $*" >&2
  exit 1
}
step() { echo "package-test: $*"; }

[ "$(id -u)" = 0 ] || fail "must run as root: it installs the package with dpkg -i"
status=$(dpkg-query -W -f='${db:Status-Abbrev}' tether 2>/dev/null || true)
[ -z "$status" ] || [ "$status" = "un " ] ||
  fail "a tether package is already on this machine (dpkg status '$status'); this test installs and purges its own: run it where none is installed"
for path in /usr/bin/tether /etc/tether /var/lib/tether /lib/systemd/system/tether.service; do
  [ ! -e "$path" ] || fail "$path exists but no tether package is installed: not touching another tether installation"
done

work=$(mktemp -d)
user_existed=no
getent passwd tether >/dev/null && user_existed=yes
installed=no
cleanup() {
  local rc=$?
  if [ "$installed" = yes ]; then
    dpkg --purge tether >/dev/null || echo "package-test: cleanup: dpkg --purge tether failed" >&2
  fi
  # Purging keeps the system user (Debian practice); the user this test caused goes too.
  if [ "$user_existed" = no ] && getent passwd tether >/dev/null; then
    userdel tether || echo "package-test: cleanup: userdel tether failed" >&2
  fi
  if getent group tether >/dev/null && [ "$user_existed" = no ]; then
    groupdel tether 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'fail "line $LINENO: $BASH_COMMAND"' ERR

# Owner, group and mode of one path, e.g. expect_stat /etc/tether root:tether 750.
expect_stat() {
  local got
  got=$(stat -c '%U:%G %a' "$1") || fail "$1 is missing"
  [ "$got" = "$2 $3" ] || fail "$1 is $got, expected $2 $3"
}

check_installed() {
  local version=$1 got
  got=$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}' tether)
  [ "$got" = "ii  $version" ] || fail "dpkg says '$got' for tether, expected 'ii  $version'"
  expect_stat /usr/bin/tether root:root 755
  expect_stat /lib/systemd/system/tether.service root:root 644
  expect_stat /usr/lib/sysusers.d/tether.conf root:root 644
  expect_stat /etc/tether root:tether 750
  expect_stat /etc/tether/tether.toml root:tether 640
  expect_stat /var/lib/tether tether:tether 750
  for doc in README.md copyright changelog.gz examples/tether.example.toml; do
    expect_stat "/usr/share/doc/tether/$doc" root:root 644
  done
  expect_stat /usr/share/man/man8/tether.8.gz root:root 644
  dpkg-query -W -f='${Conffiles}\n' tether | grep -q '^ /etc/tether/tether.toml [0-9a-f]\{32\}$' ||
    fail "/etc/tether/tether.toml is not a conffile: $(dpkg-query -W -f='${Conffiles}' tether)"
  local uid shell
  uid=$(getent passwd tether | cut -d: -f3)
  shell=$(getent passwd tether | cut -d: -f7)
  [ "$uid" -lt 1000 ] || fail "the tether user has uid $uid, not a system uid"
  case $shell in */nologin | /bin/false) ;; *) fail "the tether user has a login shell ($shell)" ;; esac
  got=$(tether --version) || fail "tether --version failed"
  [ "$got" = "tether ${version%%[+~]*}" ] || [ "$got" = "tether $version" ] ||
    fail "tether --version says '$got' for package $version"
  # As the service's user: proves the tether group can read its config.
  runuser -u tether -- tether check-config -c /etc/tether/tether.toml >/dev/null ||
    fail "tether check-config -c /etc/tether/tether.toml failed as the tether user"
  if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify /lib/systemd/system/tether.service ||
      fail "systemd-analyze verify rejects the installed unit"
  fi
}

version=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)
version=${version//-/\~}
out_dir=${CARGO_TARGET_DIR:-target}/packages

step "building tether_${version}_amd64.deb and its rebuild ${version}+ci1 with a changed shipped config"
PACKAGE_ARCHES=amd64 bash scripts/package.sh
cp config/tether.example.toml "$work/tether.toml"
echo '# A line the +ci1 rebuild adds, so dpkg sees a new shipped config.' >>"$work/tether.toml"
PACKAGE_ARCHES=amd64 PACKAGE_VERSION_SUFFIX=+ci1 PACKAGE_CONFIG="$work/tether.toml" PACKAGE_SKIP_BUILD=1 \
  bash scripts/package.sh
deb1="$out_dir/tether_${version}_amd64.deb"
deb2="$out_dir/tether_${version}+ci1_amd64.deb"

step "dpkg -i $deb1"
installed=yes
dpkg -i "$deb1"
check_installed "$version"
tether check-config -c /etc/tether/tether.toml
wants=/etc/systemd/system/multi-user.target.wants/tether.service
[ ! -e "$wants" ] || fail "a fresh install enabled the service (with the example config)"
# What the device owner does once the config is edited; without systemd as PID 1 this
# only makes the symlink, which is what the upgrade must keep.
enabled=no
if command -v systemctl >/dev/null; then
  systemctl enable tether.service
  [ -L "$wants" ] || fail "systemctl enable tether.service made no $wants"
  enabled=yes
else
  step "no systemctl here: not checking that an upgrade keeps the service enabled"
fi

step "editing /etc/tether/tether.toml and queuing state, then upgrading to ${version}+ci1"
sed -i 's/^device_id = .*/device_id = "edited-by-package-test"/' /etc/tether/tether.toml
grep -q '^device_id = "edited-by-package-test"$' /etc/tether/tether.toml || fail "could not edit the config"
runuser -u tether -- sh -c 'echo queued >/var/lib/tether/outbox-marker'
# What an unattended `apt upgrade` does: keep the edited config, ship the new one beside it.
dpkg --force-confdef --force-confold -i "$deb2" </dev/null
check_installed "${version}+ci1"
grep -q '^device_id = "edited-by-package-test"$' /etc/tether/tether.toml ||
  fail "the upgrade overwrote the edited /etc/tether/tether.toml"
cmp -s /etc/tether/tether.toml.dpkg-dist "$work/tether.toml" ||
  fail "the upgrade did not leave the new shipped config as /etc/tether/tether.toml.dpkg-dist"
[ -f /var/lib/tether/outbox-marker ] || fail "the upgrade lost /var/lib/tether/outbox-marker"
[ "$enabled" = no ] || [ -L "$wants" ] || fail "the upgrade disabled the service the owner had enabled"

step "dpkg -r tether: the binary goes, config and state stay"
dpkg -r tether
got=$(dpkg-query -W -f='${db:Status-Abbrev}' tether)
[ "$got" = "rc " ] || fail "after dpkg -r, dpkg says '$got', expected 'rc ' (config-files)"
[ ! -e /usr/bin/tether ] || fail "dpkg -r left /usr/bin/tether"
[ ! -e /lib/systemd/system/tether.service ] || fail "dpkg -r left the unit"
grep -q '^device_id = "edited-by-package-test"$' /etc/tether/tether.toml || fail "dpkg -r lost the edited config"
[ "$(cat /var/lib/tether/outbox-marker)" = queued ] || fail "dpkg -r lost the state in /var/lib/tether"

step "dpkg -P tether: config and state go"
dpkg -P tether
installed=no
got=$(dpkg-query -W -f='${db:Status-Abbrev}' tether 2>/dev/null || true)
[ -z "$got" ] || [ "$got" = "un " ] || fail "after dpkg -P, dpkg still knows tether ('$got')"
for path in /etc/tether /var/lib/tether /usr/share/doc/tether "$wants"; do
  [ ! -e "$path" ] && [ ! -L "$path" ] || fail "dpkg -P left $path"
done

step "OK: install, upgrade with the edited config kept, remove (state kept), purge"
