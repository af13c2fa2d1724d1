"""Synthetic licence-plate and road-scene generator for platecam.

Everything is drawn procedurally with PIL + numpy from free system fonts
(see models/README.md for the font list and licences). No real photos are
used. Every sample is a pure function of (seed, index), so DataLoader
workers produce the same data whatever their number.

Main entry points
  render_plate(rng)              -> (RGB PIL image of a flat plate, text, style)
  ocr_sample(rng, W, H)          -> (float32 [H,W] grey in [0,1], text)
  scene_sample(rng, W, H, ...)   -> (float32 [H,W] grey in [0,1], boxes [(x,y,w,h)])
"""
import io
import math
import os
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"

# PLATECAM_FONT_DIRS (colon-separated) points elsewhere, e.g. at a copy of the fonts on a training machine
FONT_DIRS = os.environ.get("PLATECAM_FONT_DIRS", "/usr/share/fonts").split(":")
# (file name, kind): "main" fonts are used for the plate characters, all for small text and distractors
MAIN_FONTS = [
    "OSP-DIN.ttf",
    "BebasNeue-Regular.otf",
    "BebasNeue-Bold.otf",
    "RobotoCondensed-Bold.ttf",
    "RobotoCondensed-Medium.ttf",
    "RobotoCondensed-Regular.ttf",
    "DejaVuSansCondensed-Bold.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSans-Bold.ttf",
    "LiberationSans-Bold.ttf",
    "LiberationMono-Bold.ttf",
    "OCRB.otf",
    "routed-gothic-narrow.ttf",
    "B612-Bold.otf",
    "B612Mono-Bold.otf",
    "Roboto-Bold.ttf",
    "Roboto-Black.ttf",
]
SMALL_FONTS = MAIN_FONTS + [
    "LiberationSerif-Bold.ttf",
    "LiberationSerif-Italic.ttf",
    "DejaVuSerif-Bold.ttf",
    "Roboto-Italic.ttf",
    "RobotoCondensed-BoldItalic.ttf",
    "LiberationSans-Italic.ttf",
    "routed-gothic-italic.ttf",
]
EU_FONTS = ["OSP-DIN.ttf", "OSP-DIN.ttf", "OSP-DIN.ttf", "RobotoCondensed-Medium.ttf",
            "DejaVuSansCondensed-Bold.ttf", "LiberationSans-Bold.ttf", "RobotoCondensed-Regular.ttf"]

STATES = ["ALABAMA", "ALASKA", "ARIZONA", "ARKANSAS", "CALIFORNIA", "COLORADO", "CONNECTICUT",
          "DELAWARE", "FLORIDA", "GEORGIA", "HAWAII", "IDAHO", "ILLINOIS", "INDIANA", "IOWA",
          "KANSAS", "KENTUCKY", "LOUISIANA", "MAINE", "MARYLAND", "MASSACHUSETTS", "MICHIGAN",
          "MINNESOTA", "MISSISSIPPI", "MISSOURI", "MONTANA", "NEBRASKA", "NEVADA",
          "NEW HAMPSHIRE", "NEW JERSEY", "NEW MEXICO", "NEW YORK", "NORTH CAROLINA",
          "NORTH DAKOTA", "OHIO", "OKLAHOMA", "OREGON", "PENNSYLVANIA", "RHODE ISLAND",
          "SOUTH CAROLINA", "SOUTH DAKOTA", "TENNESSEE", "TEXAS", "UTAH", "VERMONT",
          "VIRGINIA", "WASHINGTON", "WEST VIRGINIA", "WISCONSIN", "WYOMING", "ONTARIO",
          "QUEBEC", "Texas", "Florida", "California", "Ohio", "Oregon", "Arizona", "Virginia"]
SLOGANS = ["LAND OF LINCOLN", "SUNSHINE STATE", "THE EMPIRE STATE", "GRAND CANYON STATE",
           "Great Lakes", "LIVE FREE OR DIE", "FIRST IN FLIGHT", "THE LONE STAR STATE",
           "Pure Michigan", "dmv.ca.gov", "EXPLORE MINNESOTA", "THE GARDEN STATE",
           "SHOW ME STATE", "Wild Wonderful", "AMERICA'S DAIRYLAND", "Famous Potatoes",
           "Big Sky Country", "VACATIONLAND", "Peach State", "THE BEEHIVE STATE",
           "IN GOD WE TRUST", "KEEP TAHOE BLUE", "Sportsman's Paradise", "Heart of Dixie",
           "MY OLD KENTUCKY HOME", "Colorful Colorado", "Discover Nevada", "Green Mountain",
           "Ocean State", "Volunteer State", "FIRST STATE", "Land of Enchantment",
           "Greetings", "Treasure State", "Magnolia State", "Evergreen State"]
EU_CODES = ["D", "F", "I", "NL", "B", "A", "PL", "CZ", "SK", "H", "RO", "BG", "GR", "P", "E",
            "L", "DK", "S", "FIN", "EST", "LV", "LT", "SLO", "HR", "IRL", "CY", "M", "UA", "CH"]

_font_paths = None
_font_cache = {}


def font_paths():
    global _font_paths
    if _font_paths is None:
        found = {}
        for d in FONT_DIRS:
            for root, _, files in os.walk(d):
                for f in files:
                    found.setdefault(f, os.path.join(root, f))
        _font_paths = found
    return _font_paths


def get_font(name, size):
    size = int(max(6, min(400, size)))
    key = (name, size)
    f = _font_cache.get(key)
    if f is None:
        path = font_paths().get(name)
        if path is None:
            raise FileNotFoundError("font %s not installed (see models/README.md)" % name)
        f = ImageFont.truetype(path, size)
        if len(_font_cache) > 3000:
            _font_cache.clear()
        _font_cache[key] = f
    return f


def available(names):
    fp = font_paths()
    return [n for n in names if n in fp]


# ---------------------------------------------------------------- text masks

def text_mask(text, font_name, size=64, stroke=0, shallow=None):
    """Tight 'L' mask of a line of text rendered with font at size.

    shallow: draw M and W as plate faces do (US state faces, narrow DIN cuts): as wide as H, two
    stems and an inner V reaching only this share of the height, instead of the font's own."""
    font = get_font(font_name, size)
    drawn = text if shallow is None else "".join("H" if c in "MW" else c for c in text)
    l, t, r, b = font.getbbox(drawn, stroke_width=stroke)
    w, h = max(1, r - l), max(1, b - t)
    im = Image.new("L", (w + 2, h + 2), 0)
    ImageDraw.Draw(im).text((1 - l, 1 - t), drawn, fill=255, font=font, stroke_width=stroke,
                            stroke_fill=255)
    if shallow is not None:
        _shallow_mw(im, font, text, drawn, 1 - l, 1 - t, stroke, shallow)
    bb = im.getbbox()
    return im.crop(bb) if bb else im


def _shallow_mw(im, font, text, drawn, ox, oy, stroke, depth):
    """Redraws the H standing in for each M/W of `text` as a plate-face M/W (see text_mask)."""
    d = ImageDraw.Draw(im)
    hl, ht, hr, hb = font.getbbox("H", stroke_width=stroke)
    il, _, ir, _ = font.getbbox("I", stroke_width=stroke)
    sw = int(max(1, min(ir - il, (hr - hl) / 3)))  # a sans I is one stem wide
    for i, c in enumerate(text):
        if c not in "MW":
            continue
        x = ox + font.getlength(drawn[:i])
        x0, x1, y0, y1 = x + hl, x + hr - 1, oy + ht, oy + hb - 1
        d.rectangle((x0, y0, x1, y1), fill=0)
        d.rectangle((x0, y0, x0 + sw - 1, y1), fill=255)
        d.rectangle((x1 - sw + 1, y0, x1, y1), fill=255)
        ends = y0 if c == "M" else y1
        apex = y0 + depth * (y1 - y0) if c == "M" else y1 - depth * (y1 - y0)
        d.line([(x0 + sw / 2, ends), ((x0 + x1) / 2, apex), (x1 - sw / 2, ends)], fill=255,
               width=max(1, int(sw * 0.85)), joint="curve")


