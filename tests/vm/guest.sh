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
before=$fails
for want in 'driver: vivid' 'GREY ' 'YUYV ' '16384x8640' '59.94 fps' '/dev/video1'; do
  grep -q "$want" $OUT/devices.txt || bad "devices: no '$want'"
done
grep -q '"driver":"vivid"' $OUT/devices.jsonl || bad "devices --json: no vivid"
[ $fails -eq $before ] && say "devices: ok" || cat $OUT/devices.txt $OUT/devices.err

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
# One pass per photo while frames come faster than this. Under TCG (seconds a frame) each frame is
# a pass of its own, which reads the same: the photo does not change. The blank between two photos
# lasts longer than this (GAP), so they never share a pass.
max_gap = "2500ms"
[logging]
# The photos are paced on "frame recognized" (debug).
level = "info,platecam::pipeline=debug"
EOF
}

recognized() { grep -c 'frame recognized' $OUT/$1/platecam.log; }

# Starts the daemon for NAME in the background (PID in $DPID) and waits until it captures.
start_daemon() {
  $H/platecam run --config $OUT/$1/platecam.toml 2>$OUT/$1/platecam.log &
  DPID=$!
  i=0
  while ! grep -q 'capture started' $OUT/$1/platecam.log 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 120 ] || ! kill -0 $DPID 2>/dev/null; then
      bad "$1: daemon did not start capturing"; cat $OUT/$1/platecam.log; return 1
    fi
    sleep 1
  done
  say "$1: daemon capturing after ${i}s"
}

# One line from the daemon's account of its run (logged as it stops) and its time per frame.
summary() { # summary NAME
  log=$OUT/$1/platecam.log
  c=$(sed -n 's/.*camera counts camera=[^ ]* //p; s/.*pipeline counts //p' $log | tr '\n' ' ')
  [ -n "$c" ] || c="no counts logged (the daemon did not stop cleanly) "
  t=$(awk '/frame recognized/ && !/gated=true/ { for (i = 1; i <= NF; i++) if ($i ~ /^ms=/) { s += substr($i, 4); n++ } }
    END { if (n) printf "%.1f s a frame", s / n / 1000; else printf "no frame recognised" }' $log)
  say "$1: $c($t)"
}

stop_daemon() { # stop_daemon NAME: SIGTERM (the queued frames are recognised first), expect exit 0
  kill -TERM $DPID
  wait $DPID
  rc=$?
  [ $rc -eq 0 ] || bad "$1: daemon exited $rc"
  grep -E 'read accepted' $OUT/$1/platecam.log | sed 's/^/    /'
  summary $1
}

# Frames recognised that were captured after the wall-clock time SINCE_MS ("frame recognized" says
# when its frame was captured).
fresh() { # fresh NAME SINCE_MS
  awk -v t=$2 '/frame recognized/ { for (i = 1; i <= NF; i++) if ($i ~ /^captured_ms=/ && substr($i, 13) + 0 > t + 0) n++ }
    END { print n + 0 }' $OUT/$1/platecam.log
}

# Until the daemon has recognised FRAMES frames captured after SINCE_MS. Fails when it died, or
# recognised no frame at all for STALL s.
wait_fresh() { # wait_fresh NAME SINCE_MS WHAT
  last=-1 idle=0
  while [ $(fresh $1 $2) -lt $FRAMES ]; do
    n=$(recognized $1)
    if [ $n -gt $last ]; then last=$n idle=0; else idle=$((idle + 1)); fi
    kill -0 $DPID 2>/dev/null || { bad "$1: daemon died while $3"; return 1; }
    [ $idle -lt $STALL ] || { bad "$1: no frame recognised for ${STALL}s while $3"; return 1; }
    sleep 1
  done
}

# Starts vfeed (PID in $FPID, log in $FLOG) on a blank, then for each photo the photo and a blank,
# each shown until SIGUSR1; waits until it streams.
feed() { # feed LOG FORMAT W H PHOTO...
  FLOG=$1 fmt=$2 w=$3 h=$4 IMG=0
  shift 4
  ext=$(echo $fmt | tr A-Z a-z)
  blank=$H/frames/blank.${w}x$h.$ext
  $H/vfeed play $fmt $w $h 0 $blank $(for p in "$@"; do echo "0 $H/frames/$p.${w}x$h.$ext 0 $blank"; done) 2>$FLOG &
  FPID=$!
  i=0
  until grep -q 'vfeed: streaming' $FLOG 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 100 ] || ! kill -0 $FPID 2>/dev/null; then bad "vfeed did not stream"; cat $FLOG; return 1; fi
    usleep 100000
  done
}

