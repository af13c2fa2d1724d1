"""Train one platecam model on synthetic data rendered on the fly.

  python3 models/train/train.py --task ocr --minutes 30 --seed 1234 --ckpt /tmp/ocr.pt
  python3 models/train/train.py --task det --minutes 30 --seed 1234 --ckpt /tmp/det.pt

Training runs for a wall-clock budget (--minutes) or a fixed number of steps (--steps);
the learning-rate schedule follows the fraction of the budget used. `--precision bf16` runs the
forward pass under bfloat16 autocast: about 1.9x the crops per second on a CPU with AVX512-BF16 or
AMX (phase 12 of models/README.md); weights, loss and optimiser stay fp32.
"""
import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synth  # noqa: E402
from nets import ALPHABET, OCR, SLOTS, Detector, greedy_ctc  # noqa: E402

DET_TRAIN_H, DET_TRAIN_W = 320, 416
OCR_W = 128
NEW_LR_MULT = 5.0


class OcrData(Dataset):
    def __init__(self, seed, n=10 ** 8, offset=0, negative=0.0, height=32):
        self.seed, self.n, self.offset, self.negative, self.height = seed, n, offset, negative, height

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        i += self.offset
        hard = min(1.0, 0.2 + i / 40000.0)  # curriculum: clean crops first
        # optionally crops without a plate, read as nothing: what the detector's false boxes look like
        a, label = synth.ocr_sample(synth.sample_rng(self.seed, i), OCR_W, self.height, hard=hard,
                                    negative=self.negative)
        y = np.full(SLOTS, len(ALPHABET) - 1, np.int64)
        for k, c in enumerate(label[:SLOTS]):
            y[k] = ALPHABET.index(c)
        return torch.from_numpy(a[None]), torch.from_numpy(y)


def det_targets(boxes, H, W, stride=4):
    hs, ws = H // stride, W // stride
    heat = np.zeros((hs, ws), np.float32)
    reg = np.zeros((4, hs, ws), np.float32)
    regm = np.zeros((2, hs, ws), np.float32)  # [offset mask, size mask]
    yy, xx = np.mgrid[0:hs, 0:ws].astype(np.float32)
    for (x, y, w, h) in boxes:
        cx, cy = (x + w / 2) / stride, (y + h / 2) / stride
        gx, gy = int(cx), int(cy)
        if not (0 <= gx < ws and 0 <= gy < hs):
            continue
        sx = max(0.6, w / stride * 0.16)
        sy = max(0.6, h / stride * 0.16)
        g = np.exp(-((xx - gx) ** 2 / (2 * sx * sx) + (yy - gy) ** 2 / (2 * sy * sy)))
        heat = np.maximum(heat, g)
        heat[gy, gx] = 1.0
        lw, lh = math.log(max(w, 1) / stride), math.log(max(h, 1) / stride)
        # size supervised on the centre cell and its close neighbours, offset on the centre cell
        m = (g > 0.6)
        reg[2][m] = lw
        reg[3][m] = lh
        regm[1][m] = 1.0
        reg[0, gy, gx] = cx - gx
        reg[1, gy, gx] = cy - gy
        regm[0, gy, gx] = 1.0
    return heat, reg, regm


class DetData(Dataset):
    def __init__(self, seed, n=10 ** 8, offset=0):
        self.seed, self.n, self.offset = seed, n, offset

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        i += self.offset
        a, boxes = synth.scene_sample(synth.sample_rng(self.seed, i), DET_TRAIN_W, DET_TRAIN_H)
        heat, reg, regm = det_targets(boxes, DET_TRAIN_H, DET_TRAIN_W)
        return (torch.from_numpy(a[None]), torch.from_numpy(heat[None]), torch.from_numpy(reg),
                torch.from_numpy(regm))


def focal_loss(logits, gt):
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    neg = 1 - pos
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p ** 2 * (1 - gt) ** 4 * neg
    npos = pos.sum().clamp(min=1)
    return -(pos_loss.sum() + neg_loss.sum()) / npos


