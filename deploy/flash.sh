#!/usr/bin/env bash
# Install platecam on a unit over SSH, start it, wait until it is ready, show its first health.
#
#   deploy/flash.sh HOST [--arch amd64|arm64] [--deb FILE] [--timeout SECONDS] [--no-health]
#
#   HOST         ssh destination (user@host, or a Host from ~/.ssh/config)
#   --arch       the unit's Debian architecture; default: asked of the unit (dpkg --print-architecture)
#   --deb FILE   package to install; default: the newest target/**/platecam_*_<arch>.deb,
#                built with deploy/package.sh <arch> when there is none
#   --timeout    seconds to wait for READY, and then for the first health message (default 90)
#   --no-health  do not wait for the first health message on the broker
#
# Steps: scp the .deb to the unit, `sudo dpkg -i`, `systemctl enable` + `restart platecam`,
# wait until the unit is active (Type=notify: that is the daemon's READY=1), print its journal,
# then subscribe once to <prefix>/<device id>/health on the broker named in the unit's
# /etc/platecam/platecam.toml (mosquitto_sub, run here or, for a broker on the unit's own
# localhost, on the unit). The remote user must be root or have passwordless sudo.
# Exit: 0 ready (and health seen unless --no-health), 1 failed, 2 usage, 78 the daemon
# refused its config or models (it is not restarted: fix /etc/platecam/platecam.toml).
set -euo pipefail

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }

host="" arch="" deb="" timeout=90 health=1
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --arch) arch=${2:?--arch needs a value}; shift 2 ;;
    --arch=*) arch=${1#--arch=}; shift ;;
    --deb) deb=${2:?--deb needs a file}; shift 2 ;;
    --deb=*) deb=${1#--deb=}; shift ;;
    --timeout) timeout=${2:?--timeout needs seconds}; shift 2 ;;
    --timeout=*) timeout=${1#--timeout=}; shift ;;
    --no-health) health=0; shift ;;
    -*) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    *)
      if [ -n "$host" ]; then echo "one HOST only" >&2; exit 2; fi
      host=$1; shift ;;
  esac
done
[ -n "$host" ] || { usage >&2; exit 2; }
case "$timeout" in '' | *[!0-9]*) echo "--timeout takes whole seconds" >&2; exit 2 ;; esac

cd "$(dirname "$0")/.."

ssh_opts=(-o BatchMode=yes -o ConnectTimeout=15)
# ssh joins its arguments into one string for the remote shell: quote each one here.
# shellcheck disable=SC2029
remote() { ssh "${ssh_opts[@]}" "$host" "$(printf '%q ' "$@")"; }
# Root commands on the unit: sudo -n fails fast instead of hanging on a password prompt.
# shellcheck disable=SC2029
remote_root() {
  local cmd
  cmd=$(printf '%q ' "$@")
  ssh "${ssh_opts[@]}" "$host" "if [ \"\$(id -u)\" -eq 0 ]; then $cmd; else sudo -n $cmd; fi"
}
log() { printf '== %s\n' "$*" >&2; }

# Which package.
if [ -z "$arch" ]; then
  arch=$(remote dpkg --print-architecture)
  log "unit architecture: $arch"
fi
case "$arch" in
  amd64 | x86_64) arch=amd64 ;;
  arm64 | aarch64) arch=arm64 ;;
  *) echo "unsupported architecture: $arch (amd64 or arm64)" >&2; exit 2 ;;
esac
if [ -z "$deb" ]; then
  deb=$(find target -name "platecam_*_${arch}.deb" -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -n 1 | cut -d' ' -f2- || true)
  if [ -z "$deb" ]; then
    log "no $arch package yet: building it (deploy/package.sh $arch)"
    deb=$(deploy/package.sh "$arch" | tail -n 1)
  fi
fi
[ -f "$deb" ] || { echo "no such package: $deb" >&2; exit 1; }
log "installing $deb on $host"

# Copy and install.
remote_deb=/tmp/$(basename "$deb")
scp "${ssh_opts[@]}" -q "$deb" "$host:$remote_deb"
remote_root dpkg -i "$remote_deb"
remote rm -f "$remote_deb" || true
remote_root systemctl daemon-reload
remote_root systemctl enable platecam.service
remote_root systemctl restart --no-block platecam.service

