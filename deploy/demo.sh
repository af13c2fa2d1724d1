#!/usr/bin/env bash
# The README's first command: on a fresh Debian machine, install what platecam needs, build it,
# start a local mosquitto, replay the sample photos in samples/ through the daemon, and print the
# reads as they arrive at the broker. Ends when the replay has been delivered.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
[ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "Rust is needed: https://rustup.rs (then run this again)" >&2
  exit 1
fi

# The dev profile optimises every dependency (tract, image, ...), so inference runs at full speed,
# and `cargo test` afterwards reuses the same build.
cargo build --locked
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" > "$work/mosquitto.conf"
/usr/sbin/mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
broker=$!
trap 'kill $broker $sub 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 0.5

sed -e "s|@PORT@|$port|" -e "s|@SAMPLES@|$PWD/samples|" -e "s|@STATE@|$work/state|" \
  deploy/demo.toml > "$work/platecam.toml"
echo "== reads arriving at mqtt://127.0.0.1:$port (topic platecam/demo-unit/reads)"
mosquitto_sub -p "$port" -q 1 -t 'platecam/demo-unit/reads' -F '%p' &
sub=$!
sleep 0.3
./target/debug/platecam run --config "$work/platecam.toml"
sleep 0.5
