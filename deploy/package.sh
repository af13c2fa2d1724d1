#!/usr/bin/env bash
# Build the platecam .deb (cargo-deb) from the dist build.
#
#   deploy/package.sh amd64|arm64       (also accepts x86_64|aarch64)
#
# Runs deploy/build.sh for the architecture, writes the default config (from the built
# binary's `print-default-config`) into target/deb-staging/, then packages with cargo-deb
# (installed with `cargo install cargo-deb --locked` if missing). The LAST line of output is
# the absolute path of the .deb.
#
# Layout: /usr/bin/platecam, /usr/share/platecam/models/{detector.onnx,ocr.onnx,manifest.json},
# /etc/platecam/platecam.toml (conffile), /lib/systemd/system/platecam.service; the unit's
# StateDirectory= makes /var/lib/platecam. See [package.metadata.deb] in Cargo.toml.
set -euo pipefail

case "${1:-}" in
  arm64 | aarch64) arch=aarch64; deb_arch=arm64; target=aarch64-unknown-linux-gnu ;;
  amd64 | x86_64) arch=x86_64; deb_arch=amd64; target=x86_64-unknown-linux-gnu ;;
  -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
root=$PWD

if ! cargo deb --version >/dev/null 2>&1; then
  echo "installing cargo-deb" >&2
  cargo install cargo-deb --locked >&2
fi

bin=$(deploy/build.sh "$arch" | tail -n 1)
[ -x "$bin" ] || { echo "build did not produce a binary" >&2; exit 1; }

# The default config, as the binary itself prints it. A cross-built binary cannot run here
# unless qemu-user is installed; src/config/default.toml is what it embeds (include_str!).
staging=$root/target/deb-staging
mkdir -p "$staging"
if "$bin" print-default-config >"$staging/platecam.toml.new" 2>/dev/null; then
  echo "default config from: $bin print-default-config" >&2
elif [ "$arch" = aarch64 ] && command -v qemu-aarch64 >/dev/null 2>&1 &&
  QEMU_CPU=cortex-a72 qemu-aarch64 -L /usr/aarch64-linux-gnu "$bin" print-default-config >"$staging/platecam.toml.new"; then
  echo "default config from: qemu-aarch64 $bin print-default-config" >&2
else
  cp src/config/default.toml "$staging/platecam.toml.new"
  echo "default config from: src/config/default.toml (could not run $bin here)" >&2
fi
mv "$staging/platecam.toml.new" "$staging/platecam.toml"

# The newest glibc symbol version the binary needs (for the arm64 Depends: floor).
glibc_need=$(readelf --dyn-syms --wide "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)
echo "binary needs glibc >= ${glibc_need:-?}" >&2

variant=()
if [ "$deb_arch" = arm64 ]; then
  # Cross-built: Depends comes from [package.metadata.deb.variants.arm64], not dpkg-shlibdeps.
  floor=$(sed -n '/^\[package.metadata.deb.variants.arm64\]/,/^\[/s/.*libc6 (>= \([0-9.]*\)).*/\1/p' Cargo.toml)
  if [ -z "$floor" ] || [ "$(printf '%s\n%s\n' "$glibc_need" "$floor" | sort -V | tail -n 1)" != "$floor" ]; then
    echo "the arm64 binary needs glibc $glibc_need but Cargo.toml's arm64 variant says libc6 (>= ${floor:-?}): update it" >&2
    exit 1
  fi
  variant=(--variant arm64)
fi

# --no-strip: the dist profile already strips (and a cross strip is not needed).
cargo deb --no-build --no-strip --profile dist --target "$target" "${variant[@]}" 2>&1 |
  tee "$staging/cargo-deb.log" >&2
deb=$(tr '\r' '\n' <"$staging/cargo-deb.log" | grep -o '/[^ ]*\.deb$' | tail -n 1 || true)
if [ -z "$deb" ] || [ ! -f "$deb" ]; then echo "cargo deb did not report a .deb" >&2; exit 1; fi
case "$deb" in *_"$deb_arch".deb) ;; *) echo "warning: $deb is not named for $deb_arch" >&2 ;; esac
echo "$deb"