# Moves vfeed on to its next image; SWITCHED: the wall-clock ms at which it did (vfeed logs it).
next_image() {
  IMG=$((IMG + 1))
  kill -USR1 $FPID
  i=0 SWITCHED=
  while [ -z "$SWITCHED" ]; do
    SWITCHED=$(sed -n "s/^vfeed: image $IMG at .* wall_ms=\([0-9]*\)$/\1/p" $FLOG)
    [ -n "$SWITCHED" ] && break
    i=$((i + 1))
    [ $i -lt 100 ] || { bad "vfeed did not move on to image $IMG"; SWITCHED=0; return 1; }
    usleep 100000
  done
}

# Shows vfeed's next image (PHOTO) until the daemon has recognised FRAMES frames captured while it
# was in front of the camera, then the blank after it for GAP s (longer than max_gap: the pass
# ends). Pacing on frames recognised, not on seconds, holds however slowly the host emulates the
# guest (frames recognised late were captured early: the live queue keeps the newest ones). LATENCY
# ms pass before the photo reaches the camera (vfeed's and vivid's buffers).
show() { # show NAME PHOTO
  t=$(date +%s)
  next_image
  wait_fresh $1 $((SWITCHED + LATENCY)) "showing $2"
  r=$?
  next_image
  say "$1: $2 shown for $(($(date +%s) - t))s"
  sleep $GAP
  return $r
}

for combo in $COMBOS; do
  fmt=${combo%-*} size=${combo#*-} w=${size%x*} h=${size#*x}
  say "$combo"
  $H/vfeed setup $w $h || { bad "$combo: vfeed setup"; continue; }
  config $combo $fmt $w $h
  start_daemon $combo || continue
  if feed $OUT/$combo/vfeed.log $fmt $w $h $PHOTOS; then
    for p in $PHOTOS; do show $combo $p || break; done
  fi
  stop_daemon $combo
  kill -TERM $FPID 2>/dev/null
  wait $FPID || bad "$combo: vfeed play failed"
  grep -q "format=$fmt width=$w height=$h" $OUT/$combo/platecam.log || bad "$combo: camera format not $fmt ${w}x$h"
done

# ---- device loss while streaming (unplug, then module gone and back): the same process resumes ----
say "device loss"
$H/vfeed setup 1280 720 || bad "loss: vfeed setup"
config loss YUYV 1280 720
if start_daemon loss; then
  feed $OUT/loss/vfeed1.log YUYV 1280 720 $LOSS_BEFORE && show loss $LOSS_BEFORE
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
  feed $OUT/loss/vfeed2.log YUYV 1280 720 $LOSS_AFTER && show loss $LOSS_AFTER
  kill -0 $DPID 2>/dev/null || bad "loss: daemon not running after the reload"
  stop_daemon loss
  kill -TERM $FPID 2>/dev/null
  wait $FPID || bad "loss: vfeed play after the reload failed"
  log=$OUT/loss/platecam.log
  grep -q 'camera lost; reopening' $log || bad "loss: no 'camera lost' log line"
  grep -q 'cannot open camera' $log || bad "loss: no retry ('cannot open camera') log line"
  [ "$(grep -c 'capture started' $log)" -ge 2 ] || bad "loss: capture did not start again"
  grep -E 'camera lost|cannot open camera|capture started' $log | sed 's/^/    /'
fi

say "done, $fails failure(s)"
[ $fails -eq 0 ]
