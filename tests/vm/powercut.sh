# Sourced by tests/vm/run.sh for `tests/vm/run.sh powercut`, once the kernel, the initramfs (with
# virtio disk, ext4 and network modules) and the binary are ready. Real power cuts for the outbox:
#
#   tests/vm/run.sh powercut       exit 0 only when no accepted read was lost
#
# The outbox lives on a virtio disk image (ext4 made here, `cache=none`: the guest's writes reach
# the host's file only as the guest's kernel flushes them, and its page cache dies with qemu). The
# daemon in the guest runs on a looping replay of the sample photos, the broker (mosquitto) on this
# host over qemu's user network. Each boot, once the daemon starts, qemu is killed with SIGKILL after
# a seeded random delay: a power cut for the guest. In about half the boots (seeded) the broker is
# stopped (SIGSTOP), so reads pile up undelivered in the outbox when the power goes. The guest's console carries the daemon's "read
# accepted" lines, logged only after the append was synced. After the last cut one more boot drains
# the outbox and lists what is left. A subscriber (QoS 1, persistent session, started before the
# first boot) records what reached the broker. Pass: every accepted read (by id) was delivered or is
# still in the outbox; duplicates are allowed (at-least-once), losses are not.
# Environment:
#   SEED       the random delays' seed (default: random, printed; SEED=... repeats the cut moments)
#   CUTS       power cuts (default 30)
#   CUT_MIN, CUT_MAX   a cut comes this many seconds after the daemon started (default 1 and 12
#              with KVM, 5 and 60 under TCG)
#   AWAY       the chance that the broker is away (SIGSTOP) during a boot (default 0.5)
#   ACCEL      kvm or tcg (default kvm where /dev/kvm can be opened). Nested KVM can fail or crawl
#              (a KVM emulation failure with -cpu host was seen): then ACCEL=tcg.

SEED=${SEED:-$((RANDOM * 32768 + RANDOM))}
CUTS=${CUTS:-30}
AWAY=${AWAY:-0.5}
if [ -z "${ACCEL:-}" ]; then
  ACCEL=tcg
  "$py" -c 'import os; os.close(os.open("/dev/kvm", os.O_RDWR))' 2>/dev/null && ACCEL=kvm
fi
# Under TCG the daemon needs ~6 s to capture and ~10 s a frame: cut later, so boots make reads.
if [ "$ACCEL" = kvm ]; then
  CUT_MIN=${CUT_MIN:-1} CUT_MAX=${CUT_MAX:-12}
else
  CUT_MIN=${CUT_MIN:-5} CUT_MAX=${CUT_MAX:-60}
fi
log "power cuts: SEED=$SEED CUTS=$CUTS, a cut ${CUT_MIN}-${CUT_MAX}s after the daemon starts, accel $ACCEL"
[ "$ACCEL" = kvm ] || log "TCG (no usable /dev/kvm, or ACCEL=tcg): seconds a frame"
command -v mosquitto_sub >/dev/null || fail "mosquitto_sub missing (Debian: mosquitto-clients)"
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosquitto" ] || fail "mosquitto missing"
command -v mkfs.ext4 >/dev/null || fail "mkfs.ext4 missing (Debian: e2fsprogs)"

