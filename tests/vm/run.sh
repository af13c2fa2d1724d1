#!/usr/bin/env bash
# Real V4L2 capture through the kernel: boots Debian's kernel under qemu (TCG) with the `vivid` driver,
# loops plate photos into /dev/video0 and runs `platecam run` on it; checks the reads on the host.
#
#   tests/vm/run.sh x86_64|aarch64        exit 0 only when every check passed
#   tests/vm/run.sh powercut              power cuts: see tests/vm/powercut.sh (x86_64, KVM if usable)
#
# Guest phases: `platecam devices` (text and --json) against vivid; one daemon run per format and size
# (GREY and YUYV at 640x480 and 1280x720); a device-loss run (vivid disconnected while streaming, then
# rmmod and insmod: the same process must log it, retry with backoff and read the next plate).
# Environment:
#   PLATECAM_BIN   the binary to test (default: x86_64 target/{release,debug}/platecam, building the
#                  debug one if missing; aarch64 target/aarch64-unknown-linux-gnu/dist/platecam, built
#                  with deploy/build.sh aarch64 if missing)
#   PHOTOS         how many sample photos to show per run (default 2; TCG inference is slow)
#   FRAMES         frames captured while a photo is shown that the daemon must recognise before the
#                  next (default 1): the photos are paced on the daemon's progress, not on seconds
#   STALL          seconds without a frame recognised before the guest gives up (default 300)
#   COMBOS         the format-size runs (default: GREY-640x480 YUYV-640x480 GREY-1280x720 YUYV-1280x720)
#   KVER           Debian kernel ABI (default 6.1.0-56); VM_CACHE cache folder (default target/vm)
#   VM_TIMEOUT     seconds before the guest is killed (default 1200; the run takes 5-10 min)
# Downloads (kernel, arm64 busybox) are cached under VM_CACHE, so reruns only boot.
set -euo pipefail

arch=${1:-} mode=capture
[ "$arch" = powercut ] && arch=x86_64 mode=powercut
case "$arch" in
  x86_64 | amd64) arch=x86_64 deb_arch=amd64 ;;
  aarch64 | arm64) arch=aarch64 deb_arch=arm64 ;;
  *) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
KVER=${KVER:-6.1.0-56}
PHOTOS=${PHOTOS:-2}
FRAMES=${FRAMES:-1}
STALL=${STALL:-300}
COMBOS=${COMBOS-GREY-640x480 YUYV-640x480 GREY-1280x720 YUYV-1280x720}
cache=$(mkdir -p "${VM_CACHE:-target/vm}" && cd "${VM_CACHE:-target/vm}" && pwd)/$arch
mkdir -p "$cache"
t0=$(date +%s)
log() { echo "[vm $arch +$(($(date +%s) - t0))s] $*" >&2; }
fail() { echo "[vm $arch] FAIL: $*" >&2; exit 1; }

# ---- host tools ---------------------------------------------------------------------------------
need=()
[ "$arch" = x86_64 ] && qemu_pkg=qemu-system-x86 || qemu_pkg=qemu-system-arm
for pair in "qemu-system-$arch:$qemu_pkg" cpio:cpio depmod:kmod xz:xz-utils gcc:gcc readelf:binutils \
  gzip:gzip; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
[ -x /bin/busybox ] || need+=(busybox-static)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev) # vfeed is linked statically
[ "$arch" = aarch64 ] && { command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross); }
# Debian's own interpreter, with Debian's PIL and numpy: `python3` first in PATH may be another
# (pyenv, a venv) that does not see the packages installed here.
py=/usr/bin/python3
"$py" -c 'import PIL, numpy' 2>/dev/null || need+=(python3 python3-pil python3-numpy)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  [ "$(id -u)" -eq 0 ] || fail "missing Debian packages: ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  "$py" -c 'import PIL, numpy' || fail "$py still cannot import PIL and numpy"
fi