def paste_text(img, text, font_name, box, color, rng, keep_aspect=False, stroke=0, align="c",
               render_size=None, shallow=None):
    """Render text to fill box=(x,y,w,h) on img (shallow: see text_mask)."""
    x, y, w, h = [int(round(v)) for v in box]
    if w < 2 or h < 2 or not text.strip():
        return
    m = text_mask(text, font_name, render_size or max(12, min(96, int(h * 1.4))), stroke, shallow)
    if keep_aspect or m.width * h / max(1, m.height) < w:
        nw = max(1, int(round(m.width * h / m.height)))
        if nw > w:
            nw = w
        dx = {"l": 0, "c": (w - nw) // 2, "r": w - nw}[align]
        x += dx
        w = nw
    m = m.resize((max(1, w), max(1, h)), Image.BILINEAR)
    img.paste(Image.new("RGB", m.size, tuple(int(c) for c in color)), (x, y), m)


# ---------------------------------------------------------------- plate text

# The look-alikes real plates are misread on (0/O/D/Q, 8/B, 1/I, 5/S, 2/Z, 6/G, W/M/H/N): a
# share of plates draws its characters mostly from them, so the reader sees them side by side.
CONFUSABLE_LETTERS = "OODDQBBIIWWMMHHNSZGUV"
CONFUSABLE_DIGITS = "0008881115526"


def _pattern_text(pattern, rng, confusable=False):
    out = []
    for p in pattern:
        if p == "L":
            out.append(rng.choice(CONFUSABLE_LETTERS if confusable and rng.random() < 0.6 else LETTERS))
        elif p == "N":
            out.append(rng.choice(CONFUSABLE_DIGITS if confusable and rng.random() < 0.6 else DIGITS))
        elif p == "A":
            out.append(rng.choice(LETTERS + DIGITS))
        else:
            out.append(p)
    return "".join(out)


US_PATTERNS = ["LLLNNNN", "NLLLNNN", "LLLNNN", "NNNLLL", "LLNNNNN", "NLLNNN", "LLNLNNN", "NNNNNN",
               "LLL NNNN", "NNN LLL", "LLL-NNNN", "NLL NNN", "NAAAAAA", "AAAAAA", "AAAAAAA",
               "AAAAA", "NNNNNNN", "LLNNNLL", "NNLLNNN", "AAA-AAAA", "LNNLLL", "NNNNLL",
               "AAAAAAAA", "LLNNNN", "NLNNNN", "NNNLNN", "LL NNNNN"]
EU_PATTERNS = ["LL NNN LL", "LL NNNN", "LLL NNNN", "LN NNNNN", "LL NNNNN", "L NNNN LL", "LLL NNLL",
               "NNN LLL NN", "LL NNN L", "NLLL NNN", "LLL NNL", "LL NNNNL", "LL NNNNN",
               "LL-NNNLL", "LL NNNLL", "NLN NNNN", "LLL NN-NN", "LL-NNN-LL", "NN-LLL-N", "LLL-NNN",
               "LL NNN-LL", "LLLNNNN", "LL-NNNN"]
DE_PATTERNS = ["L LL NNN", "LL L NNNN", "LLL LL NNN", "L L NNNN", "LL LL NNN"]
# Brazil: Mercosur (since 2018) LLLNLNN, no separator; the older grey plates LLL-NNNN
BR_PATTERNS = ["LLLNLNN", "LLLNLNN", "LLL-NNNN", "LLL-NNNN", "LLL NNNN"]


def plate_text(style, rng):
    confusable = rng.random() < 0.3
    if style == "us":
        t = _pattern_text(rng.choice(US_PATTERNS), rng, confusable)
    elif style == "eu":
        if rng.random() < 0.3:
            t = _pattern_text(rng.choice(DE_PATTERNS), rng, confusable)
        else:
            t = _pattern_text(rng.choice(EU_PATTERNS), rng, confusable)
    else:
        t = _pattern_text(rng.choice(BR_PATTERNS), rng, confusable)
    label = "".join(c for c in t if c.isalnum())
    if not (4 <= len(label) <= 8):
        return plate_text(style, rng)
    return t, label


def plate_face(rng, text):
    """The depth of a plate-face M/W (text_mask's shallow) for 40% of the texts holding one: the
    faces of US states and narrow DIN cuts, where the reader took W and M for H; None: the font's."""
    return rng.uniform(0.35, 0.75) if set(text) & set("MW") and rng.random() < 0.4 else None


# ---------------------------------------------------------------- colours

def rand_dark(rng):
    c = rng.choice([(15, 15, 20), (10, 20, 80), (20, 40, 120), (110, 15, 20), (10, 70, 30),
                    (40, 40, 40), (60, 20, 90), (0, 0, 0), (130, 40, 0)])
    return tuple(max(0, min(255, v + rng.randint(-15, 15))) for v in c)


def rand_light_bg(rng):
    base = rng.choice([(245, 245, 240), (250, 250, 250), (235, 240, 250), (250, 245, 220),
                       (255, 230, 120), (230, 240, 230), (200, 220, 245), (245, 225, 225),
                       (235, 235, 235), (255, 215, 0)])
    return tuple(max(0, min(255, v + rng.randint(-20, 10))) for v in base)


def gradient(w, h, c1, c2, vertical=True):
    t = np.linspace(0, 1, h if vertical else w, dtype=np.float32)
    t = t[:, None] if vertical else t[None, :]
    a = np.array(c1, np.float32)[None, None, :]
    b = np.array(c2, np.float32)[None, None, :]
    g = a + (b - a) * t[..., None]
    g = np.broadcast_to(g, (h, w, 3))
    return Image.fromarray(np.ascontiguousarray(g).astype(np.uint8), "RGB")


# ---------------------------------------------------------------- plates

def draw_logo(img, rng, x, y, w, h):
    """A small picture: overlapping shapes in a few colours, sometimes with tiny text."""
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(2, 6)):
        col = tuple(rng.randint(0, 255) for _ in range(3))
        x0, y0 = x + rng.uniform(0, 0.7) * w, y + rng.uniform(0, 0.7) * h
        x1, y1 = x0 + rng.uniform(0.2, 0.6) * w, y0 + rng.uniform(0.2, 0.6) * h
        k = rng.random()
        if k < 0.4:
            d.ellipse([x0, y0, x1, y1], fill=col if rng.random() < 0.6 else None, outline=col, width=2)
        elif k < 0.7:
            d.polygon([(rng.uniform(x, x + w), rng.uniform(y, y + h)) for _ in range(rng.randint(3, 6))], fill=col)
        else:
            d.line([(x0, y0), (x1, y1)], fill=col, width=rng.randint(1, 4))
    if rng.random() < 0.3:
        paste_text(img, rng.choice(["UA", "4-H", "VET", "ALOHA", "EXPLORE", "FLEET", "GOVT"]),
                   rng.choice(available(SMALL_FONTS)), (x, y + h * 0.8, w, h * 0.2), (20, 20, 20), rng,
                   keep_aspect=True)