# Wait for READY: with Type=notify the unit stays "activating" until the daemon sends READY=1.
log "waiting up to ${timeout}s for READY"
state=unknown
deadline=$((SECONDS + timeout))
while [ "$SECONDS" -lt "$deadline" ]; do
  state=$(remote systemctl is-active platecam.service || true)
  case "$state" in
    active | failed) break ;;
  esac
  sleep 2
done

status_text=$(remote systemctl show -p StatusText --value platecam.service || true)
main_status=$(remote systemctl show -p ExecMainStatus --value platecam.service || true)
log "state: $state${status_text:+ ($status_text)}"
log "journal (last 20 lines)"
remote_root journalctl -u platecam.service -n 20 --no-pager -o short-iso || true

if [ "$state" != active ]; then
  if [ "$main_status" = 78 ]; then
    echo "platecam refused its config or models (exit 78; no restart). On the unit:" >&2
    echo "  sudo platecam check-config --config /etc/platecam/platecam.toml" >&2
    exit 78
  fi
  echo "platecam is not running ($state, last exit status ${main_status:-?})" >&2
  exit 1
fi
log "platecam is ready on $host"
[ "$health" -eq 1 ] || exit 0

# The first health message. Read the broker, prefix and device id from the unit's config
# (a simple reader: key = "value" lines under [mqtt] and [device]).
toml_get() { # section key < file
  awk -v sec="[$1]" -v key="$2" '
    /^[[:space:]]*\[/ { gsub(/[[:space:]]/, ""); insec = ($0 == sec); next }
    insec && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
      sub(/^[^=]*=[[:space:]]*/, ""); sub(/[[:space:]]*#.*$/, ""); gsub(/^"|"$/, ""); print; exit
    }'
}
config=$(remote_root cat /etc/platecam/platecam.toml)
url=$(toml_get mqtt url <<<"$config")
prefix=$(toml_get mqtt prefix <<<"$config")
device=$(toml_get device id <<<"$config")
url=${url:-mqtt://localhost:1883}
prefix=${prefix:-platecam}
if [ -z "$device" ]; then
  # The daemon's default id (device.id in docs/configuration.md): from the machine id, else the
  # one it made and kept in its storage directory.
  mid=$(remote cat /etc/machine-id 2>/dev/null || true)
  if [ -n "$mid" ] && [ "$mid" != uninitialized ]; then
    device="pc-$(printf %s "$mid" | sha256sum | cut -c1-12)"
  else
    state_dir=$(toml_get storage dir <<<"$config")
    device=$(remote_root cat "${state_dir:-/var/lib/platecam}/device-id" | tr -d '[:space:]')
  fi
fi
topic="$prefix/$device/health"

scheme=${url%%://*}
hostport=${url#*://}
hostport=${hostport%%/*}
bhost=${hostport%:*}
bport=${hostport##*:}
if [ "$bport" = "$hostport" ]; then
  if [ "$scheme" = mqtts ]; then bport=8883; else bport=1883; fi
fi
if [ "$scheme" = mqtts ] || grep -Eq '^[[:space:]]*(username|password_file)[[:space:]]*=' <<<"$config"; then
  log "the broker needs TLS or credentials: not subscribing from here. Subscribe with your own"
  log "credentials to $topic on $url, or watch: ssh $host journalctl -u platecam -f"
  exit 0
fi

sub=(mosquitto_sub -h "$bhost" -p "$bport" -C 1 -W "$timeout" -v -t "$topic")
log "first message on $topic at $url (health comes every mqtt.health_interval, default 30s)"
case "$bhost" in
  localhost | 127.* | ::1)
    # The broker is on the unit itself.
    remote "${sub[@]}" || { echo "no health message within ${timeout}s (is mosquitto-clients installed on the unit?)" >&2; exit 1; }
    ;;
  *)
    if command -v mosquitto_sub >/dev/null 2>&1; then
      "${sub[@]}" || { echo "no health message within ${timeout}s" >&2; exit 1; }
    else
      remote "${sub[@]}" || { echo "no health message within ${timeout}s (install mosquitto-clients here or on the unit)" >&2; exit 1; }
    fi
    ;;
esac