# ---- kernel and guest-arch packages (cached) ------------------------------------------------------
apt_dl() { # apt_dl PACKAGE: .deb of the guest's architecture into $cache
  local pkg=$1
  ls "$cache"/"${pkg%%:*}"_*.deb >/dev/null 2>&1 && return 0
  if [ "$deb_arch" = amd64 ]; then
    (cd "$cache" && apt-get download "$pkg" 2>/dev/null)
  else
    local a=$cache/apt
    mkdir -p "$a"/state/lists/partial "$a"/cache/archives/partial "$a"/etc/preferences.d "$a"/etc/apt.conf.d
    cat >"$a"/apt.conf <<EOF
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
Dir::State "$a/state";
Dir::State::status "$a/state/status";
Dir::Cache "$a/cache";
Dir::Etc::SourceList "/dev/null";
Dir::Etc::SourceParts "$a/sources";
Dir::Etc::Parts "$a/etc/apt.conf.d";
Dir::Etc::Preferences "$a/etc/preferences";
Dir::Etc::PreferencesParts "$a/etc/preferences.d";
Debug::NoLocking "true";
EOF
    touch "$a"/state/status
    if [ ! -d "$a"/sources ]; then
      mkdir -p "$a"/sources
      cp /etc/apt/sources.list.d/debian.sources "$a"/sources/ 2>/dev/null ||
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' >"$a"/sources/debian.sources
      APT_CONFIG=$a/apt.conf apt-get update -qq >/dev/null
    fi
    (cd "$cache" && APT_CONFIG=$a/apt.conf apt-get download "$pkg" 2>/dev/null)
  fi
}
kpkg=linux-image-$KVER-$deb_arch
if ! apt_dl "$kpkg"; then
  # The archive moved on to a newer ABI: take the one the metapackage depends on now.
  a=()
  [ "$deb_arch" = amd64 ] || a=(env APT_CONFIG="$cache/apt/apt.conf")
  KVER=$("${a[@]}" apt-cache depends "linux-image-$deb_arch" 2>/dev/null |
    sed -n "s/.*Depends: linux-image-\(.*\)-$deb_arch\$/\1/p" | head -1)
  kpkg=linux-image-$KVER-$deb_arch
  [ -n "$KVER" ] && log "using $kpkg" && apt_dl "$kpkg" || fail "cannot download a Debian kernel (set KVER)"
fi
kdir=$cache/kernel-$KVER
if [ ! -d "$kdir/lib/modules/$KVER-$deb_arch" ]; then
  log "unpacking $kpkg"
  rm -rf "$kdir" && mkdir -p "$kdir"
  dpkg -x "$cache/${kpkg}"_*.deb "$kdir"
  depmod -b "$kdir" "$KVER-$deb_arch"
fi
kver=$KVER-$deb_arch
mdir=$kdir/lib/modules/$kver
if [ "$arch" = x86_64 ]; then
  kernel=$cache/vmlinux-$kver
  if [ ! -s "$kernel" ]; then # the uncompressed vmlinux boots through PVH: twice as fast
    off=$("$py" -c 'import sys; d=open(sys.argv[1],"rb").read(); print(d.find(b"\xfd7zXZ\x00"))' "$kdir/boot/vmlinuz-$kver")
    tail -c +$((off + 1)) "$kdir/boot/vmlinuz-$kver" | xz -dc >"$kernel.tmp" 2>/dev/null || true
    mv "$kernel.tmp" "$kernel"
  fi
  busybox=/bin/busybox
else
  kernel=$kdir/boot/vmlinuz-$kver
  apt_dl busybox-static || fail "cannot download busybox-static:arm64"
  [ -x "$cache/bb/bin/busybox" ] || dpkg -x "$cache"/busybox-static_*.deb "$cache/bb"
  busybox=$cache/bb/bin/busybox
fi

# ---- the binary under test, its libraries, the feeder ---------------------------------------------
if [ -z "${PLATECAM_BIN:-}" ]; then
  if [ "$arch" = x86_64 ]; then
    PLATECAM_BIN=target/release/platecam
    [ -x "$PLATECAM_BIN" ] || PLATECAM_BIN=target/debug/platecam
    [ -x "$PLATECAM_BIN" ] || { log "building target/debug/platecam"; cargo build --bin platecam >&2; }
  else
    PLATECAM_BIN=target/aarch64-unknown-linux-gnu/dist/platecam
    [ -x "$PLATECAM_BIN" ] || { log "building the aarch64 binary"; deploy/build.sh aarch64 >&2; }
  fi
fi
[ -x "$PLATECAM_BIN" ] || fail "no platecam binary at $PLATECAM_BIN"
case "$(od -An -j18 -N2 -tu2 "$PLATECAM_BIN" | tr -d ' ')" in
  62) bin_arch=x86_64 ;; 183) bin_arch=aarch64 ;; *) bin_arch=other ;;