def render_us(rng, text, label):
    W, H = 240, 120
    bg = rand_light_bg(rng)
    r = rng.random()
    if r < 0.35:
        img = Image.new("RGB", (W, H), bg)
    elif r < 0.7:
        c2 = rand_light_bg(rng) if rng.random() < 0.6 else tuple(
            int(v * rng.uniform(0.6, 0.95)) for v in bg)
        img = gradient(W, H, bg, c2, vertical=rng.random() < 0.7)
    else:
        img = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(img)
    # simple background graphics
    for _ in range(rng.randint(0, 4)):
        col = tuple(int(min(255, max(0, v * rng.uniform(0.55, 1.05) + rng.randint(-40, 40))))
                    for v in bg)
        k = rng.random()
        if k < 0.3:
            cx, cy, rr = rng.randint(0, W), rng.randint(0, H), rng.randint(10, 60)
            d.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=col)
        elif k < 0.6:  # mountains / waves
            pts = [(0, H)]
            base = rng.randint(H // 2, H)
            for x in range(0, W + 20, 20):
                pts.append((x, base - rng.randint(0, 35)))
            pts.append((W, H))
            d.polygon(pts, fill=col)
        elif k < 0.8:  # horizontal band
            y0 = rng.randint(0, H - 10)
            d.rectangle([0, y0, W, y0 + rng.randint(4, 20)], fill=col)
        else:  # small emblem
            cx, cy, rr = rng.randint(20, W - 20), rng.randint(20, H - 20), rng.randint(6, 16)
            d.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], outline=col, width=3)
    light_text = rng.random() < 0.1
    if light_text:
        dark = rand_dark(rng)
        img = Image.new("RGB", (W, H), dark)
        d = ImageDraw.Draw(img)
        tcol = rand_light_bg(rng)
    else:
        tcol = rand_dark(rng)
    small_col = tcol if rng.random() < 0.5 else rand_dark(rng)
    small_fonts = available(SMALL_FONTS)
    # state name on top
    top_h = rng.uniform(0.12, 0.24) * H
    if rng.random() < 0.9:
        st = rng.choice(STATES)
        tw = rng.uniform(0.35, 0.85) * W
        paste_text(img, st, rng.choice(small_fonts), ((W - tw) / 2, rng.uniform(0.03, 0.08) * H,
                                                       tw, top_h), small_col, rng, keep_aspect=True)
    # slogan at bottom
    if rng.random() < 0.75:
        sl = rng.choice(SLOGANS)
        bh = rng.uniform(0.08, 0.15) * H
        tw = rng.uniform(0.3, 0.8) * W
        paste_text(img, sl, rng.choice(small_fonts), ((W - tw) / 2, H - bh - rng.uniform(0.03, 0.08) * H,
                                                       tw, bh), small_col, rng, keep_aspect=True)
    # main characters
    ch = rng.uniform(0.42, 0.58) * H
    cy = rng.uniform(0.27, 0.36) * H
    n = len(text)
    tw = min(W * 0.9, ch * rng.uniform(0.5, 0.75) * n)
    if rng.random() < 0.3:
        tw = W * rng.uniform(0.7, 0.88)
    fn = rng.choice(available(MAIN_FONTS))
    # beside the characters, never part of the read: stacked letters (plate type, county) or a
    # picture (emblem, wheelchair, logo); the characters make room for them
    side = None
    r = rng.random()
    if r < 0.25:
        side = "stacked"
    elif r < 0.45:
        side = "logo"
    if side:
        sw = ch * (rng.uniform(0.35, 0.6) if side == "stacked" else rng.uniform(0.6, 1.1))
        tw = min(tw, W * 0.9 - sw - 6)
        left = rng.random() < 0.75
        x0 = (W - tw - sw - 6) / 2 + ((sw + 6) if left else 0)
        sx = x0 - sw - 6 if left else x0 + tw + 6
        if side == "stacked":
            sh = ch * rng.uniform(0.4, 0.5)
            a, b = rng.choice(LETTERS + DIGITS), rng.choice(LETTERS + DIGITS)
            paste_text(img, a, fn, (sx, cy, sw, sh), tcol, rng)
            paste_text(img, b, fn, (sx, cy + ch - sh, sw, sh), tcol, rng)
        else:
            draw_logo(img, rng, sx, cy, sw, ch)
    else:
        x0 = (W - tw) / 2 + rng.uniform(-0.03, 0.03) * W
    stroke = 1 if rng.random() < 0.15 else 0
    paste_text(img, text, fn, (x0, cy, tw, ch), tcol, rng, stroke=stroke, shallow=plate_face(rng, text))
    if " " in text and rng.random() < 0.5:  # emblem / state outline between the groups
        d = ImageDraw.Draw(img)
        gx = x0 + tw * (text.index(" ") + 0.5) / len(text)
        gy = cy + ch / 2
        r = ch * rng.uniform(0.12, 0.25)
        col = rand_dark(rng) if rng.random() < 0.5 else tuple(rng.randint(0, 255) for _ in range(3))
        if rng.random() < 0.5:
            d.ellipse([gx - r, gy - r, gx + r, gy + r], fill=col)
        else:
            d.polygon([(gx, gy - r * 1.3), (gx + r, gy), (gx, gy + r * 1.3), (gx - r, gy)], fill=col)
    # border / frame
    if rng.random() < 0.5:
        d = ImageDraw.Draw(img)
        d.rounded_rectangle([2, 2, W - 3, H - 3], radius=rng.randint(4, 14), outline=tcol,
                            width=rng.randint(1, 4))
    # registration stickers in the corners (tiny text, never read)
    if rng.random() < 0.35:
        d = ImageDraw.Draw(img)
        for _ in range(rng.randint(1, 2)):
            sw, sh = rng.uniform(0.08, 0.16) * W, rng.uniform(0.1, 0.2) * H
            sx = rng.choice([rng.uniform(0.02, 0.06) * W, W - sw - rng.uniform(0.02, 0.06) * W])
            sy = rng.uniform(0.02, 0.06) * H  # top corners: clear of the main characters
            scol = tuple(rng.randint(0, 255) for _ in range(3))
            d.rectangle([sx, sy, sx + sw, sy + sh], fill=scol)
            paste_text(img, "".join(rng.choice(DIGITS + LETTERS) for _ in range(rng.randint(1, 3))),
                       rng.choice(small_fonts), (sx + sw * 0.1, sy + sh * 0.15, sw * 0.8, sh * 0.7),
                       (250, 250, 250) if sum(scol) < 380 else (10, 10, 10), rng)
    # bolts
    if rng.random() < 0.6:
        d = ImageDraw.Draw(img)
        bc = tuple(rng.randint(90, 200) for _ in range(3))
        for bx in (W * 0.2, W * 0.8):
            for by in ((H * 0.1,) if rng.random() < 0.6 else (H * 0.1, H * 0.9)):
                d.ellipse([bx - 4, by - 4, bx + 4, by + 4], fill=bc)
    return img


def draw_emblem(img, rng, cx, cy, size):
    """A small coat of arms, round sticker or dash between character groups (never read)."""
    d = ImageDraw.Draw(img)
    k = rng.random()
    col = tuple(rng.randint(0, 255) for _ in range(3))
    r = size / 2
    if k < 0.4:  # shield
        d.polygon([(cx - r * 0.7, cy - r), (cx + r * 0.7, cy - r), (cx + r * 0.7, cy + r * 0.2),
                   (cx, cy + r), (cx - r * 0.7, cy + r * 0.2)], fill=col, outline=(20, 20, 20))
        if rng.random() < 0.6:
            d.line([(cx, cy - r * 0.7), (cx, cy + r * 0.5)], fill=(250, 250, 250), width=max(1, int(r / 4)))
            d.line([(cx - r * 0.35, cy - r * 0.2), (cx + r * 0.35, cy - r * 0.2)], fill=(250, 250, 250),
                   width=max(1, int(r / 4)))
    elif k < 0.75:  # one or two round inspection stickers
        for yy in ((cy - r * 0.5, cy + r * 0.5) if rng.random() < 0.5 else (cy,)):
            rr = r * rng.uniform(0.4, 0.6)
            d.ellipse([cx - rr, yy - rr, cx + rr, yy + rr], fill=tuple(rng.randint(40, 250) for _ in range(3)))
    else:  # dash
        d.rectangle([cx - r * 0.3, cy - r * 0.08, cx + r * 0.3, cy + r * 0.08], fill=(20, 20, 20))


