#!/usr/bin/env python3
"""How fast this machine trains the reader and the detector, fp32 against bf16 autocast, and how
fast one process renders their samples (training runs at the slower of the two).

  /opt/train-venv/bin/python3 models/eval/train_speed.py [--threads 1] [--rounds 2] [--steps 6]

A training step is train.py's (forward, loss, backward, AdamW) on random inputs of the real shapes:
the committed reader (64 rows, deep) at batch 128 on 64x128 crops with CTC, the detector at batch 8 on 320x416 scenes with
its focal and L1 losses (train.py's ctc_loss and det_loss). Each round runs both precisions of
both nets, so both precisions see the same machine load; each timing is the mean of --steps steps after two warm-up steps. Rendering is
synth.ocr_sample and synth.scene_sample in this process. Needs models/train/requirements.txt and
the generator's fonts.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train"))
import synth  # noqa: E402
from nets import ALPHABET, OCR, Detector  # noqa: E402
from train import DET_TRAIN_H, DET_TRAIN_W, OCR_W, ctc_loss, det_loss, det_targets  # noqa: E402


def reader_step(model):
    x = torch.rand(128, 1, 64, OCR_W)
    y = torch.randint(0, len(ALPHABET) - 1, (128, 9))

    def loss():
        return ctc_loss(model(x).float(), y)
    return loss, 128


def detector_step(model):
    _, boxes = synth.scene_sample(synth.sample_rng(999, 0), DET_TRAIN_W, DET_TRAIN_H)
    heat, reg, regm = det_targets(boxes, DET_TRAIN_H, DET_TRAIN_W)
    heat, reg, regm = (torch.from_numpy(t)[None].repeat(8, 1, 1, 1) for t in (heat[None], reg, regm))
    x = torch.rand(8, 1, DET_TRAIN_H, DET_TRAIN_W)

    def loss():
        return det_loss(model(x, raw=True).float(), heat, reg, regm)[0]
    return loss, 8


def timed(model, make, precision, steps):
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    loss, batch = make(model)
    with_autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    for k in range(steps + 2):
        if k == 2:
            t = time.time()
        with with_autocast:
            value = loss()
        opt.zero_grad()
        value.backward()
        opt.step()
    return batch * steps / (time.time() - t)


def render_rate(fn, n):
    t = time.time()
    for i in range(n):
        fn(synth.sample_rng(4242, i))
    return n / (time.time() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (train.py's default: 1)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    rates = {}
    for _ in range(args.rounds):
        for name, net, make in (("reader", lambda: OCR(height=64, deep=True), reader_step),
                                ("detector", Detector, detector_step)):
            for precision in ("fp32", "bf16"):
                rates.setdefault((name, precision), []).append(timed(net(), make, precision, args.steps))
    print("training samples/s, %d torch thread(s), %d rounds of %d steps (median)" %
          (args.threads, args.rounds, args.steps))
    for name in ("reader", "detector"):
        fp32, bf16 = np.median(rates[(name, "fp32")]), np.median(rates[(name, "bf16")])
        print("  %-8s fp32 %6.1f   bf16 %6.1f   x%.2f" % (name, fp32, bf16, bf16 / fp32))
    print("rendering samples/s, one process: reader crops %.1f, detector scenes %.1f" % (
        render_rate(lambda r: synth.ocr_sample(r, OCR_W, 64), 200),
        render_rate(lambda r: synth.scene_sample(r, DET_TRAIN_W, DET_TRAIN_H), 40)))


if __name__ == "__main__":
    main()