esac
[ "$bin_arch" = "$arch" ] || fail "$PLATECAM_BIN is not an $arch binary"
host_bin=target/release/platecam
[ -x "$host_bin" ] || host_bin=target/debug/platecam
[ "$arch" = x86_64 ] && host_bin=$PLATECAM_BIN
[ -x "$host_bin" ] || { cargo build --bin platecam >&2; host_bin=target/debug/platecam; }

run=$cache/run
rm -rf "$run" && mkdir -p "$run"/share/out "$run"/share/frames "$run"/rootfs
share=$run/share
rfs=$run/rootfs
mkdir -p "$rfs"/{bin,dev,proc,sys,tmp,mnt/host,lib,lib64,mods,etc}
cp "$busybox" "$rfs/bin/busybox"
if [ "$arch" = x86_64 ]; then
  cc=gcc libdir=/lib/x86_64-linux-gnu
else
  cc=aarch64-linux-gnu-gcc libdir=/usr/aarch64-linux-gnu/lib
fi
$cc -static -O2 -Wall -o "$share/vfeed" "$here/vfeed.c"
cp "$PLATECAM_BIN" "$share/platecam"
interp=$(readelf -l "$PLATECAM_BIN" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
mkdir -p "$rfs$(dirname "$interp")"
cp -L "$libdir/$(basename "$interp")" "$rfs$interp"
for lib in $(readelf -d "$PLATECAM_BIN" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
  cp -L "$libdir/$lib" "$rfs/lib/" || fail "no $lib for $arch in $libdir"
done
mkdir -p "$share/models"
cp models/manifest.json models/*.onnx "$share/models/"

# Modules, in load order (some are built into the arm64 kernel).
mods="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci 9pnet 9pnet_virtio netfs fscache 9p
rc-core cec mc videodev videobuf2-common videobuf2-v4l2 videobuf2-memops videobuf2-vmalloc videobuf2-dma-contig
v4l2-dv-timings v4l2-tpg vivid"
# The power-cut test's disk (ext4 on virtio) and network (the broker on the host).
[ "$mode" = powercut ] && mods="$mods virtio_blk crc16 mbcache jbd2 crc32c_generic ext4 failover net_failover virtio_net"
: >"$rfs/mods/order"
for m in $mods; do
  f=$(find "$mdir/kernel" -name "$m.ko*" -o -name "${m//-/_}.ko*" | head -1)
  if [ -z "$f" ]; then
    grep -Eq "/(${m}|${m//-/_}).ko$" "$mdir/modules.builtin" || fail "module $m neither built in nor in $kpkg"
    continue
  fi
  case "$f" in
    *.xz) xz -dc "$f" >"$rfs/mods/$m.ko" ;;
    *) cp "$f" "$rfs/mods/$m.ko" ;;
  esac
  [ "$m" = vivid ] || echo "$m" >>"$rfs/mods/order"
done
[ "$arch" = x86_64 ] && console=ttyS0 || console=ttyAMA0
cat >"$rfs/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
for m in $(cat /mods/order); do insmod /mods/$m.ko || echo "insmod $m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 host /mnt/host || echo "9p mount failed"
ip link set lo up 2>/dev/null
hostname platecam-vm
cd /mnt/host
sh /mnt/host/guest.sh
rc=$?
echo "GUEST-RC=$rc"
cd /
sync
umount /mnt/host
poweroff -f
EOF
chmod +x "$rfs/init"
(cd "$rfs" && find . | cpio -o -H newc --quiet | gzip -1) >"$run/initrd.gz"
if [ "$mode" = powercut ]; then
  . "$here/powercut.sh"
  exit
fi

# ---- frames ---------------------------------------------------------------------------------------
samples=${SAMPLES:-samples}
gt=$samples/groundtruth.tsv
[ -f "$gt" ] || fail "no $gt"
plates_of() { awk -F'\t' -v f="$(basename "$1")" '$1==f {print $6}' "$gt"; }
all=()
while read -r file; do
  [ -f "$samples/$file" ] && all+=("$samples/$file")
done < <(awk -F'\t' 'NF>=6 && $1 !~ /^#/ && !seen[$1]++ {print $1}' "$gt")
[ ${#all[@]} -ge 2 ] || fail "need at least 2 sample photos with ground truth in $gt"
mkdir -p "$run/fit"
for size in 640x480 1280x720; do
  "$py" "$here/frames.py" "$run/fit" "${size%x*}" "${size#*x}" "${all[@]}"
done
# The photos shown: those our models read right on the host from the very frames the guest gets
# (both sizes), cleanest first (nothing else read), so a failure points at capture, not at the models.
# Right means kept by the daemon's default pass rule (`recognize` says so per read) from one frame:
# under TCG each frame is a pass of its own.
PLATECAM_MODELS=$root/models "$host_bin" recognize --json "$run"/fit/*.png >"$run/host-reads.jsonl" 2>/dev/null || true
mapfile -t photos < <("$py" - "$run/host-reads.jsonl" "$gt" "$((PHOTOS + 1))" "${all[@]}" <<'PY'
import collections, json, os, sys
reads, gt, n, photos = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
truth = collections.defaultdict(set)
for line in open(gt):
    f = line.rstrip("\n").split("\t")
    if len(f) >= 6 and not f[0].startswith("#"):
        truth[f[0]].add(f[5])
seen, sure = collections.defaultdict(set), collections.defaultdict(set)
for line in open(reads):
    if line.strip():
        r = json.loads(line)
        image = os.path.basename(r["image"])
        seen[image] = {p["text"] for p in r["plates"]}
        sure[image] = {p["text"] for p in r["plates"] if p["kept"]}
ranked = []
for p in photos:
    stem, base = os.path.splitext(os.path.basename(p))[0], os.path.basename(p)
    frames = [f"{stem}.{s}.png" for s in ("640x480", "1280x720")]
    if all(truth[base] <= sure[f] for f in frames):
        ranked.append((sum(len(seen[f] - truth[base]) for f in frames), photos.index(p), p))
for _, _, p in sorted(ranked)[:n]:
    print(p)
PY
)
[ ${#photos[@]} -ge 2 ] || fail "our models read fewer than 2 sample photos right on the host ($run/host-reads.jsonl)"
log "photos: ${photos[*]}"
for size in 640x480 1280x720; do
  "$py" "$here/frames.py" "$share/frames" "${size%x*}" "${size#*x}" "${photos[@]}"
done
rm -f "$share"/frames/*.png
stem() { basename "${1%.*}"; }
main_photos=("${photos[@]:0:$((${#photos[@]} - 1))}")
loss_photo=${photos[-1]}
{
  echo "PHOTOS=\"$(for p in "${main_photos[@]}"; do stem "$p"; done | tr '\n' ' ')\""
  echo "LOSS_BEFORE=\"$(stem "${main_photos[0]}")\""
  echo "LOSS_AFTER=\"$(stem "$loss_photo")\""
  echo "FRAMES=$FRAMES LATENCY=500 GAP=4 STALL=$STALL"
  echo "COMBOS=\"$COMBOS\""
} >"$share/params.sh"
cp "$here/guest.sh" "$share/guest.sh"

# ---- boot -----------------------------------------------------------------------------------------
log "booting ($(du -h "$run/initrd.gz" | cut -f1) initramfs, binary $PLATECAM_BIN)"
common=(-accel tcg -m 1024 -smp 1 -nodefaults -no-user-config -display none -serial stdio -monitor none
  -no-reboot -kernel "$kernel" -initrd "$run/initrd.gz"
  -virtfs "local,path=$share,mount_tag=host,security_model=none,id=host")
if [ "$arch" = x86_64 ]; then
  # No AVX: TCG emulates AVX2/FMA about 8 times slower than SSE (80 s against 10 s a frame here),
  # and tract picks its FMA kernels wherever the CPU has them. This test is about capture.
  qemu=(qemu-system-x86_64 -M q35 -cpu Nehalem "${common[@]}"
    -append "console=ttyS0 panic=-1 quiet loglevel=3 tsc=reliable no_timer_check mitigations=off")
else
  qemu=(qemu-system-aarch64 -M virt -cpu cortex-a72 "${common[@]}" -append "console=ttyAMA0 panic=-1 quiet loglevel=3")
fi
set +e
timeout "${VM_TIMEOUT:-1200}" "${qemu[@]}" </dev/null 2>&1 | tee "$run/console.log" | sed -u 's/^/  guest| /' >&2
set -e
log "guest finished"
guest_ok=1
grep -q '^GUEST-RC=0' "$run/console.log" || guest_ok=0

# ---- host checks: the reads in each outbox, and where the frames went -------------------------------
check_outbox() { # check_outbox NAME PHOTO...: the reads in NAME's outbox against those photos' truth
  local name=$1 cfg=$run/$1.toml
  shift
  # The host has no /dev/video0: a replay source keeps the config valid here.
  printf '[[camera]]\nname = "cam0"\nsource = "replay://%s"\n[storage]\ndir = "%s"\n' \
    "$(realpath "${photos[0]}")" "$share/out/$name/outbox" >"$cfg"
  : >"$run/$name.reads.jsonl"
  if [ ! -d "$share/out/$name/outbox" ]; then
    echo "no outbox: the daemon never ran" >"$run/$name.list.err"
  elif ! "$host_bin" outbox list --json --config "$cfg" >"$run/$name.reads.jsonl" 2>"$run/$name.list.err"; then
    sed -i '1s/^/outbox list failed: /' "$run/$name.list.err"
  fi
  # Pass: every plate in front of the camera was read. Other reads (stray text the models also read
  # on the host, a photo read in several passes) are reported, not failed: this test is about
  # capture, tests/recognize_models.rs about the models. Each line also says where the frames went
  # (the daemon logs its counts as it stops), and a failure why no read was made.
  local verdict
  verdict=$("$py" - "$run/$name.reads.jsonl" "$(for p in "$@"; do plates_of "$p"; done | sort -u | tr '\n' ' ')" \
    "$share/out/$name/platecam.log" "$run/$name.list.err" <<'PY'
import collections, json, os, re, sys
reads_file, want, log_file, list_err = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4]
reads = [json.loads(l)["plate"] for l in open(reads_file) if l.strip()]
got = collections.Counter(reads)
missing = [p for p in want if not got[p]]
c, ms = {}, []
log = open(log_file, errors="replace").read().splitlines() if os.path.exists(log_file) else []
for line in log:
    if "camera counts" in line or "pipeline counts" in line:
        c.update((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", line))
    elif "frame recognized" in line:
        ms += [int(m) for m in re.findall(r" ms=(\d+)", line)]
if c:
    each = f" ({sum(ms) / len(ms) / 1000:.1f} s each)" if ms else ""
    counts = (f"frames {c['frames']} ({c['frames_dropped']} dropped), recognised {c['frames_recognized']}{each}, "
              f"detections {c['detections']} ({c.get('boxes_not_plates', 0)} boxes not plates), reads {c['reads']} ({c['reads_lost']} lost), passes dropped: "
              f"noise {c['dropped_noise']}, low confidence {c['dropped_low_confidence']}, "
              f"implausible {c['dropped_implausible']}")
else:
    counts = "no counts: the daemon did not stop cleanly" if log else "no daemon log"
why = ""
if missing:
    dropped = {k: c.get(f"dropped_{k}", 0) for k in ("noise", "low_confidence", "implausible")}
    if not c:
        why = "the daemon's log has no counts (see the guest's lines above)"
    elif c["frames"] == 0:
        why = "no frame captured"
    elif c["frames_recognized"] == 0:
        why = "no frame recognised"
    elif c["detections"] == 0:
        why = f"no plate detected in {c['frames_recognized']} recognised frames"
    elif c["reads"] == 0 and any(dropped.values()):
        why = "every pass dropped (" + ", ".join(f"{k} {v}" for k, v in dropped.items() if v) + ")"
    elif c["reads_lost"]:
        why = f"{c['reads_lost']} read(s) lost before the outbox"
    elif not reads:
        why = "the outbox has no reads: " + open(list_err).read().strip()[:300]
    else:
        why = "the reads made were of other text"
    why = f"; why: {why}"
print(("ok" if not missing else "FAIL") + f" read {dict(got)}, truth {want}"
      + (f", missing {missing}" if missing else "") + f" | {counts}{why}")
PY
)
  log "$name: ${verdict%% *}, ${verdict#* }"
  [ "${verdict%% *}" = ok ] || bad+=("$name")
}
bad=()
for combo in $COMBOS; do
  check_outbox "$combo" "${main_photos[@]}"
done
check_outbox loss "${main_photos[0]}" "$loss_photo"
problems=()
[ "$guest_ok" = 1 ] || problems+=("guest checks failed (its FAIL lines above; console: $run/console.log, logs: $share/out)")
[ ${#bad[@]} -eq 0 ] || problems+=("wrong reads in: ${bad[*]}")
[ ${#problems[@]} -eq 0 ] || fail "$(printf '%s; ' "${problems[@]}")after $(($(date +%s) - t0))s"
log "PASS in $(($(date +%s) - t0))s"