# ---- the shared folder: photos to replay, a blank frame for the drain, the guest script ----------
mkdir -p "$share/photos" "$share/blank" "$share/models"
cp samples/*.jpg "$share/photos/"
"$py" -c 'import sys; from PIL import Image; Image.new("RGB", (640, 480)).save(sys.argv[1])' "$share/blank/blank.png"
cp "$here/powercut-guest.sh" "$share/guest.sh"

# ---- the disk, the broker, the subscriber ----------------------------------------------------------
disk=$run/outbox.img
truncate -s 512M "$disk"
mkfs.ext4 -q -F "$disk" || fail "mkfs.ext4 failed"
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n' "$port" >"$run/mosquitto.conf"
"$mosquitto" -c "$run/mosquitto.conf" >"$run/mosquitto.log" 2>&1 &
broker=$!
sub= vm=
cleanup() {
  [ -n "$vm" ] && kill -KILL "$vm" 2>/dev/null
  [ -n "$sub" ] && kill "$sub" 2>/dev/null
  kill "$broker" 2>/dev/null
  wait 2>/dev/null
}
trap cleanup EXIT
for _ in $(seq 50); do
  mosquitto_sub -h 127.0.0.1 -p "$port" -t probe -W 1 -E >/dev/null 2>&1 && break
  sleep 0.1
done
# Persistent session (-c, a fixed id, QoS 1): the broker keeps what comes while it is away.
mosquitto_sub -h 127.0.0.1 -p "$port" -q 1 -c -i powercut-check -t 'platecam/vm-powercut/reads' \
  >"$run/delivered.jsonl" 2>"$run/sub.err" &
sub=$!
sleep 1
kill -0 "$sub" 2>/dev/null || fail "the subscriber did not start: $(cat "$run/sub.err")"

# ---- boots ---------------------------------------------------------------------------------------
# Per cut: the delay, and whether the broker is away (stopped with SIGSTOP) for that boot, so the
# outbox holds undelivered reads when the power goes.
mapfile -t plan < <("$py" -c 'import random, sys
r = random.Random(int(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    print(f"{r.uniform(float(sys.argv[3]), float(sys.argv[4])):.2f} {int(r.random() < float(sys.argv[5]))}")' \
  "$SEED" "$CUTS" "$CUT_MIN" "$CUT_MAX" "$AWAY")
if [ "$ACCEL" = kvm ]; then
  cpu=(-accel kvm -cpu host -smp 2)
else
  # Nehalem: no AVX, which TCG emulates slowly (see run.sh). Two vCPUs, two frames at once.
  cpu=(-accel tcg -cpu Nehalem -smp 2)
fi
qemu=(qemu-system-x86_64 -M q35 "${cpu[@]}" -m 1024 -nodefaults -no-user-config -display none
  -serial stdio -monitor none -no-reboot -kernel "$kernel" -initrd "$run/initrd.gz"
  -append "console=ttyS0 panic=-1 quiet loglevel=3 tsc=reliable no_timer_check mitigations=off"
  -virtfs "local,path=$share,mount_tag=host,security_model=none,id=host"
  -drive "file=$disk,format=raw,if=virtio,cache=none"
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0)
start_wait=$([ "$ACCEL" = kvm ] && echo 120 || echo 900)
boot() { # boot N PHASE: starts qemu in the background (pid in $vm), console in boot-N.log
  printf 'BOOT=%s\nPHASE=%s\nPORT=%s\n' "$1" "$2" "$port" >"$share/pc.env"
  "${qemu[@]}" </dev/null >"$run/boot-$1.log" 2>&1 &
  vm=$!
}
for i in $(seq 1 "$CUTS"); do
  read -r d away <<<"${plan[$((i - 1))]}"
  [ "$away" = 1 ] && kill -STOP "$broker"
  boot "$i" cut
  waited=0
  # (The console file may not exist yet: qemu's redirection is made in the background.)
  until grep -q "POWERCUT boot=$i daemon starting" "$run/boot-$i.log" 2>/dev/null; do
    kill -0 "$vm" 2>/dev/null || fail "boot $i: the guest stopped before the daemon started (see $run/boot-$i.log)"
    grep -q "POWERCUT boot=$i FAIL" "$run/boot-$i.log" 2>/dev/null && fail "boot $i: $(grep -m1 FAIL "$run/boot-$i.log")"
    waited=$((waited + 1))
    [ "$waited" -lt $((start_wait * 10)) ] ||
      fail "boot $i: no daemon after ${start_wait}s$([ "$ACCEL" = kvm ] && echo " (nested KVM can crawl: try ACCEL=tcg)")"
    sleep 0.1
  done
  sleep "$d"
  kill -0 "$vm" 2>/dev/null || fail "boot $i: the guest stopped by itself (see $run/boot-$i.log)"
  kill -KILL "$vm"
  wait "$vm" 2>/dev/null || true
  vm=
  kill -CONT "$broker"
  n=$(grep -c 'read accepted' "$run/boot-$i.log" || true)
  found=$(sed -n 's/.*outbox open .*backlog=\([0-9]*\).*/\1/p' "$run/boot-$i.log" | head -1)
  log "cut $i/$CUTS after ${d}s$([ "$away" = 1 ] && echo ", broker away"): backlog ${found:-?} at open, $n reads accepted"
  grep -q 'panicked' "$run/boot-$i.log" && log "boot $i: the daemon panicked (see $run/boot-$i.log)"