def det_loss(out, heat, reg, regm):
    lh = focal_loss(out[:, 0:1], heat)
    off = torch.sigmoid(out[:, 1:3])
    m0 = regm[:, 0:1]
    m1 = regm[:, 1:2]
    loff = (F.l1_loss(off, reg[:, 0:2], reduction="none") * m0).sum() / m0.sum().clamp(min=1)
    lsz = (F.l1_loss(out[:, 3:5], reg[:, 2:4], reduction="none") * m1).sum() / m1.sum().clamp(min=1)
    return lh + loff + lsz, (lh.item(), loff.item(), lsz.item())


def ctc_loss(logits, y):
    """CTC loss of [N, C, T] logits against slot labels [N, SLOTS] padded with the pad class."""
    lp = F.log_softmax(logits, 1).permute(2, 0, 1)      # [T, N, C]
    blank = len(ALPHABET) - 1                           # the pad class doubles as the CTC blank
    lens = (y != blank).sum(1)
    return F.ctc_loss(lp, y, torch.full((y.shape[0],), lp.shape[0], dtype=torch.long, device=y.device),
                      lens, blank=blank, zero_infinity=True)


def lr_at(frac, peak):
    if frac < 0.05:
        return peak * (0.1 + 0.9 * frac / 0.05)
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - 0.05) / 0.95))))


