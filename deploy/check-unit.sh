#!/usr/bin/env bash
# CI check of systemd/platecam.service (needs systemd >= 250 for --offline/--threshold):
#   1. systemd-analyze verify      (syntax, unknown keys, ExecStart binary present)
#   2. systemd-analyze security --offline=yes --threshold=15   (exposure <= 1.5)
#
#   deploy/check-unit.sh [UNIT_FILE]       (default: systemd/platecam.service)
#
# verify needs /usr/bin/platecam to exist. When it does not (a CI runner, a dev machine), the
# check runs on a copy of the unit whose ExecStart names $PLATECAM_BIN instead (default: the
# first of target/*/platecam found, else /bin/true); nothing else in the unit changes.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
unit=${1:-systemd/platecam.service}
threshold=15

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The file name is the unit name that systemd-analyze reports.
checked=$work/platecam.service
cp "$unit" "$checked"

if [ ! -x /usr/bin/platecam ]; then
  bin=${PLATECAM_BIN:-}
  if [ -z "$bin" ]; then
    for c in target/*/dist/platecam target/dist/platecam target/release/platecam target/debug/platecam /bin/true; do
      if [ -x "$c" ]; then
        case "$c" in /*) bin=$c ;; *) bin=$PWD/$c ;; esac
        break
      fi
    done
  fi
  echo "note: /usr/bin/platecam is not installed; verifying with ExecStart=$bin" >&2
  sed -i "s|^ExecStart=/usr/bin/platecam |ExecStart=$bin |" "$checked"
fi

status=0
echo "== systemd-analyze verify $unit"
if out=$(systemd-analyze verify "$checked" 2>&1) && [ -z "$out" ]; then
  echo "ok"
else
  # verify exits 0 on some warnings (unknown keys are only "ignoring"): treat any output as failure.
  echo "$out"
  status=1
fi

echo "== systemd-analyze security --offline=yes --threshold=$threshold $unit"
if ! systemd-analyze security --offline=yes --threshold="$threshold" --no-pager "$checked" >"$work/security.txt" 2>&1; then
  status=1
fi
grep -E '^✗|Overall exposure' "$work/security.txt" || cat "$work/security.txt"

if [ "$status" -eq 0 ]; then echo "unit checks passed"; else echo "unit checks FAILED" >&2; fi
exit "$status"