done
log "draining"
boot drain drain
timeout "$start_wait" tail --pid="$vm" -f /dev/null || fail "the drain boot did not finish in ${start_wait}s"
vm=
grep -q 'POWERCUT boot=drain drained list-rc=0' "$run/boot-drain.log" ||
  fail "the drain boot did not list the outbox (see $run/boot-drain.log, $share/out/final-outbox.err)"
sleep 2 # the subscriber's last messages
kill "$sub"
wait "$sub" 2>/dev/null || true
sub=

# ---- the tally -----------------------------------------------------------------------------------
"$py" - "$run" "$CUTS" "$SEED" "$share/out/final-outbox.jsonl" <<'PY' || fail "accepted reads lost (SEED=$SEED)"
import collections, glob, json, os, re, sys
run, cuts, seed, left_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ansi = re.compile(r"\x1b\[[0-9;]*m")
accepted = {}  # id -> (boot, seq)
carried = 0  # reads found in the outbox at the opens after a cut
boots_with_panic = []
for path in sorted(glob.glob(os.path.join(run, "boot-*.log"))):
    boot = os.path.basename(path)[5:-4]
    for line in open(path, errors="replace"):
        line = ansi.sub("", line)
        m = re.search(r"outbox open .*backlog=(\d+)", line)
        if m:
            carried += int(m.group(1))
        if "panicked" in line:
            boots_with_panic.append(boot)
        if "read accepted" in line:
            seq, rid = re.search(r"\bseq=(\d+)", line), re.search(r"\bid=([0-9a-f-]{36})", line)
            if seq and rid:
                accepted[rid.group(1)] = (boot, int(seq.group(1)))
delivered = collections.Counter()
for line in open(os.path.join(run, "delivered.jsonl"), errors="replace"):
    if line.strip():
        try:
            delivered[json.loads(line)["id"]] += 1
        except (ValueError, KeyError):
            print(f"not a read on the broker: {line[:120]!r}")
left = {json.loads(l)["id"] for l in open(left_file) if l.strip()}
lost = sorted(set(accepted) - set(delivered) - left, key=lambda i: accepted[i][1])
dups = sum(n - 1 for n in delivered.values())
unreported = set(delivered) - set(accepted)
seqs = sorted(s for _, s in accepted.values())
print(f"tally: SEED={seed} cuts {cuts}, accepted {len(accepted)} (seq {seqs[0] if seqs else '-'}..{seqs[-1] if seqs else '-'}), "
      f"delivered {len(delivered)} distinct ({sum(delivered.values())} messages, {dups} duplicates), "
      f"still in the outbox {len(left)}, lost {len(lost)}; backlog found at the opens (summed) {carried}; "
      f"delivered but not reported accepted (cut between sync and log line) {len(unreported)}")
if boots_with_panic:
    print(f"panics in boots: {sorted(set(boots_with_panic))}")
for i in lost[:20]:
    print(f"lost: id {i} boot {accepted[i][0]} seq {accepted[i][1]}")
sys.exit(1 if lost or not accepted else 0)
PY
log "PASS in $(($(date +%s) - t0))s (SEED=$SEED)"
