#!/usr/bin/env python3
"""Turns photos into raw V4L2 frames for vivid's output node (tests/vm/run.sh).

    frames.py OUT_DIR W H PHOTO...   writes OUT_DIR/<stem>.<W>x<H>.{grey,yuyv,png} and blank.<W>x<H>.*

Each photo is scaled to fit W x H (aspect kept, black borders), then written tightly packed:
GREY = W*H bytes of luma, YUYV = W*H*2 bytes (BT.601 limited range, as the decoder expects).
"""
import os
import sys

import numpy as np
from PIL import Image


def fit(img, w, h):
    img = img.convert("RGB")
    scale = min(w / img.width, h / img.height)
    size = (max(2, round(img.width * scale)), max(2, round(img.height * scale)))
    canvas = Image.new("RGB", (w, h))
    canvas.paste(img.resize(size, Image.LANCZOS), ((w - size[0]) // 2, (h - size[1]) // 2))
    return canvas


def yuv(rgb):
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    return y, u, v


def write(out, stem, img, w, h):
    rgb = np.asarray(img)
    y, u, v = yuv(rgb)
    grey = np.asarray(img.convert("L"), dtype=np.uint8)
    with open(os.path.join(out, f"{stem}.{w}x{h}.grey"), "wb") as f:
        f.write(grey.tobytes())
    # Chroma of each pixel pair is the average of the two.
    u2 = (u[:, 0::2] + u[:, 1::2]) / 2
    v2 = (v[:, 0::2] + v[:, 1::2]) / 2
    yuyv = np.empty((h, w * 2), dtype=np.float32)
    yuyv[:, 0::4] = y[:, 0::2]
    yuyv[:, 1::4] = u2
    yuyv[:, 2::4] = y[:, 1::2]
    yuyv[:, 3::4] = v2
    with open(os.path.join(out, f"{stem}.{w}x{h}.yuyv"), "wb") as f:
        f.write(np.clip(np.rint(yuyv), 0, 255).astype(np.uint8).tobytes())


def main():
    out, w, h, photos = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    os.makedirs(out, exist_ok=True)
    write(out, "blank", Image.new("RGB", (w, h), (90, 90, 90)), w, h)
    for p in photos:
        stem = os.path.splitext(os.path.basename(p))[0]
        img = fit(Image.open(p), w, h)
        write(out, stem, img, w, h)
        img.save(os.path.join(out, f"{stem}.{w}x{h}.png"))


if __name__ == "__main__":
    main()
