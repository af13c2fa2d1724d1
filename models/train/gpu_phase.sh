#!/usr/bin/env bash
# A training phase on a GPU machine that has torch but no network and none of our fonts (the
# lent machines of models/README.md, "A GPU phase"): training there, everything else here.
#
#   models/train/gpu_phase.sh fonts                    # here: copy the generator's fonts to .fonts/
#   models/train/gpu_phase.sh train TASKS MINUTES LR   # there, .fonts carried: e.g. ocr 8 1.5e-4
#
# `train` continues the committed weights (--init-onnx models, fresh sample indices, the phase
# recorded in the checkpoints) on CUDA with every core but two rendering samples, and leaves
# ocr.pt, det.pt and train.log in $OUT (the folder whose files come back). Export and check them
# here: make_models.py --skip-train --init-onnx models --work DIR --out DIR/models ...
# PYTHON: the Python with the training requirements (default python3; here /opt/train-venv/bin/python3).
# PLATECAM_TRAIN_DEVICE=cpu runs `train` here, to try the script before a machine is lent.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-python3}

case "${1:-}" in
fonts)
    mkdir -p .fonts
    grep -qx '/.fonts/' .git/info/exclude 2>/dev/null || echo '/.fonts/' >>.git/info/exclude
    "$python" -c '
import sys
sys.path.insert(0, "models/train")
import synth
paths = synth.font_paths()
names = sorted(set(synth.SMALL_FONTS + synth.EU_FONTS + synth.BR_FONTS))
missing = [n for n in names if n not in paths]
if missing:
    sys.exit("fonts not installed here: %s (models/README.md, Regenerate)" % " ".join(missing))
print("\n".join(paths[n] for n in names))
' | while read -r f; do cp "$f" .fonts/; done
    echo "fonts in .fonts/: $(ls .fonts | wc -l) files, $(du -sh .fonts | cut -f1)"
    ;;
train)
    tasks=${2:?tasks: ocr, det or det,ocr} minutes=${3:?minutes} lr=${4:?peak learning rate}
    : "${OUT:?OUT: the folder whose files come back}"
    [ -d .fonts ] || { echo "no .fonts/: run '$0 fonts' here and carry .fonts" >&2; exit 2; }
    export PLATECAM_FONT_DIRS="$PWD/.fonts"
    cores=$(nproc)
    workers=$((cores > 3 ? cores - 2 : 1))
    work=$(mktemp -d)
    case "$tasks" in
    *det*ocr* | *ocr*det*) ocr_w=$((workers / 2)) det_w=$((workers - workers / 2)) ;;
    *) ocr_w=$workers det_w=$workers ;;
    esac
    device=${PLATECAM_TRAIN_DEVICE:-cuda}
    "$python" models/train/make_models.py --device "$device" --init-onnx models --tasks "$tasks" \
        --minutes "$minutes" --lr "$lr" --precision bf16 --ocr-workers "$ocr_w" --det-workers "$det_w" \
        --train-only --work "$work" 2>&1 | tee "$OUT/train.log"
    cp "$work/ocr.pt" "$work/det.pt" "$OUT/"
    ;;
*)
    sed -n '2,13p' "$0" >&2
    exit 2
    ;;
esac
