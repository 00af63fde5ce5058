#!/usr/bin/env bash
# Install the Debian packages the test suite needs, but only those that are missing.
#
# Checks for: /usr/bin/chromium (Playwright drives it; never `playwright install`),
# redis-server, PostgreSQL server binaries, mariadbd/mysqld, nginx (the documented proxy
# config runs in front of a server), openssl (its test certificate), node and npm, and the
# filesystem tools the storage-fault tests mount their small disks with (mkfs.ext4 and
# e2fsck from e2fsprogs, losetup and mount from mount/util-linux; they also need root). As root it runs
# `apt-get update` once and installs what is missing; as anyone else it warns and
# carries on, and the tests that need a missing server skip with a reason.
#
# The servers are never used as system services: tests start private instances on
# free loopback ports (tests/servers.py). Services that apt may start are left alone.
# npm installs axe-core for the accessibility tests (`make axe`).
set -euo pipefail

PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" # mariadbd and nginx live in /usr/sbin

have() { command -v "$1" >/dev/null 2>&1; }
have_postgres() {
    compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || have pg_ctl
}

missing=()
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
have redis-server || missing+=(redis-server)
have_postgres || missing+=(postgresql)
have mariadbd || have mysqld || missing+=(mariadb-server)
have nginx || missing+=(nginx)
have openssl || missing+=(openssl)
have node || missing+=(nodejs)
have mkfs.ext4 && have e2fsck || missing+=(e2fsprogs)
have losetup && have mount || missing+=(mount)
have npm || missing+=(npm)

if ((${#missing[@]} == 0)); then
    exit 0
fi

if ((EUID != 0)); then
    echo "WARNING: missing system packages for tests: ${missing[*]}" >&2
    echo "WARNING: install them with: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    echo "WARNING: the tests that need them will be skipped." >&2
    exit 0
fi

echo "Installing missing system packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt/dpkg run to finish instead of failing on its lock.
apt_opts=(-o DPkg::Lock::Timeout=600)
apt-get "${apt_opts[@]}" update -q
apt-get "${apt_opts[@]}" install -y -q --no-install-recommends "${missing[@]}"