def render_eu(rng, text, label):
    W, H = 260, 56
    yellow = rng.random() < 0.14
    inverted = rng.random() < 0.06
    bg = (20, 40, 110) if inverted else (245, 200, 20) if yellow else rand_light_bg(rng) if rng.random() < 0.2 else (
        245 + rng.randint(-15, 10), 245 + rng.randint(-15, 10), 245 + rng.randint(-15, 10))
    img = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(img)
    blue = (0 + rng.randint(0, 30), 50 + rng.randint(-20, 30), 150 + rng.randint(-30, 40))
    has_band = rng.random() < 0.9
    x_start, x_end = 4, W - 4
    if has_band:
        # blue band with stars and a country code: part of every EU plate, never part of the read
        bw = int(W * rng.uniform(0.055, 0.1))
        d.rectangle([0, 0, bw, H], fill=blue)
        if rng.random() < 0.85:
            cx, cy, rr = bw / 2, H * rng.uniform(0.25, 0.35), bw * rng.uniform(0.25, 0.35)
            for k in range(12):
                a = 2 * math.pi * k / 12
                sx, sy = cx + rr * math.cos(a), cy + rr * math.sin(a)
                d.ellipse([sx - 1, sy - 1, sx + 1, sy + 1], fill=(250, 210, 0))
        code = rng.choice(EU_CODES)
        ch_code = H * rng.uniform(0.25, 0.42)
        paste_text(img, code, rng.choice(["OSP-DIN.ttf", "OSP-DIN.ttf", "DejaVuSans-Bold.ttf", "Roboto-Bold.ttf"]),
                   (bw * 0.08, H * 0.92 - ch_code, bw * 0.84, ch_code), (255, 255, 255), rng, keep_aspect=True)
        x_start = bw + 4
        if rng.random() < 0.15:  # right-hand band (Italy: year and province)
            rb = int(W * rng.uniform(0.055, 0.09))
            d.rectangle([W - rb, 0, W, H], fill=blue)
            paste_text(img, "".join(rng.choice(LETTERS + DIGITS) for _ in range(2)), "OSP-DIN.ttf",
                       (W - rb * 0.9, H * 0.55, rb * 0.8, H * 0.3), (255, 255, 255), rng, keep_aspect=True)
            x_end = W - rb - 4
    d.rectangle([0, 0, W - 1, H - 1], outline=(20, 20, 20), width=rng.randint(1, 3))
    fn = rng.choice(available(EU_FONTS))
    ch = rng.uniform(0.62, 0.78) * H
    cy = (H - ch) / 2 + rng.uniform(-0.05, 0.04) * H
    avail = x_end - x_start
    emblem = " " in text and rng.random() < 0.35
    shown = text.replace(" ", "  ", 1) if emblem else text
    tw = min(avail, ch * rng.uniform(0.55, 0.7) * len(shown))
    x0 = x_start + (avail - tw) / 2
    tcol = (235, 235, 235) if inverted else (15 + rng.randint(0, 25),) * 3
    paste_text(img, shown, fn, (x0, cy, tw, ch), tcol, rng, shallow=plate_face(rng, shown))
    if emblem:
        sx = x0 + tw * (shown.index(" ") + 1) / len(shown)
        draw_emblem(img, rng, sx, cy + ch / 2, min(ch * 0.7, tw / len(shown) * 0.9))
    if rng.random() < 0.15:  # dealer imprint under the characters
        paste_text(img, rng.choice(["AUTO BAYER", "AUTOHAUS", "www.auto.sk", "SKODA", "RENAULT", "AUTO MAX"]),
                   rng.choice(available(SMALL_FONTS)), (x0 + tw * 0.2, H * 0.88, tw * 0.6, H * 0.1),
                   tcol, rng, keep_aspect=True)
    return img


BR_CITIES = [("SP", "SAO PAULO"), ("SP", "CAMPINAS"), ("SP", "SANTOS"), ("RJ", "RIO DE JANEIRO"),
             ("RJ", "NITEROI"), ("MG", "BELO HORIZONTE"), ("MG", "UBERLANDIA"), ("PR", "CURITIBA"),
             ("PR", "LONDRINA"), ("RS", "PORTO ALEGRE"), ("SC", "JOINVILLE"), ("SC", "FLORIANOPOLIS"),
             ("BA", "SALVADOR"), ("DF", "BRASILIA"), ("PE", "RECIFE"), ("CE", "FORTALEZA"),
             ("GO", "GOIANIA"), ("AM", "MANAUS"), ("ES", "VITORIA"), ("PA", "BELEM")]
# narrow, DIN/FE-like faces: both Brazilian styles print condensed sans characters
BR_FONTS = ["OSP-DIN.ttf", "OSP-DIN.ttf", "RobotoCondensed-Bold.ttf", "RobotoCondensed-Medium.ttf",
            "DejaVuSansCondensed-Bold.ttf", "BebasNeue-Bold.otf", "routed-gothic-narrow.ttf"]


def render_br(rng, text, label):
    """Both Brazilian styles: Mercosur (LLLNLNN) or the older grey plate (LLL-NNNN)."""
    if label[4].isalpha():
        return render_br_mercosur(rng, text)
    return render_br_grey(rng, text)


def render_br_mercosur(rng, text):
    """White plate, blue band with BRASIL, the Mercosur mark left and the flag right; the
    characters black (private), red (commercial), green, blue or grey."""
    W, H = 240, 78
    img = Image.new("RGB", (W, H), (245 + rng.randint(-15, 10),) * 3)
    d = ImageDraw.Draw(img)
    bh = int(H * rng.uniform(0.18, 0.26))
    blue = (0 + rng.randint(0, 30), 50 + rng.randint(-20, 30), 150 + rng.randint(-30, 40))
    d.rectangle([0, 0, W, bh], fill=blue)
    paste_text(img, "BRASIL", rng.choice(["OSP-DIN.ttf", "DejaVuSans-Bold.ttf", "Roboto-Bold.ttf"]),
               (W * 0.33, bh * 0.18, W * 0.34, bh * 0.66), (255, 255, 255), rng, keep_aspect=True)
    if rng.random() < 0.85:  # Mercosur mark: a few white stars on a curve
        for k in range(4):
            sx, sy = bh * 0.4 + k * bh * 0.25, bh * (0.3 + 0.15 * math.sin(k))
            d.ellipse([sx - 1, sy - 1, sx + 1, sy + 1], fill=(255, 255, 255))
    if rng.random() < 0.85:  # flag: green, yellow diamond, blue disc
        fx0, fy0, fw, fh = W - bh * 1.6, bh * 0.15, bh * 1.3, bh * 0.7
        d.rectangle([fx0, fy0, fx0 + fw, fy0 + fh], fill=(0, 150, 60))
        d.polygon([(fx0 + fw / 2, fy0 + 1), (fx0 + fw - 2, fy0 + fh / 2), (fx0 + fw / 2, fy0 + fh - 1),
                   (fx0 + 2, fy0 + fh / 2)], fill=(250, 215, 0))
        r = fh * 0.22
        d.ellipse([fx0 + fw / 2 - r, fy0 + fh / 2 - r, fx0 + fw / 2 + r, fy0 + fh / 2 + r], fill=(30, 40, 130))
    d.rectangle([0, 0, W - 1, H - 1], outline=(20, 20, 20), width=rng.randint(1, 3))
    ch = (H - bh) * rng.uniform(0.66, 0.8)
    cy = bh + (H - bh - ch) / 2 + rng.uniform(-0.03, 0.03) * H
    tw = min(W * 0.9, ch * rng.uniform(0.55, 0.68) * len(text))
    col = rng.choice([(15, 15, 15)] * 6 + [(170, 20, 25), (170, 20, 25), (20, 100, 40), (20, 50, 140),
                                             (110, 110, 110)])
    if rng.random() < 0.25:  # small QR code at the left, below the band
        q = int(ch * 0.4)
        x0, y0 = 5, int(bh + 3)
        for i in range(5):
            for j in range(5):
                if rng.random() < 0.5:
                    d.rectangle([x0 + i * q / 5, y0 + j * q / 5, x0 + (i + 1) * q / 5, y0 + (j + 1) * q / 5],
                                fill=(20, 20, 20))
    paste_text(img, text, rng.choice(available(BR_FONTS)), ((W - tw) / 2, cy, tw, ch), col, rng, shallow=plate_face(rng, text))
    return img


def render_br_grey(rng, text):
    """The older Brazilian plate: grey (private) or red (commercial), black or white characters,
    a band above them with the state and city in small type that is never part of the read."""
    W, H = 240, 78
    red = rng.random() < 0.15
    g = rng.randint(150, 195)
    bg = (185 + rng.randint(-20, 20), 30, 35) if red else (g, g + rng.randint(-4, 4), g + rng.randint(-3, 8))
    tcol = (240, 240, 240) if red else (20 + rng.randint(0, 25),) * 3
    img = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, W - 1, H - 1], outline=(30, 30, 30), width=rng.randint(1, 3))
    uf, city = rng.choice(BR_CITIES)
    bh = H * rng.uniform(0.17, 0.24)
    if rng.random() < 0.8:
        city_text = rng.choice(["%s - %s" % (uf, city), "%s-%s" % (uf, city), city])
        tw_c = min(W * 0.7, bh * 0.62 * len(city_text))
        paste_text(img, city_text, rng.choice(available(SMALL_FONTS)), ((W - tw_c) / 2, bh * 0.15, tw_c, bh * 0.7),
                   tcol, rng, keep_aspect=True)
    if rng.random() < 0.5:  # the line under the band
        d.line([(4, bh + 1), (W - 5, bh + 1)], fill=tcol, width=1)
    for bx in (W * 0.2, W * 0.8):  # bolts, often in the band
        if rng.random() < 0.6:
            r = rng.uniform(2, 4)
            d.ellipse([bx - r, bh / 2 - r, bx + r, bh / 2 + r], fill=(120, 120, 125), outline=(60, 60, 60))
    ch = (H - bh) * rng.uniform(0.66, 0.82)
    cy = bh + (H - bh - ch) / 2 + rng.uniform(-0.03, 0.03) * H
    tw = min(W * 0.92, ch * rng.uniform(0.5, 0.62) * len(text))
    paste_text(img, text, rng.choice(available(BR_FONTS)), ((W - tw) / 2, cy, tw, ch), tcol, rng, shallow=plate_face(rng, text))
    return img