def save(model, path, phases):
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"model": state, "phases": phases}, path + ".tmp")
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=["det", "ocr"], required=True)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--steps", type=int, default=0, help="fixed step count instead of a time budget")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--lr", type=float, default=0)
    ap.add_argument("--init", default="", help="start from this checkpoint (second training phase)")
    ap.add_argument("--init-onnx", default="", help="start from this committed ONNX export (onnx_init.py; "
                    "its phases come from the manifest.json beside it)")
    ap.add_argument("--index-offset", type=int, default=0, help="first sample index (new data, curriculum done)")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    ap.add_argument("--negative", type=float, default=0.0, help="share of OCR crops without a plate, read as "
                    "nothing (models/README.md: phases 4 and 5 trained with 0.06 and dropped characters of real "
                    "plates)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: the forward pass under bfloat16 autocast (weights, loss and optimiser stay "
                    "fp32); about 1.9x the crops per second on a CPU with AVX512-BF16 or AMX "
                    "(models/README.md, Phase 12); it may be slower on one without")
    ap.add_argument("--ocr-height", type=int, choices=[32, 64], default=0,
                    help="OCR input rows (default: the --init reader's, else 32); 64 from a 32-row --init "
                    "widens it (nets.OCR.widen)")
    ap.add_argument("--ocr-deep", action="store_true", help="the reader with residual blocks (nets.OCR deep; "
                    "default: whatever the --init reader is); from a shallow --init it deepens it (nets.OCR.deepen)")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       "cpu" if args.device == "auto" else args.device)
    new_params = []  # parameters this phase adds to the starting weights (they learn faster)
    init, phases = None, []  # phases: every training phase that led to these weights, for the manifest
    if args.init or args.init_onnx:
        if args.init_onnx:
            import onnx_init
            init = onnx_init.checkpoint(args.init_onnx, args.task)
        else:
            init = torch.load(args.init, map_location="cpu")
        phases = init["phases"]
        if not args.index_offset:  # each later phase draws samples no earlier phase drew
            args.index_offset = 10 ** 7 * len(phases)
    if args.task == "ocr":
        height = args.ocr_height or (OCR.height_of(init["model"]) if init else 32)
        deep = args.ocr_deep or (OCR.deep_of(init["model"]) if init else False)
        model = OCR(height=height, deep=deep)
        if init and OCR.height_of(init["model"]) != height:
            if height != 64:
                sys.exit("a 64-row reader cannot continue as a 32-row one")
            init["model"] = OCR.widen(init["model"], args.seed)
        if init and deep and not OCR.deep_of(init["model"]):
            init["model"], new_params = OCR.deepen(init["model"], args.seed)
        data = OcrData(args.seed, offset=args.index_offset, negative=args.negative, height=height)
        # batch 128 on CPU too: at batch 32 (2e-3 or 1e-3) CTC sat on its all-blank plateau for
        # 6-10 CPU minutes and more (loss 3.3-3.5, nothing read); at 128 the GPU left it by step 250
        bs = args.batch or 128
        peak = 2e-3
    else:
        model = Detector()
        data = DetData(args.seed + 1, offset=args.index_offset)
        bs = args.batch or (32 if dev.type == "cuda" else 8)
        peak = 2e-3
    loader = DataLoader(data, batch_size=bs, shuffle=False, num_workers=args.workers, pin_memory=dev.type == "cuda",
                        persistent_workers=args.workers > 0, prefetch_factor=4 if args.workers else None)
    peak = args.lr or peak
    if init:
        model.load_state_dict(init["model"])
    model.to(dev)
    # blocks added to trained weights start from nothing: they learn at NEW_LR_MULT x the rate
    # that keeps the trained layers near their minimum (a restart at a high rate lost phase 4)
    new = [p for n, p in model.named_parameters() if n in new_params]
    old = [p for n, p in model.named_parameters() if n not in new_params]
    opt = torch.optim.AdamW([{"params": old, "mult": 1.0}, {"params": new, "mult": NEW_LR_MULT}], lr=peak,
                            weight_decay=1e-4)
    budget = args.minutes * 60.0
    t0 = time.time()
    step = 0
    seen = 0
    ema = None
    acc_ema = None
    def phase(step, seen):
        return {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "steps": step,
                "samples": seen, "minutes": round((time.time() - t0) / 60, 2), "batch": bs, "lr": peak,
                "precision": args.precision, "first_index": args.index_offset,
                **({"new_parameters": sum(p.numel() for p in new), "new_lr": round(peak * NEW_LR_MULT, 8)}
                   if new else {}),
                "command": " ".join(["train.py"] + sys.argv[1:])}

    model.train()
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    for batch in loader:
        el = time.time() - t0
        frac = (step / args.steps) if args.steps else (el / budget)
        if frac >= 1.0:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(frac, peak) * g["mult"]
        if args.task == "ocr":
            x, y = (t.to(dev, non_blocking=True) for t in batch)
            with autocast:
                logits = model(x).float()                       # [N, C, T]
            loss = ctc_loss(logits, y)
            if step % 50 == 0:
                blank = len(ALPHABET) - 1
                with torch.no_grad():
                    got = greedy_ctc(logits.detach().cpu())
                    want = ["".join(ALPHABET[k] for k in r if k != blank) for r in y.cpu().tolist()]
                    acc = float(np.mean([g == w for g, w in zip(got, want)]))
                acc_ema = acc if acc_ema is None else 0.9 * acc_ema + 0.1 * acc
            parts = ()
        else:
            x, heat, reg, regm = (t.to(dev, non_blocking=True) for t in batch)
            with autocast:
                out = model(x, raw=True).float()
            loss, parts = det_loss(out, heat, reg, regm)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        seen += x.shape[0]
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 50 == 0:
            msg = "[%s] step %d  %.1f min  %d samples (%.1f/s)  loss %.4f  lr %.5f" % (
                args.task, step, el / 60, seen, seen / max(el, 1e-6), ema, opt.param_groups[0]["lr"])
            if acc_ema is not None:
                msg += "  exact %.3f" % acc_ema
            if parts:
                msg += "  (heat %.3f off %.3f size %.3f)" % parts
            print(msg, flush=True)
        if step % 500 == 0:
            save(model, args.ckpt, phases + [phase(step, seen)])
    save(model, args.ckpt, phases + [phase(step, seen)])
    print("[%s] done: %d steps, %d samples, %.1f min" % (args.task, step, seen, (time.time() - t0) / 60),
          flush=True)


if __name__ == "__main__":
    main()
