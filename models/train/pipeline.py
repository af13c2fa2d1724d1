"""Python reimplementation of the platecam Rust pipeline (pre-processing and decode), using onnxruntime.

Contract (see models/README.md):
  detector input [1,C,H,W] pixel/255, frame resized by s=min(W/fw,H/fh) (bilinear), top-left, rest = pad.
  detector output [1,5,H/stride,W/stride]: prob, off_x, off_y (sigmoid), ln(w/stride), ln(h/stride).
  decode: prob >= score_threshold and max of its 3x3 neighbourhood; boxes / s; greedy NMS at nms_iou.
  OCR: box expanded by crop_margin*w / crop_margin*h on each side, cropped from the frame on whole
  pixels (floor/ceil outwards), resized to W x H (aspect not kept), output [1,slots,len(alphabet)]
  probabilities; argmax per slot, pads dropped.
"""
import json
import math
import os

import numpy as np
import onnxruntime as ort
from PIL import Image


def luma(img):
    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    return (a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114) / 255.0


class Pipeline:
    def __init__(self, model_dir, threads=1):
        with open(os.path.join(model_dir, "manifest.json")) as f:
            self.m = json.load(f)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        d, o = self.m["detector"], self.m["ocr"]
        self.det = ort.InferenceSession(os.path.join(model_dir, d["file"]), so, providers=["CPUExecutionProvider"])
        self.ocr = ort.InferenceSession(os.path.join(model_dir, o["file"]), so, providers=["CPUExecutionProvider"])
        self.dh, self.dw, self.dc = d["input"]["height"], d["input"]["width"], d["input"]["channels"]
        self.oh, self.ow, self.oc = o["input"]["height"], o["input"]["width"], o["input"]["channels"]

    def _chan(self, img, c):
        if c == 1:
            return luma(img)[None]
        return (np.asarray(img.convert("RGB"), np.float32) / 255.0).transpose(2, 0, 1)

    def detect(self, img, score_threshold=None):
        d = self.m["detector"]
        thr = d["score_threshold"] if score_threshold is None else score_threshold
        fw, fh = img.size
        s = min(self.dw / fw, self.dh / fh)
        nw, nh = max(1, min(self.dw, int(round(fw * s)))), max(1, min(self.dh, int(round(fh * s))))
        small = img.convert("RGB").resize((nw, nh), Image.BILINEAR)
        x = np.full((self.dc, self.dh, self.dw), d["pad"], np.float32)
        x[:, :nh, :nw] = self._chan(small, self.dc)
        out = self.det.run(None, {self.det.get_inputs()[0].name: x[None]})[0][0]
        return decode(out, d["stride"], thr, d["nms_iou"], s)

    def read(self, img, box):
        o = self.m["ocr"]
        fw, fh = img.size
        x, y, w, h = box
        mx, my = w * o["crop_margin"], h * o["crop_margin"]
        # on whole pixels outwards, as the Rust side cuts it (Ocr::crop_rect): the reader's output
        # moves with a crop one pixel off
        x0, y0 = min(max(math.floor(x - mx), 0), fw), min(max(math.floor(y - my), 0), fh)
        x1, y1 = min(max(math.ceil(x + w + mx), 0), fw), min(max(math.ceil(y + h + my), 0), fh)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return "", 0.0
        crop = img.convert("RGB").crop((x0, y0, x1, y1))
        return self.read_crop(crop)

    def read_crop(self, crop):
        c = crop.convert("RGB").resize((self.ow, self.oh), Image.BILINEAR)
        return self.read_input(self._chan(c, self.oc))

    def read_input(self, x):
        """(text, confidence) of one OCR input already at the model's size, [C, H, W] in 0..1."""
        o = self.m["ocr"]
        p = self.ocr.run(None, {self.ocr.get_inputs()[0].name: x[None].astype(np.float32)})[0][0]
        idx = p.argmax(-1)
        alpha = o["alphabet"]
        chars = [(alpha[i], float(p[k, i])) for k, i in enumerate(idx) if alpha[i] != o["pad_char"]]
        text = "".join(c for c, _ in chars)
        conf = float(np.mean([q for _, q in chars])) if chars else 0.0  # as the Rust side: mean probability
        return text, conf

    def recognize(self, img, max_plates=10, score_threshold=None, min_confidence=None):
        """Every box the detector finds whose read reaches the OCR's confidence floor."""
        floor = self.m["ocr"].get("min_confidence", 0.0) if min_confidence is None else min_confidence
        res = []
        for (box, score) in self.detect(img, score_threshold)[:max_plates]:
            text, conf = self.read(img, box)
            if conf >= floor:
                res.append((box, score, text, conf))
        return res


def decode(out, stride, thr, nms_iou, s):
    prob = out[0]
    hs, ws = prob.shape
    padded = np.pad(prob, 1, constant_values=-1.0)
    neigh = np.max(np.stack([padded[dy:dy + hs, dx:dx + ws] for dy in range(3) for dx in range(3)]), 0)
    ys, xs = np.nonzero((prob >= thr) & (prob >= neigh))
    cand = []
    for gy, gx in zip(ys, xs):
        cx = (gx + out[1, gy, gx]) * stride
        cy = (gy + out[2, gy, gx]) * stride
        w = float(np.exp(out[3, gy, gx])) * stride
        h = float(np.exp(out[4, gy, gx])) * stride
        cand.append(((float((cx - w / 2) / s), float((cy - h / 2) / s), w / s, h / s), float(prob[gy, gx])))
    cand.sort(key=lambda c: -c[1])
    keep = []
    for b, sc in cand:
        if all(iou(b, k[0]) < nms_iou for k in keep):
            keep.append((b, sc))
    return keep


def iou(a, b):
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / max(1e-9, a[2] * a[3] + b[2] * b[3] - inter)


def norm(t):
    return "".join(c for c in t.upper() if c.isascii() and c.isalnum())
