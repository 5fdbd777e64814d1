# shellcheck shell=bash
# The test environment, sourced by tests/run and .ci/run: the Debian packages the tests use,
# a function that installs the missing ones, and the compiler flags every build shares.

# Debian 12 packages the test suite needs. Add a line here when a test needs another tool.
TEST_PACKAGES=(
  mold              # the linker in the RUSTFLAGS below
  dnsutils          # dig: cross-checks the test DNS server and herald's DNS listener
  bind9-utils       # named-checkzone: the zone-file output loads in BIND
  openssl           # openssl: key files made the way an operator makes them
  python3-dkim      # dkimpy: the independent DKIM verifier
  python3-dnspython # dkimpy's DNS
  python3-nacl      # dkimpy's Ed25519
  chromium          # headless browser for the web UI tests
  chromium-driver   # WebDriver for the /dmarc page test
  systemd           # systemd-analyze verify checks config/herald.service
  util-linux        # script: a pseudo-terminal for the hash-password prompt test
  postgresql        # PostgreSQL 15 (initdb, postgres, psql): the cluster tests' shared database
  pebble            # Let's Encrypt's test ACME server: herald's [web] certificates (tests/support/pebble.rs)
  curl              # an independent HTTPS client for the [web] listener's certificate and pages
  fuse3             # fusermount3 and /dev/fuse: the lazy file system of the power-cut tests (tests/support/lazyfs.rs)
)

# One set of flags for every build (clippy, tests, engineers' machines), so nothing is compiled
# twice for a flag change. mold is opt-in here rather than in .cargo/config.toml, so that
# `cargo run` works on a machine with only the Rust toolchain.
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-fuse-ld=mold"

# Installs the TEST_PACKAGES that are missing (apt-get update once, then one install). Needs
# root (or password-less sudo); without it, says what to install and returns 1. Never uses pip:
# the Python modules come from Debian's packages, into Debian's /usr/bin/python3.
install_test_packages() {
  local pkg installed missing=() sudo=()
  if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "tests: not a Debian system; install these packages or your system's equivalents:" \
      "${TEST_PACKAGES[*]}" >&2
    return 0
  fi
  installed=$'\n'$(dpkg-query -W -f='${db:Status-Abbrev}${Package}\n' "${TEST_PACKAGES[@]}" \
    2>/dev/null | sed -n 's/^ii *//p' || true)$'\n'
  for pkg in "${TEST_PACKAGES[@]}"; do
    [[ $installed == *$'\n'"$pkg"$'\n'* ]] || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo)
    else
      echo "tests: missing Debian packages: ${missing[*]}" >&2
      echo "tests: install them as root:  apt-get install ${missing[*]}" >&2
      echo "tests: (or run tests/run as root, which installs them)" >&2
      return 1
    fi
  fi
  echo "tests: installing Debian packages: ${missing[*]}" >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" || return 1
}
