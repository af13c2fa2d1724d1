#!/usr/bin/env bash
# The soak (issue 13 item 3): tests/soak.rs, ignored by a plain `cargo test`. Usage:
#   tests/soak/run.sh [--minutes N] [--seed S]
# N defaults to 30 (100 kill -9s; a shorter run has proportionally fewer). Needs root (it mounts
# a small tmpfs as the storage filesystem) and mosquitto. Prints the figures at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes=30
seed=
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) minutes=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    *) echo "usage: $0 [--minutes N] [--seed S]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "the soak needs root (it mounts a tmpfs)" >&2; exit 1; }
export SOAK_MINUTES=$minutes
[ -z "$seed" ] || export SOAK_SEED=$seed
exec cargo test --locked --test soak -- --ignored --nocapture
