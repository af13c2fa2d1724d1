#!/usr/bin/env bash
# Check that the aarch64 build reads the same plates as the x86_64 build.
#
#   deploy/check-aarch64.sh [IMAGE...]        (default: samples/*.jpg samples/*.png)
#
# Runs `platecam recognize --json` with the x86_64 dist build natively and with the aarch64 dist
# build under qemu-user (QEMU_CPU=cortex-a72, the NEON path real units take; qemu's default CPU
# would send tract down its SVE path), then compares the plate texts image by image.
# Exit 0 only when every image gives the same plates (and at least one image was read).
# Builds missing binaries with deploy/build.sh; override with X86_BIN=... ARM_BIN=....
# PLATECAM_MODELS=dir (default: models/) picks the models; PLATECAM_CONFIG=file passes --config.
# Timings under qemu mean nothing; they are printed only to show the run completed.
set -euo pipefail

case "${1:-}" in -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
cd "$(dirname "$0")/.."

if [ $# -gt 0 ]; then
  images=("$@")
else
  shopt -s nullglob
  images=(samples/*.jpg samples/*.jpeg samples/*.png)
  shopt -u nullglob
fi
if [ ${#images[@]} -eq 0 ]; then
  echo "no images (samples/*.jpg is empty): pass some as arguments" >&2
  exit 1
fi

target_dir=${CARGO_TARGET_DIR:-target}
x86=${X86_BIN:-$target_dir/x86_64-unknown-linux-gnu/dist/platecam}
arm=${ARM_BIN:-$target_dir/aarch64-unknown-linux-gnu/dist/platecam}
[ -x "$x86" ] || x86=$(deploy/build.sh x86_64 | tail -n 1)
[ -x "$arm" ] || arm=$(deploy/build.sh aarch64 | tail -n 1)

if ! command -v qemu-aarch64 >/dev/null 2>&1; then
  if [ "${NO_APT:-0}" = 1 ]; then echo "qemu-aarch64 missing (apt-get install qemu-user)" >&2; exit 1; fi
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq qemu-user >&2
fi

# Both read the repository's models (not whatever is installed in /usr/share/platecam).
export PLATECAM_MODELS=${PLATECAM_MODELS:-$PWD/models}
args=(recognize --json)
[ -z "${PLATECAM_CONFIG:-}" ] || args+=(--config "$PLATECAM_CONFIG")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "x86_64 : $x86 ($(stat -c %s "$x86") bytes)"
echo "aarch64: $arm ($(stat -c %s "$arm") bytes), $(file -b "$arm" 2>/dev/null | cut -d, -f1-2 || true)"

t0=$EPOCHREALTIME
"$x86" "${args[@]}" "${images[@]}" >"$work/x86.jsonl"
t1=$EPOCHREALTIME
QEMU_CPU=cortex-a72 qemu-aarch64 -L /usr/aarch64-linux-gnu "$arm" "${args[@]}" "${images[@]}" >"$work/arm.jsonl"
t2=$EPOCHREALTIME
awk -v a="$t0" -v b="$t1" -v c="$t2" -v n="${#images[@]}" \
  'BEGIN { printf "x86_64 native: %.1f s; aarch64 under qemu: %.1f s (%d images)\n", b - a, c - b, n }'

python3 - "$work/x86.jsonl" "$work/arm.jsonl" <<'EOF'
import json, os, sys

def load(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            out[os.path.basename(r["image"])] = r
    return out

x86, arm = load(sys.argv[1]), load(sys.argv[2])
same = 0
diff = 0
max_dconf = 0.0
print(f"{'image':<28} {'x86_64':<24} {'aarch64':<24}")
for name in sorted(set(x86) | set(arm)):
    a = [p["text"] for p in x86.get(name, {}).get("plates", [])]
    b = [p["text"] for p in arm.get(name, {}).get("plates", [])]
    ok = name in x86 and name in arm and a == b
    if ok:
        same += 1
        for pa, pb in zip(x86[name]["plates"], arm[name]["plates"]):
            max_dconf = max(max_dconf, abs(pa["confidence"] - pb["confidence"]))
    else:
        diff += 1
    print(f"{name:<28} {','.join(a) or '-':<24} {','.join(b) or '-':<24} {'same' if ok else 'DIFFERENT'}")
print(f"{same} images read the same, {diff} differ; largest confidence difference {max_dconf:.4f}")
sys.exit(0 if diff == 0 and same > 0 else 1)
EOF
