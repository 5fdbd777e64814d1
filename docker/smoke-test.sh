#!/usr/bin/env bash
# Builds the herald image and runs it the way docker-compose.yml does (config, certificate and
# data directories mounted side by side), then checks what an operator relies on: it starts
# as the unprivileged user, answers on the submission port, accepts a message over STARTTLS +
# AUTH and delivers it (into `[delivery] capture_dir` on the data volume, so nothing leaves the
# machine), reloads on SIGHUP, and stops cleanly on SIGTERM.
#
#   docker/smoke-test.sh            # with podman (or docker) on PATH
#
# Where no registry is reachable, make the two base images locally first (e.g. with
# debootstrap) and name them: RUST_IMAGE=localhost/rust:1.95-slim-bookworm
# RUNTIME_IMAGE=localhost/debian:bookworm-slim docker/smoke-test.sh
# SKIP_BUILD=1 reuses the herald:smoke image of an earlier run. RUN_WITH=chroot runs the
# image's root file system with chroot as uid 10001 instead of starting a container (for
# sandboxes where the OCI runtime may not set resource limits).
# Not part of `tests/run`: a release build inside the image takes many minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

engine=${ENGINE:-$(command -v podman || command -v docker || true)}
[ -n "$engine" ] || { echo "smoke-test: neither podman nor docker is installed" >&2; exit 1; }
build_args=()
[ -n "${RUST_IMAGE:-}" ] && build_args+=(--build-arg "RUST_IMAGE=$RUST_IMAGE")
[ -n "${RUNTIME_IMAGE:-}" ] && build_args+=(--build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE")
isolation=() run_args=()
if [[ $engine == *podman ]]; then
  # chroot isolation builds where user namespaces are not available; the docker format keeps
  # the HEALTHCHECK; the host's limits, where a sandbox may not raise them.
  isolation=(--isolation="${ISOLATION:-chroot}" --format docker)
  run_args=(--ulimit host)
fi

t0=$SECONDS
if [ -n "${SKIP_BUILD:-}" ]; then
  echo "smoke-test: using the herald:smoke image already built"
else
  echo "smoke-test: building the image with $engine"
  "$engine" build "${isolation[@]}" "${build_args[@]}" -f docker/Dockerfile -t herald:smoke .
  echo "smoke-test: image built in $((SECONDS - t0)) s"
fi

work=$(mktemp -d)
name="herald-smoke-$$"
mode=${RUN_WITH:-engine}
pid=
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  [ "$mode" = engine ] && "$engine" rm -f "$name" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
port=$((20000 + RANDOM % 20000))
# What the image's ENV sets, with the listeners on loopback only.
env_vars=(
  HERALD_CONFIG=/etc/herald/herald.toml
  HERALD__SERVER__DATA_DIR=/var/lib/herald
  HERALD__SMTP__SUBMISSION="127.0.0.1:$port"
  HERALD__SMTP__SUBMISSIONS="127.0.0.1:$((port + 1))"
)

if [ "$mode" = chroot ]; then
  root="$work/rootfs"
  mkdir -p "$root"
  cid=$("$engine" create herald:smoke)
  "$engine" export "$cid" | tar -x -C "$root"
  "$engine" rm "$cid" >/dev/null
  # What a container runtime provides: name resolution files.
  cp /etc/resolv.conf /etc/hosts "$root/etc/"
  config_dir="$root/etc/herald"
  data_dir="$root/var/lib/herald"
  herald_cli() { chroot --userspec=10001:10001 "$root" env -i "${env_vars[@]}" /usr/local/bin/herald "$@"; }
  start_herald() {
    # exec: $! is then herald itself (chroot execs it after dropping to uid 10001).
    (exec chroot --userspec=10001:10001 "$root" env -i "${env_vars[@]}" \
      /usr/local/bin/herald serve) >"$work/herald.log" 2>&1 &
    pid=$!
  }
  herald_logs() { cat "$work/herald.log"; }
  herald_uid() { awk '/^Uid:/ {print $2}' "/proc/$pid/status"; }
  herald_signal() { kill -s "$1" "$pid"; }
else
  config_dir="$work/config"
  data_dir="$work/data"
  mkdir -p "$config_dir" "$work/certs" "$data_dir"
  herald_cli() { "$engine" run "${run_args[@]}" --rm -i --network=none herald:smoke "$@"; }
  start_herald() {
    local e args=()
    for e in "${env_vars[@]}"; do args+=(-e "$e"); done
    "$engine" run "${run_args[@]}" -d --name "$name" --network=host "${args[@]}" \
      -v "$config_dir:/etc/herald" -v "$work/certs:/etc/ssl/herald:ro" \
      -v "$data_dir:/var/lib/herald" herald:smoke >/dev/null
  }
  herald_logs() { "$engine" logs "$name" 2>&1; }
  herald_uid() { "$engine" exec "$name" id -u; }
  herald_signal() { "$engine" kill -s "$1" "$name" >/dev/null; }
fi
# The image's user (uid 10001) owns the data directory, as the named volume would be.
chown 10001:10001 "$data_dir"

# A development config: dev certificate and DKIM key generated at start, one app, delivery
# captured to files on the data volume.
hash=$(herald_cli app hash-password <<<"smoke-password")
cat >"$config_dir/herald.toml" <<CONFIG
[server]
hostname = "herald.example.test"

[tls]
cert = "/var/lib/herald/certs/dev.crt"
key = "/var/lib/herald/certs/dev.key"
allow_dev_certs = true

[apps.smoke]
password_hash = "$hash"
senders = ["@example.test"]

[dkim]
allow_dev_keys = true

[[dkim.keys]]
domain = "example.test"
selector = "dev"
algorithm = "ed25519"
file = "/var/lib/herald/keys/example.test.dev.ed25519.pem"
active = true

[delivery]
capture_dir = "/var/lib/herald/captured"
CONFIG

wait_log() {
  local needle=$1 i
  for i in $(seq 1 120); do
    herald_logs | grep -q "$needle" && return 0
    sleep 0.5
  done
  echo "smoke-test: no '$needle' in the log:" >&2
  herald_logs >&2 || true
  return 1
}
start_herald
wait_log "herald ready"
[ "$(herald_uid)" = 10001 ] || { echo "smoke-test: not running as uid 10001" >&2; exit 1; }
echo "smoke-test: ready ($mode), running as uid 10001"

/usr/bin/python3 - "$port" <<'PYTHON'
import smtplib, ssl, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
s.starttls(context=ssl._create_unverified_context())   # the dev certificate
s.login("smoke", "smoke-password")
s.sendmail("app@example.test", ["someone@example.org"],
           "From: app@example.test\r\nTo: someone@example.org\r\nSubject: smoke\r\n\r\nHello.\r\n")
s.quit()
PYTHON
captured=
for _ in $(seq 1 120); do
  captured=$(find "$data_dir/captured" -type f 2>/dev/null | head -1)
  [ -n "$captured" ] && break
  sleep 0.5
done
[ -n "$captured" ] || { echo "smoke-test: nothing delivered into capture_dir" >&2; exit 1; }
grep -q "^DKIM-Signature:" "$captured" || { echo "smoke-test: the delivered message is not signed" >&2; exit 1; }
echo "smoke-test: a message was accepted, signed and delivered ($(basename "$captured"))"

herald_signal HUP
wait_log "configuration reloaded"
echo "smoke-test: SIGHUP reloaded the configuration"

if [ "$mode" = engine ]; then
  "$engine" stop -t 30 "$name" >/dev/null
else
  herald_signal TERM
  wait "$pid" || true
  pid=
fi
wait_log "herald stopped"
echo "smoke-test: SIGTERM stopped herald cleanly; all checks passed in $((SECONDS - t0)) s"