def render_plate(rng, style=None):
    if style is None:
        r = rng.random()
        style = "us" if r < 0.57 else ("eu" if r < 0.85 else "br")
    text, label = plate_text(style, rng)
    img = {"us": render_us, "eu": render_eu, "br": render_br}[style](rng, text, label)
    return img, label, style


# ---------------------------------------------------------------- geometry

def persp_coeffs(dst, src):
    """Coefficients for Image.transform(PERSPECTIVE): output point dst_i -> input src_i."""
    A, b = [], []
    for (x, y), (u, v) in zip(dst, src):
        A.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        A.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    return np.linalg.solve(np.array(A, np.float64), np.array(b, np.float64)).tolist()


def random_quad(rng, w, h, amount):
    """Plate corners after a random small rotation/perspective, relative to plate centre."""
    ang = math.radians(rng.gauss(0, 4) if rng.random() < 0.8 else rng.uniform(-15, 15))
    ang *= amount
    sx = 1.0 - abs(rng.gauss(0, 0.15)) * amount  # yaw foreshortening
    shear = rng.gauss(0, 0.08) * amount
    pts = []
    for (x, y) in [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]:
        x2 = x * sx + shear * y
        y2 = y
        # perspective: one side taller than the other
        y2 *= 1 + (x / w) * rng.uniform(-0.15, 0.15) * amount
        xr = x2 * math.cos(ang) - y2 * math.sin(ang)
        yr = x2 * math.sin(ang) + y2 * math.cos(ang)
        pts.append((xr + rng.uniform(-0.02, 0.02) * w * amount, yr + rng.uniform(-0.03, 0.03) * h * amount))
    return pts


def warp_onto(canvas, plate, quad):
    """Composite the plate onto canvas so its corners land on quad (canvas coords)."""
    w, h = plate.size
    xs = [p[0] for p in quad]
    ys = [p[1] for p in quad]
    x0, y0 = int(math.floor(min(xs))), int(math.floor(min(ys)))
    x1, y1 = int(math.ceil(max(xs))), int(math.ceil(max(ys)))
    bw, bh = max(1, x1 - x0), max(1, y1 - y0)
    local = [(x - x0, y - y0) for x, y in quad]
    # pre-shrink the plate if it will be much smaller (avoid aliasing)
    scale = max(bw / w, bh / h)
    if scale < 0.5:
        nw, nh = max(4, int(w * scale * 2)), max(2, int(h * scale * 2))
        plate = plate.resize((nw, nh), Image.BILINEAR)
        w, h = nw, nh
    c = persp_coeffs(local, [(0, 0), (w, 0), (w, h), (0, h)])
    warped = plate.transform((bw, bh), Image.PERSPECTIVE, c, Image.BILINEAR)
    mask = Image.new("L", (w, h), 255).transform((bw, bh), Image.PERSPECTIVE, c, Image.BILINEAR)
    canvas.paste(warped, (x0, y0), mask)
    return (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))


# ---------------------------------------------------------------- degradations (on numpy float grey/RGB)

def plate_effects(img, rng):
    """Effects applied to the flat plate: dirt, shadow, reflections, low contrast."""
    W, H = img.size
    if rng.random() < 0.2:  # unlit / IR-absorbing / weathered plate: low contrast, darker
        a = np.asarray(img, np.float32)
        k = rng.uniform(0.3, 0.8)
        a = a * k + rng.uniform(0, 1 - k) * 255 * rng.uniform(0.2, 0.8)
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img, "RGBA")
    if rng.random() < 0.3:  # dirt specks / smudges
        for _ in range(rng.randint(3, 30)):
            x, y = rng.uniform(0, W), rng.uniform(0, H)
            r = rng.uniform(0.5, 4)
            c = rng.randint(40, 140)
            d.ellipse([x - r, y - r, x + r, y + r], fill=(c, c - 10 if c > 10 else c, c - 20 if c > 20 else c,
                                                        rng.randint(40, 160)))
    if rng.random() < 0.25:  # shadow polygon
        pts = [(rng.uniform(-W, W * 2), rng.uniform(-H, H * 2)) for _ in range(3)]
        pts += [(rng.uniform(0, W), rng.uniform(0, H))]
        d.polygon(pts, fill=(0, 0, 0, rng.randint(60, 150)))
    if rng.random() < 0.15:  # specular band
        x = rng.uniform(0, W)
        d.polygon([(x, 0), (x + rng.uniform(10, 50), 0), (x + rng.uniform(-30, 60), H), (x - 20, H)],
                  fill=(255, 255, 255, rng.randint(40, 120)))
    if rng.random() < 0.25:  # licence plate frame (dealer frame) with text at bottom
        fc = rand_dark(rng) if rng.random() < 0.7 else (200, 200, 200)
        t = rng.randint(3, 8)
        d.rectangle([0, 0, W - 1, H - 1], outline=fc + (255,), width=t)
        if rng.random() < 0.5:
            bh = int(H * rng.uniform(0.08, 0.14))
            d.rectangle([0, H - bh, W, H], fill=fc + (255,))
            paste_text(img, rng.choice(["TOYOTA OF", "HONDA", "AUTO MALL", "MOTORS", "CHEVROLET",
                                        "FORD", "DEALER", "WWW.AUTO.COM"]),
                       rng.choice(available(SMALL_FONTS)), (W * 0.3, H - bh * 0.9, W * 0.4, bh * 0.8),
                       (230, 230, 230) if sum(fc) < 300 else (20, 20, 20), rng, keep_aspect=True)
    return img


def to_grey(img):
    a = np.asarray(img, dtype=np.float32)
    if a.ndim == 3:
        a = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
    return a / 255.0


def photometric(a, rng, strength=1.0):
    """a: float32 grey [H,W] in [0,1]. Lighting, IR/night, exposure, noise."""
    r = rng.random()
    if r < 0.12 * strength:  # night / IR: strong contrast, dark surroundings
        a = np.clip((a - rng.uniform(0.1, 0.4)) * rng.uniform(1.3, 2.5), 0, 1) ** rng.uniform(0.7, 1.3)
    elif r < 0.25 * strength:  # over-exposure
        a = np.clip(a * rng.uniform(1.2, 2.0) + rng.uniform(0, 0.2), 0, 1)
    elif r < 0.4 * strength:  # under-exposure / dusk
        a = a * rng.uniform(0.25, 0.7)
    # contrast / brightness jitter
    c = rng.uniform(0.6, 1.25)
    m = float(a.mean())
    a = (a - m) * c + m + rng.uniform(-0.12, 0.12)
    if rng.random() < 0.5:
        a = np.clip(a, 0, 1) ** rng.uniform(0.6, 1.6)
    # illumination gradient
    if rng.random() < 0.3 * strength:
        h, w = a.shape
        gx = np.linspace(-1, 1, w, dtype=np.float32)[None, :] * rng.uniform(-0.25, 0.25)
        gy = np.linspace(-1, 1, h, dtype=np.float32)[:, None] * rng.uniform(-0.25, 0.25)
        a = a + gx + gy
    return np.clip(a, 0, 1).astype(np.float32)


