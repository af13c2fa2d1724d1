#!/usr/bin/env bash
# Build platecam's `dist` profile (LTO fat, 1 codegen unit, stripped, panic=abort) for a unit,
# without Docker. For aarch64 it cross-compiles with Debian's gcc-aarch64-linux-gnu.
#
#   deploy/build.sh aarch64|x86_64      (also accepts arm64|amd64)
#
# The LAST line of output is the absolute path of the built binary.
# Environment: CARGO_TARGET_DIR is honoured; NO_APT=1 skips installing missing Debian packages.
set -euo pipefail

usage() {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
  aarch64 | arm64) target=aarch64-unknown-linux-gnu ;;
  x86_64 | amd64) target=x86_64-unknown-linux-gnu ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
root=$PWD

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

apt_install() {
  local need=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "${NO_APT:-0}" = 1 ]; then
    echo "missing Debian packages: ${need[*]} (NO_APT=1 set)" >&2
    exit 1
  fi
  echo "installing: ${need[*]}" >&2
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need[@]}" >&2
}

# The v4l crate runs bindgen on every build host.
pkgs=(libclang-dev)
command -v cc >/dev/null 2>&1 || pkgs+=(build-essential)

if [ "$target" = aarch64-unknown-linux-gnu ]; then
  pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
  apt_install "${pkgs[@]}"
  if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    rustup target add "$target" >&2
  fi
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
  export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
  # bindgen (v4l) and cc-built C (ring): point clang at the cross sysroot's headers.
  export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--target=aarch64-linux-gnu --sysroot=/usr/aarch64-linux-gnu -I/usr/aarch64-linux-gnu/include"
else
  apt_install "${pkgs[@]}"
fi

start=$(date +%s)
cargo build --locked --profile dist --target "$target" >&2
end=$(date +%s)

target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$target_dir" in /*) ;; *) target_dir=$root/$target_dir ;; esac
bin=$target_dir/$target/dist/platecam
[ -x "$bin" ] || { echo "build finished but $bin is missing" >&2; exit 1; }
echo "built $target in $((end - start)) s: $(stat -c %s "$bin") bytes" >&2
echo "$bin"
