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
# Not part of `tests/run`: a release build inside the image takes many minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

engine=${ENGINE:-$(command -v podman || command -v docker || true)}
[ -n "$engine" ] || { echo "smoke-test: neither podman nor docker is installed" >&2; exit 1; }
build_args=()
[ -n "${RUST_IMAGE:-}" ] && build_args+=(--build-arg "RUST_IMAGE=$RUST_IMAGE")
[ -n "${RUNTIME_IMAGE:-}" ] && build_args+=(--build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE")
isolation=()
[[ $engine == *podman ]] && isolation=(--isolation="${ISOLATION:-chroot}")

t0=$SECONDS
echo "smoke-test: building the image with $engine"
"$engine" build "${isolation[@]}" "${build_args[@]}" -f docker/Dockerfile -t herald:smoke .
echo "smoke-test: image built in $((SECONDS - t0)) s"

work=$(mktemp -d)
name="herald-smoke-$$"
cleanup() {
  "$engine" rm -f "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/config" "$work/certs" "$work/data"
# The image's user (uid 10001) owns the data directory, as the named volume would be.
chown 10001:10001 "$work/data"
port=$((20000 + RANDOM % 20000))

# A development config: dev certificate and DKIM key generated at start, one app, delivery
# captured to files on the data volume.
hash=$("$engine" run --rm -i --network=none herald:smoke app hash-password <<<"smoke-password")
cat >"$work/config/herald.toml" <<EOF
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
EOF

"$engine" run -d --name "$name" --network=host \
  -e HERALD__SMTP__SUBMISSION="127.0.0.1:$port" \
  -e HERALD__SMTP__SUBMISSIONS="127.0.0.1:$((port + 1))" \
  -e HERALD_HEALTH_PORT="$port" \
  -v "$work/config:/etc/herald" \
  -v "$work/certs:/etc/ssl/herald:ro" \
  -v "$work/data:/var/lib/herald" \
  herald:smoke >/dev/null

wait_log() {
  local needle=$1 i
  for i in $(seq 1 120); do
    "$engine" logs "$name" 2>&1 | grep -q "$needle" && return 0
    sleep 0.5
  done
  echo "smoke-test: no '$needle' in the log:" >&2
  "$engine" logs "$name" >&2 || true
  return 1
}
wait_log "herald ready"
[ "$("$engine" exec "$name" id -u)" = 10001 ] || { echo "smoke-test: not running as uid 10001" >&2; exit 1; }
echo "smoke-test: ready, running as uid 10001"

/usr/bin/python3 - "$port" <<'EOF'
import smtplib, ssl, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
s.starttls(context=ssl._create_unverified_context())   # the dev certificate
s.login("smoke", "smoke-password")
s.sendmail("app@example.test", ["someone@example.org"],
           "From: app@example.test\r\nTo: someone@example.org\r\nSubject: smoke\r\n\r\nHello.\r\n")
s.quit()
EOF
for i in $(seq 1 120); do
  captured=$(find "$work/data/captured" -type f 2>/dev/null | head -1)
  [ -n "$captured" ] && break
  sleep 0.5
done
[ -n "${captured:-}" ] || { echo "smoke-test: nothing delivered into capture_dir" >&2; exit 1; }
grep -q "^DKIM-Signature:" "$captured" || { echo "smoke-test: the delivered message is not signed" >&2; exit 1; }
echo "smoke-test: a message was accepted, signed and delivered ($captured)"

"$engine" kill -s HUP "$name" >/dev/null
wait_log "configuration reloaded"
echo "smoke-test: SIGHUP reloaded the configuration"

"$engine" stop -t 30 "$name" >/dev/null
wait_log "herald stopped"
echo "smoke-test: SIGTERM stopped herald cleanly; all checks passed in $((SECONDS - t0)) s"
