# Runs inside the qemu guest (busybox sh), from tests/vm/run.sh. The host folder is /mnt/host:
# platecam, vfeed, models, frames/, params.sh; results go to out/. Exit 0 only if every check passed.
set -u
. /mnt/host/params.sh
H=/mnt/host
OUT=$H/out
export PLATECAM_MODELS=$H/models
VIVID="n_devs=1 node_types=0x101 num_inputs=1 input_types=0x3 num_outputs=1 output_types=0x1"
T0=$(date +%s)
say() { echo "[guest +$(($(date +%s) - T0))s] $*"; }
fails=0
bad() { say "FAIL: $*"; fails=$((fails + 1)); }

insmod /mods/vivid.ko $VIVID || { say "FAIL: insmod vivid"; exit 1; }
[ -e /dev/video0 ] && [ -e /dev/video1 ] || { say "FAIL: no /dev/video0 and /dev/video1"; ls /dev; exit 1; }

# ---- platecam devices ----
$H/vfeed setup 640 480 || bad "vfeed setup 640x480"
$H/platecam devices >$OUT/devices.txt 2>$OUT/devices.err || bad "platecam devices exited $?"
$H/platecam devices --json >$OUT/devices.jsonl 2>>$OUT/devices.err || bad "platecam devices --json exited $?"
cat $OUT/devices.txt
for want in 'driver: vivid' 'GREY ' 'YUYV ' '16384x8640' '59.94 fps' '/dev/video1'; do
  grep -q "$want" $OUT/devices.txt || bad "devices: no '$want'"
done
grep -q '"driver":"vivid"' $OUT/devices.jsonl || bad "devices --json: no vivid"

config() { # config NAME FORMAT W H
  mkdir -p $OUT/$1
  cat >$OUT/$1/platecam.toml <<EOF
[device]
id = "vm-$1"
[[camera]]
name = "cam0"
source = "v4l2:///dev/video0"
fps = 5
width = $3
height = $4
format = "$2"
[mqtt]
url = "mqtt://127.0.0.1:1883"
drain_timeout = "1s"
reconnect_max = "2s"
[storage]
dir = "$OUT/$1/outbox"
min_free_bytes = "1 MiB"
[tracking]
# TCG inference takes seconds a frame: keep one pass per photo (the blank between photos is longer).
max_gap = "2500ms"
[logging]
level = "info"
EOF
}

# Starts the daemon for NAME in the background (PID in $DPID) and waits until it captures.
start_daemon() {
  $H/platecam run --config $OUT/$1/platecam.toml 2>$OUT/$1/platecam.log &
  DPID=$!
  i=0
  while ! grep -q 'capture started' $OUT/$1/platecam.log; do
    i=$((i + 1))
    if [ $i -gt 120 ] || ! kill -0 $DPID 2>/dev/null; then
      bad "$1: daemon did not start capturing"; cat $OUT/$1/platecam.log; return 1
    fi
    sleep 1
  done
  say "$1: daemon capturing after ${i}s"
}

stop_daemon() { # stop_daemon NAME: SIGTERM, expect exit 0
  kill -TERM $DPID
  wait $DPID
  rc=$?
  [ $rc -eq 0 ] || bad "$1: daemon exited $rc"
  grep -E 'read accepted' $OUT/$1/platecam.log | sed 's/^/    /'
}

# Plays: blank, then each photo for HOLD s followed by a blank (the vehicle leaves), all as FORMAT WxH.
sequence() { # sequence EXT SIZE PHOTO...
  ext=$1 size=$2
  shift 2
  echo "4 $H/frames/blank.$size.$ext"
  for p in "$@"; do echo "$HOLD $H/frames/$p.$size.$ext 5 $H/frames/blank.$size.$ext"; done
}

for combo in $COMBOS; do
  fmt=${combo%-*} size=${combo#*-} w=${size%x*} h=${size#*x}
  ext=$(echo $fmt | tr A-Z a-z)
  say "$combo"
  $H/vfeed setup $w $h || { bad "$combo: vfeed setup"; continue; }
  config $combo $fmt $w $h
  start_daemon $combo || continue
  $H/vfeed play $fmt $w $h $(sequence $ext $size $PHOTOS) 2>$OUT/$combo/vfeed.log || bad "$combo: vfeed play"
  sleep 2
  stop_daemon $combo
  grep -q "format=$fmt width=$w height=$h" $OUT/$combo/platecam.log || bad "$combo: camera format not $fmt ${w}x$h"
done

# ---- device loss while streaming (unplug, then module gone and back): the same process resumes ----
say "device loss"
$H/vfeed setup 1280 720 || bad "loss: vfeed setup"
config loss YUYV 1280 720
if start_daemon loss; then
  $H/vfeed play YUYV 1280 720 $(sequence yuyv 1280x720 $LOSS_BEFORE) 0 $H/frames/blank.1280x720.yuyv 2>$OUT/loss/vfeed1.log &
  FPID=$!
  sleep $((HOLD + 6))
  # Unplug: vivid's Disconnect button unregisters the nodes under the open daemon, as a USB camera
  # pulled out (DQBUF and open answer ENODEV). vivid registers them again when the last user closes
  # them: a holder keeps one open for a while so the daemon's reopens fail and back off. Then, while
  # the daemon waits between tries, the module itself goes (the node disappears: ENOENT) and comes back.
  $H/vfeed hold &
  HPID=$!
  sleep 1
  $H/vfeed disconnect && say "vivid disconnected" || bad "vfeed disconnect"
  wait $FPID
  sleep 8
  kill -TERM $HPID; wait $HPID
  i=0
  until rmmod vivid 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 50 ] || { bad "rmmod vivid (the daemon kept it open)"; break; }; usleep 100000
  done
  [ $i -lt 50 ] && say "vivid removed"
  sleep 12 # longer than the daemon's backoff cap (10 s): it must try the vanished node at least once
  kill -0 $DPID 2>/dev/null || bad "loss: daemon died with the device"
  grep -qi 'no such file' $OUT/loss/platecam.log || bad "loss: no retry on the vanished node"
  lsmod | grep -q '^vivid ' || { insmod /mods/vivid.ko $VIVID && say "vivid back" || bad "insmod vivid again"; }
  # vivid comes back at 1280x720 on both nodes (its default timings): only the loop controls are needed.
  i=0
  while [ $i -lt 30 ] && [ "$(grep -c 'capture started' $OUT/loss/platecam.log)" -lt 2 ]; do sleep 1; i=$((i + 1)); done
  $H/vfeed ctrls || bad "loss: vfeed ctrls"
  $H/vfeed play YUYV 1280 720 $(sequence yuyv 1280x720 $LOSS_AFTER) 2>$OUT/loss/vfeed2.log || bad "loss: vfeed play after reload"
  sleep 2
  kill -0 $DPID 2>/dev/null || bad "loss: daemon not running after the reload"
  stop_daemon loss
  log=$OUT/loss/platecam.log
  grep -q 'camera lost; reopening' $log || bad "loss: no 'camera lost' log line"
  grep -q 'cannot open camera' $log || bad "loss: no retry ('cannot open camera') log line"
  [ "$(grep -c 'capture started' $log)" -ge 2 ] || bad "loss: capture did not start again"
  grep -E 'camera lost|cannot open camera|capture started' $log | sed 's/^/    /'
fi

say "done, $fails failure(s)"
[ $fails -eq 0 ]
