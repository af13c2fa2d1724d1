# Runs inside the qemu guest (busybox sh) for `tests/vm/run.sh powercut`, as guest.sh does for the
# capture test. /mnt/host holds platecam, models, photos/, blank/ and pc.env (BOOT, PHASE, PORT,
# written by the host before each boot). The outbox lives on /dev/vda (ext4, made on the host, the
# same image on every boot). PHASE=cut: run the daemon on a looping replay until the host kills
# qemu; every "read accepted" line (logged after the append was synced) goes to the console, which
# the host keeps. PHASE=drain: run the daemon on one blank frame so it only empties the outbox,
# then list what is left into out/.
set -u
. /mnt/host/pc.env
H=/mnt/host
say() { echo "POWERCUT boot=$BOOT $*"; }
export PLATECAM_MODELS=$H/models

ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 ||
  { say "FAIL: no network"; exit 1; }
mkdir -p /data
# ext4's defaults (ordered data, barriers on): what a unit's card gets.
mount -t ext4 /dev/vda /data || { say "FAIL: cannot mount /dev/vda"; exit 1; }
say "mounted"

if [ "$PHASE" = cut ]; then
  source=replay://$H/photos
  # Each frame another photo: each is a pass of its own (the tracker checks the text).
  extra='fps = 4
hold_frames = 1
gap_frames = 0
loop = true'
  drain=1s
else
  source=replay://$H/blank
  extra='hold_frames = 1
gap_frames = 0'
  drain=120s
fi
cat >/tmp/platecam.toml <<EOF
[device]
id = "vm-powercut"
[[camera]]
name = "cam0"
source = "$source"
$extra
[mqtt]
url = "mqtt://10.0.2.2:$PORT"
drain_timeout = "$drain"
reconnect_max = "2s"
[storage]
dir = "/data/platecam"
min_free_bytes = "1 MiB"
[tracking]
# A pass per photo: the next frame (250 ms later at 4 fps on the replay's timeline) ends it.
max_gap = "200ms"
[logging]
# "frame recognized" (debug) says how long each frame took.
level = "info,platecam::pipeline=debug"
EOF

if [ "$PHASE" = cut ]; then
  say "daemon starting"
  # Through cat: the console is a tty, and the log should not carry colour codes.
  $H/platecam run --config /tmp/platecam.toml 2>&1 | cat
  say "daemon ended (it should have been cut first)"
  exit 1
fi
$H/platecam run --config /tmp/platecam.toml 2>&1 | cat
$H/platecam outbox list --json --config /tmp/platecam.toml >$H/out/final-outbox.jsonl 2>$H/out/final-outbox.err
rc=$?
$H/platecam outbox stats --config /tmp/platecam.toml
say "drained list-rc=$rc"
umount /data
exit $rc