def blur_pil(img, rng, strength=1.0):
    r = rng.random()
    if r < 0.3 * strength:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.6) * strength))
    elif r < 0.45 * strength:  # motion blur (horizontal or vertical-ish)
        k = rng.choice([3, 5])
        if rng.random() < 0.6:
            kern = [0] * (k * (k // 2)) + [1] * k + [0] * (k * (k // 2))
        else:
            kern = ([0] * (k // 2) + [1] + [0] * (k // 2)) * k
        img = img.filter(ImageFilter.Kernel((k, k), kern, scale=k))
    return img


def jpeg(img, rng, qlo=15, qhi=90):
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=rng.randint(qlo, qhi))
    buf.seek(0)
    return Image.open(buf).convert(img.mode)


def add_noise(a, rng, amount):
    if amount > 0:
        a = a + np.random.default_rng(rng.randint(0, 2 ** 31)).normal(0, amount, a.shape).astype(np.float32)
    return np.clip(a, 0, 1).astype(np.float32)


# ---------------------------------------------------------------- backgrounds

def noise_texture(h, w, rng, scale=8, amp=0.2):
    nr = np.random.default_rng(rng.randint(0, 2 ** 31))
    sh, sw = max(2, h // scale), max(2, w // scale)
    small = nr.random((sh, sw), dtype=np.float32)
    t = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR),
                   np.float32) / 255.0
    return (t - 0.5) * amp


def rand_color(rng):
    if rng.random() < 0.45:
        v = rng.choice([20, 40, 70, 120, 170, 200, 230, 245])
        return (v + rng.randint(-10, 10),) * 3
    return tuple(rng.randint(0, 255) for _ in range(3))


def draw_car(img, d, rng, x, y, w, h, body, plate_at=None):
    """A vehicle rear/front: body, window, lights, bumper, grille. Returns plate anchor (cx, cy)."""
    dark = tuple(max(0, int(v * 0.4)) for v in body)
    radius = int(min(w, h) * rng.uniform(0.05, 0.25))
    if rng.random() < 0.6 and w >= 4 and h >= 4:  # shaded paint: light from above, a highlight band
        lit = tuple(min(255, int(v * rng.uniform(1.1, 1.5) + 20)) for v in body)
        shade = tuple(int(v * rng.uniform(0.4, 0.8)) for v in body)
        g = gradient(int(w), int(h), lit, shade)
        if rng.random() < 0.5:
            gd = ImageDraw.Draw(g)
            hy = rng.uniform(0.2, 0.6) * h
            gd.rectangle([0, hy, w, hy + rng.uniform(0.02, 0.08) * h], fill=lit)
        mask = Image.new("L", (int(w), int(h)), 0)
        ImageDraw.Draw(mask).rounded_rectangle([0, 0, int(w) - 1, int(h) - 1], radius=radius, fill=255)
        img.paste(g, (int(x), int(y)), mask)
    else:
        d.rounded_rectangle([x, y, x + w, y + h], radius=radius, fill=body)
    # window
    if rng.random() < 0.8:
        wy1 = y + h * rng.uniform(0.3, 0.45)
        inset = w * rng.uniform(0.08, 0.18)
        d.polygon([(x + inset, wy1), (x + w - inset, wy1), (x + w - inset * 1.6, y + h * 0.05),
                   (x + inset * 1.6, y + h * 0.05)], fill=tuple(rng.randint(20, 90) for _ in range(3)))
    # lights
    lw, lh = w * rng.uniform(0.1, 0.2), h * rng.uniform(0.06, 0.14)
    ly = y + h * rng.uniform(0.45, 0.62)
    if plate_at is not None and rng.random() < 0.4:  # tail lights flanking the plate, at its height
        ly = y + h * plate_at[1] - lh * rng.uniform(0.3, 0.7)
    lc = rng.choice([(200, 20, 20), (250, 250, 240), (230, 120, 20), (150, 10, 10)])
    for lx in (x + w * 0.04, x + w * 0.96 - lw):
        if rng.random() < 0.5:
            d.ellipse([lx, ly, lx + lw, ly + lh], fill=lc)
        else:
            d.rectangle([lx, ly, lx + lw, ly + lh], fill=lc)
    # grille
    if rng.random() < 0.5:
        gx0, gx1 = x + w * 0.3, x + w * 0.7
        gy0, gy1 = ly, ly + h * 0.12
        d.rectangle([gx0, gy0, gx1, gy1], fill=dark)
        for k in range(rng.randint(2, 6)):
            yy = gy0 + (gy1 - gy0) * (k + 0.5) / 6
            d.line([gx0, yy, gx1, yy], fill=body, width=1)
    # bumper
    by = y + h * rng.uniform(0.78, 0.88)
    d.rectangle([x, by, x + w, y + h], fill=tuple(rng.randint(10, 80) for _ in range(3))
                if rng.random() < 0.6 else body)
    # wheels
    if rng.random() < 0.6:
        r = h * 0.13
        for wx in (x + w * 0.15, x + w * 0.85):
            d.ellipse([wx - r, y + h - r, wx + r, y + h + r * 0.8], fill=(15, 15, 15))
    if plate_at is not None:  # recess / bumper behind the plate
        px, py = x + w * plate_at[0], y + h * plate_at[1]
        if rng.random() < 0.5:
            d.rectangle([px - w * 0.14, py - h * 0.1, px + w * 0.14, py + h * 0.1], fill=dark)
    return x + w / 2 + w * rng.uniform(-0.12, 0.12), y + h * rng.uniform(0.62, 0.8)


def draw_distractor(img, d, rng, W, H):
    k = rng.random()
    small = available(SMALL_FONTS)
    if k < 0.35:  # random text (signs, stickers, shop names)
        n = rng.randint(2, 10)
        t = "".join(rng.choice(LETTERS + DIGITS + "  ") for _ in range(n)).strip() or "STOP"
        if rng.random() < 0.4:
            t = rng.choice(STATES + SLOGANS + ["STOP", "EXIT", "SPEED LIMIT", "ONE WAY", "PARKING",
                                               "SALE", "OPEN", "TAXI", "POLICE", "BUS"])
        h = rng.uniform(6, 40)
        w = h * rng.uniform(0.5, 0.8) * len(t)
        x, y = rng.uniform(0, W - 10), rng.uniform(0, H - 10)
        if rng.random() < 0.6:
            bgc = rand_color(rng)
            d.rectangle([x - h * 0.3, y - h * 0.3, x + w + h * 0.3, y + h * 1.3], fill=bgc)
        paste_text(img, t, rng.choice(small), (x, y, w, h), rand_color(rng), rng)
    elif k < 0.5:  # road sign
        s = rng.uniform(15, 80)
        x, y = rng.uniform(0, W), rng.uniform(0, H * 0.6)
        c = rng.choice([(200, 20, 20), (20, 100, 40), (20, 60, 160), (240, 200, 20), (240, 240, 240)])
        if rng.random() < 0.5:
            d.ellipse([x, y, x + s, y + s], fill=c, outline=(240, 240, 240), width=2)
        else:
            d.rectangle([x, y, x + s * rng.uniform(1, 2.5), y + s], fill=c, outline=(240, 240, 240), width=2)
        paste_text(img, "".join(rng.choice(LETTERS + DIGITS) for _ in range(rng.randint(1, 4))),
                   rng.choice(small), (x + s * 0.2, y + s * 0.25, s * 0.6, s * 0.5), (250, 250, 250), rng)
    elif k < 0.62:  # car badges, oval country stickers, logos
        w = rng.uniform(10, 70)
        h = w * rng.uniform(0.3, 0.8)
        x, y = rng.uniform(0, W), rng.uniform(0, H)
        c1, c2 = rand_color(rng), rand_color(rng)
        d.ellipse([x, y, x + w, y + h], fill=c1 if rng.random() < 0.7 else None, outline=c2, width=2)
        t = "".join(rng.choice(LETTERS) for _ in range(rng.randint(1, 4)))
        paste_text(img, t, rng.choice(small), (x + w * 0.2, y + h * 0.2, w * 0.6, h * 0.6), c2, rng)
    elif k < 0.8:  # plain rectangles (plate-like negatives)
        w = rng.uniform(15, 150)
        h = w * rng.uniform(0.2, 0.7)
        x, y = rng.uniform(0, W), rng.uniform(0, H)
        d.rectangle([x, y, x + w, y + h], fill=rand_color(rng),
                    outline=rand_color(rng) if rng.random() < 0.5 else None)
    else:  # stripes / bars
        x, y = rng.uniform(0, W), rng.uniform(0, H)
        for i in range(rng.randint(2, 8)):
            d.line([x, y + i * 4, x + rng.uniform(20, 120), y + i * 4], fill=rand_color(rng), width=2)


def draw_clutter(img, rng, W, H):
    """High-frequency texture real scenes are full of: foliage, grilles, fences, brick."""
    w, h = int(rng.uniform(0.1, 0.6) * W), int(rng.uniform(0.1, 0.5) * H)
    x, y = rng.randint(-w // 2, W - w // 2), rng.randint(-h // 2, H - h // 2)
    if w < 8 or h < 8:
        return
    k = rng.random()
    c1, c2 = rand_color(rng), rand_color(rng)
    if k < 0.4:  # foliage / gravel: thresholded multi-scale noise
        t = noise_texture(h, w, rng, scale=rng.choice([2, 3, 5]), amp=1.0) + noise_texture(h, w, rng, 20, 0.6)
        m = Image.fromarray(((t > rng.uniform(-0.1, 0.2)) * 255).astype(np.uint8), "L")
        img.paste(Image.new("RGB", (w, h), c1), (x, y))
        img.paste(Image.new("RGB", (w, h), c2), (x, y), m)
    else:  # grille, fence or brick: regular bars
        tile = Image.new("RGB", (w, h), c1)
        d = ImageDraw.Draw(tile)
        p = rng.uniform(3, 14)
        lw = max(1, int(p * rng.uniform(0.2, 0.5)))
        horiz, vert = rng.random() < 0.7, rng.random() < 0.5
        for i in range(int(max(w, h) / p) + 1):
            if horiz:
                d.line([(0, i * p), (w, i * p)], fill=c2, width=lw)
            if vert or not horiz:
                off = (p / 2) * (i % 2) if k > 0.8 else 0
                d.line([(i * p + off, 0), (i * p + off, h)], fill=c2, width=lw)
        img.paste(tile, (x, y))


def background(rng, W, H, cars=2):
    """Road scene background. Returns (PIL RGB image, list of plate anchor points on vehicles)."""
    sky_h = int(H * rng.uniform(0, 0.5))
    img = Image.new("RGB", (W, H))
    # asphalt / ground
    g = rng.randint(60, 160)
    ground = np.full((H, W), g / 255.0, np.float32) + noise_texture(H, W, rng, scale=2, amp=0.15) \
        + noise_texture(H, W, rng, scale=30, amp=0.25)
    tint = np.array([rng.uniform(0.9, 1.1) for _ in range(3)], np.float32)
    arr = np.clip(ground[..., None] * tint[None, None, :], 0, 1)
    if sky_h > 0:
        top = np.array(rng.choice([(150, 190, 235), (200, 205, 215), (230, 230, 235), (40, 50, 70)]),
                       np.float32) / 255.0
        arr[:sky_h] = top[None, None, :] + noise_texture(sky_h, W, rng, scale=40, amp=0.1)[..., None]
    img = Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    # trees / buildings along the horizon
    for _ in range(rng.randint(0, 8)):
        x = rng.uniform(0, W)
        if rng.random() < 0.5:
            r = rng.uniform(10, 80)
            c = (rng.randint(20, 80), rng.randint(60, 140), rng.randint(20, 70))
            d.ellipse([x - r, sky_h - r * 1.5, x + r, sky_h + r * 0.3], fill=c)
        else:
            bw, bh = rng.uniform(30, 200), rng.uniform(20, 200)
            c = rand_color(rng)
            d.rectangle([x, sky_h - bh, x + bw, sky_h + 5], fill=c)
            for _ in range(rng.randint(0, 10)):  # windows
                wx, wy = rng.uniform(x, x + bw), rng.uniform(sky_h - bh, sky_h)
                d.rectangle([wx, wy, wx + 6, wy + 8], fill=rand_color(rng))
    # lane markings
    for _ in range(rng.randint(0, 4)):
        x = rng.uniform(0, W)
        d.polygon([(x, H), (x + rng.uniform(10, 30), H), (x + rng.uniform(-200, 200), sky_h + 5),
                   (x + rng.uniform(-200, 200) + 3, sky_h + 5)], fill=(230, 230, 220))
    for _ in range(rng.randint(0, 3)):
        draw_clutter(img, rng, W, H)
    anchors = []
    for _ in range(cars):
        cw = rng.uniform(0.2, 1.1) * W
        ch = cw * rng.uniform(0.45, 0.9)
        cx = rng.uniform(-0.2 * cw, W - 0.8 * cw)
        cy = rng.uniform(sky_h - ch * 0.5, H - ch * 0.5)
        anchors.append((draw_car(img, d, rng, cx, cy, cw, ch, rand_color(rng)), cw))
    for _ in range(rng.randint(0, 10)):
        draw_distractor(img, d, rng, W, H)
    return img, anchors


# ---------------------------------------------------------------- samples

SHOP_WORDS = ["PIZZA", "Pharmacy", "OPEN", "HOTEL", "Bakery", "CAFE", "GARAGE", "Bar", "SALE", "EXIT",
              "DINER", "Motel", "TIRES", "WASH", "LIQUOR", "Deli", "BANK", "Police", "TAXI", "SCHOOL BUS",
              "Apotheke", "Tabac", "FARMACIA", "Padaria", "ALUGA-SE", "Sorveteria", "Zimmer frei"]


def negative_patch(rng):
    """What a detector mistakes for a plate, at plate size: grilles, fences, brick, foliage, car
    body with lights and badges, shop signs and stickers (words, not plates). Read as nothing."""
    W, H = rng.randint(180, 280), rng.randint(50, 90)
    img = Image.new("RGB", (W, H), rand_color(rng))
    d = ImageDraw.Draw(img)
    k = rng.random()
    if k < 0.45:
        for _ in range(rng.randint(1, 3)):
            draw_clutter(img, rng, W, H)
    elif k < 0.7:  # car body: lights, badge, bumper edges
        for _ in range(rng.randint(1, 3)):
            x, y = rng.uniform(0, W), rng.uniform(0, H)
            w, h = rng.uniform(20, 120), rng.uniform(6, 40)
            d.rectangle([x, y, x + w, y + h], fill=rng.choice([(180, 20, 20), (240, 240, 220), (30, 30, 30),
                                                                (200, 120, 20), rand_color(rng)]))
        if rng.random() < 0.5:
            d.ellipse([W * 0.4, H * 0.3, W * 0.6, H * 0.7], outline=(200, 200, 200), width=2)
    else:  # sign or sticker text that is no plate
        word = rng.choice(SHOP_WORDS + SLOGANS + STATES)
        paste_text(img, word, rng.choice(available(SMALL_FONTS)), (W * 0.05, H * 0.2, W * 0.9, H * 0.6),
                   rand_color(rng), rng, keep_aspect=rng.random() < 0.5)
    if rng.random() < 0.3:
        draw_distractor(img, d, rng, W, H)
    return img


def ocr_sample(rng, W=128, H=32, style=None, hard=1.0, negative=0.0):
    """A plate crop as the detector would deliver it: (float32 [H,W] grey, label).

    hard in [0,1] scales the degradations (curriculum: training starts with clean crops).
    negative: the share of crops that hold no plate (negative_patch), labelled "" (read nothing)."""
    if negative and rng.random() < negative:
        plate, label = negative_patch(rng), ""
    else:
        plate, label, style = render_plate(rng, style)
    if rng.random() < hard:
        plate = plate_effects(plate, rng)
    pw, ph = plate.size
    # canvas with surroundings
    cw, ch = int(pw * 1.8), int(ph * 2.2)
    canvas = Image.new("RGB", (cw, ch), rand_color(rng))
    cd = ImageDraw.Draw(canvas)
    for _ in range(rng.randint(0, 4)):
        x, y = rng.uniform(0, cw), rng.uniform(0, ch)
        cd.rectangle([x, y, x + rng.uniform(10, cw), y + rng.uniform(5, ch / 2)], fill=rand_color(rng))
    quad = random_quad(rng, pw, ph, rng.uniform(0.3, 1.0) * hard)
    quad = [(x + cw / 2, y + ch / 2) for x, y in quad]
    bx, by, bw, bh = warp_onto(canvas, plate, quad)
    # detector-like box jitter, then the crop margin applied by the Rust side (~crop_margin)
    m = 0.08
    jx = rng.gauss(0, 0.05) * hard
    jy = rng.gauss(0, 0.08) * hard
    sw = math.exp(rng.gauss(0, 0.08) * hard)
    sh = math.exp(rng.gauss(0, 0.12) * hard)
    cx, cy = bx + bw / 2 + jx * bw, by + bh / 2 + jy * bh
    w2, h2 = bw * sw * (1 + 2 * m), bh * sh * (1 + 2 * m)
    if rng.random() < 0.35:  # whole-plate crops as in cropped datasets (loose)
        w2, h2 = bw * rng.uniform(1.0, 1.25), bh * rng.uniform(1.0, 1.4)
        cx, cy = bx + bw / 2, by + bh / 2
    box = (cx - w2 / 2, cy - h2 / 2, cx + w2 / 2, cy + h2 / 2)
    # effective resolution of the plate in the camera: 40..200 px wide
    target_w = int(math.exp(rng.uniform(math.log(40 + 60 * (1 - hard)), math.log(220))))
    scale = target_w / w2
    crop = canvas.crop(tuple(int(round(v)) for v in box))
    small = crop.resize((max(8, int(crop.width * scale)), max(4, int(crop.height * scale))), Image.BILINEAR)
    small = blur_pil(small, rng, hard)
    if rng.random() < 0.6 * hard:
        small = jpeg(small, rng, 20, 90)
    out = small.resize((W, H), Image.BILINEAR)
    a = to_grey(out)
    a = photometric(a, rng, hard)
    a = add_noise(a, rng, rng.uniform(0, 0.06) * hard if rng.random() < 0.7 else 0)
    return a, label


def scene_sample(rng, W=416, H=320, max_plates=4, empty_prob=0.1, min_w=16, max_w=420, labels=False,
                 letterbox=True):
    """A road scene at model-input scale (already resized as the Rust side does).

    Returns (float32 [H,W] grey, list of boxes (x, y, w, h) in pixels), and with labels=True
    also the plate texts, one per box (calibrate.py). letterbox: pad bands as the Rust side's
    resize leaves them (model input); off for full-resolution frames."""
    img, _ = background(rng, W, H, cars=rng.randint(0, 2))
    d = ImageDraw.Draw(img)
    n = 0 if rng.random() < empty_prob else rng.choice([1, 1, 2, 2, 3, max_plates])
    specs = []
    for _ in range(n):
        plate, label, style = render_plate(rng)
        plate = plate_effects(plate, rng)
        pw = math.exp(rng.uniform(math.log(min_w), math.log(max_w)))
        if rng.random() < 0.35:  # favour the small plates of real roadside photos
            pw = math.exp(rng.uniform(math.log(min_w), math.log(80)))
        pw = min(pw, W * 0.9)
        specs.append((plate, pw, rng.uniform(pw * 0.55, W - pw * 0.55), rng.uniform(0, H), rng.random() < 0.75,
                      label))
    # vehicles carrying the plates (drawn first, big ones behind)
    for plate, pw, cx, cy, on_car, _ in sorted(specs, key=lambda s: -s[1]):
        if on_car:
            cw = pw * rng.uniform(3.5, 6.0)
            ch = cw * rng.uniform(0.5, 0.9)
            fx, fy = rng.uniform(0.38, 0.62), rng.uniform(0.62, 0.8)
            draw_car(img, d, rng, cx - cw * fx, cy - ch * fy, cw, ch, rand_color(rng), plate_at=(fx, fy))
    for _ in range(rng.randint(0, 6)):
        draw_distractor(img, d, rng, W, H)
    boxes, texts = [], []
    for plate, pw, cx, cy, on_car, label in specs:
        ar = plate.width / plate.height
        sc = pw / plate.width
        quad = random_quad(rng, plate.width * sc, plate.height * sc, rng.uniform(0.2, 1.0))
        quad = [(x + cx, y + cy) for x, y in quad]
        xs = [p[0] for p in quad]
        ys = [p[1] for p in quad]
        if min(xs) < 1 or min(ys) < 1 or max(xs) > W - 1 or max(ys) > H - 1:
            continue
        nb = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
        if any(_inside(nb, b) for b in boxes):
            continue
        if sc < 1.0:
            plate = plate.resize((max(8, int(plate.width * sc * 1.5)), max(4, int(plate.height * sc * 1.5))),
                                 Image.BILINEAR)
        boxes.append(warp_onto(img, plate, quad))
        texts.append(label)
    img = blur_pil(img, rng, 0.7)
    if rng.random() < 0.5:
        img = jpeg(img, rng, 25, 90)
    a = to_grey(img)
    a = photometric(a, rng, 0.8)
    a = add_noise(a, rng, rng.uniform(0, 0.04))
    # letterbox padding as the Rust side does for other aspect ratios (pad = 0.5)
    r = rng.random()
    if r < 0.15 and letterbox:
        a[int(H * rng.uniform(0.75, 1.0)):, :] = 0.5
    elif r < 0.3 and letterbox:
        a[:, int(W * rng.uniform(0.7, 1.0)):] = 0.5
    keep = [k for k, b in enumerate(boxes) if b[0] + b[2] / 2 < W and b[1] + b[3] / 2 < H]
    if labels:
        return a, [boxes[k] for k in keep], [texts[k] for k in keep]
    return a, [boxes[k] for k in keep]


def _iou(a, b):
    ax1, ay1, ax2, ay2 = a[0], a[1], a[0] + a[2], a[1] + a[3]
    bx1, by1, bx2, by2 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    return inter / max(1e-6, a[2] * a[3] + b[2] * b[3] - inter)


def _inside(a, b):
    return not (a[0] > b[0] + b[2] or b[0] > a[0] + a[2] or a[1] > b[1] + b[3] or b[1] > a[1] + a[3])


def sample_rng(seed, index):
    return random.Random(seed * 1000003 + index)



def demo_scene(rng, W=1280, H=720, style=None):
    """A clean full-resolution demo scene with exactly one readable plate (for samples/).

    Returns (PIL RGB image, (x, y, w, h) box, label)."""
    img, _ = background(rng, W, H, cars=0)
    d = ImageDraw.Draw(img)
    plate, label, style = render_plate(rng, style)
    pw = rng.uniform(140, 230)
    if style != "us":
        pw = rng.uniform(170, 240)
    cw = pw * rng.uniform(4.0, 5.5)
    ch = cw * rng.uniform(0.55, 0.8)
    cx, cy = rng.uniform(W * 0.3, W * 0.7), rng.uniform(H * 0.5, H * 0.75)
    fx, fy = 0.5, rng.uniform(0.65, 0.75)
    draw_car(img, d, rng, cx - cw * fx, cy - ch * fy, cw, ch, rand_color(rng), plate_at=(fx, fy))
    for _ in range(rng.randint(1, 4)):
        draw_distractor(img, d, rng, W, H)
    sc = pw / plate.width
    quad = random_quad(rng, plate.width * sc, plate.height * sc, 0.25)
    quad = [(x + cx, y + cy) for x, y in quad]
    plate = plate.resize((int(plate.width * sc * 1.5), int(plate.height * sc * 1.5)), Image.BILINEAR)
    box = warp_onto(img, plate, quad)
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    return img, box, label

if __name__ == "__main__":
    import sys
    import time
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/synth"
    os.makedirs(out, exist_ok=True)
    t = time.time()
    tiles = []
    for i in range(48):
        a, lab = ocr_sample(sample_rng(1, i))
        tiles.append(a)
    print("ocr %.1f ms/sample" % ((time.time() - t) / 48 * 1000))
    grid = np.concatenate([np.concatenate(tiles[r * 4:(r + 1) * 4], 1) for r in range(12)], 0)
    Image.fromarray((grid * 255).astype(np.uint8)).save(os.path.join(out, "ocr_grid.png"))
    t = time.time()
    for i in range(6):
        a, boxes = scene_sample(sample_rng(2, i), 640, 384)
        im = Image.fromarray((a * 255).astype(np.uint8)).convert("RGB")
        d = ImageDraw.Draw(im)
        for x, y, w, h in boxes:
            d.rectangle([x, y, x + w, y + h], outline=(255, 0, 0))
        im.save(os.path.join(out, "scene%d.png" % i))
    print("scene %.1f ms/sample" % ((time.time() - t) / 6 * 1000))
    for i in range(6):
        p, lab, st = render_plate(sample_rng(3, i))
        p.save(os.path.join(out, "plate%d_%s.png" % (i, lab)))
