"""Network definitions for the platecam detector and OCR."""
import torch
import torch.nn as nn
import torch.nn.functional as F

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_"
SLOTS = 9


def cbr(cin, cout, k=3, s=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class Detector(nn.Module):
    """CenterNet-style plate detector, stride 4, ~0.6 GMAC at 384x640.

    Output [N, 5, H/4, W/4]: sigmoid(centre prob), sigmoid(off x), sigmoid(off y),
    ln(w/stride), ln(h/stride). With raw=True the first three channels are logits (training)."""
    stride = 4

    def __init__(self):
        super().__init__()
        self.s2 = cbr(1, 16, 3, 2)                                        # /2
        self.s4 = nn.Sequential(cbr(16, 24, 3, 2), cbr(24, 24))           # /4
        self.s8 = nn.Sequential(cbr(24, 48, 3, 2), cbr(48, 48))           # /8
        self.s16 = nn.Sequential(cbr(48, 64, 3, 2), cbr(64, 64))          # /16
        self.s32 = nn.Sequential(cbr(64, 96, 3, 2), cbr(96, 96), cbr(96, 96))  # /32
        self.l16 = cbr(96, 64, 1)
        self.m16 = cbr(64, 64)
        self.l8 = cbr(64, 48, 1)
        self.m8 = cbr(48, 48)
        self.l4 = cbr(48, 24, 1)
        self.m4 = cbr(24, 24)
        self.head = nn.Sequential(cbr(24, 32), nn.Conv2d(32, 5, 1))
        nn.init.constant_(self.head[1].bias, 0.0)
        with torch.no_grad():
            self.head[1].bias[0] = -4.0

    def forward(self, x, raw=False):
        f4 = self.s4(self.s2(x))
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        f32 = self.s32(f16)
        p = F.interpolate(self.l16(f32), scale_factor=2.0, mode="nearest") + f16
        p = self.m16(p)
        p = F.interpolate(self.l8(p), scale_factor=2.0, mode="nearest") + f8
        p = self.m8(p)
        p = F.interpolate(self.l4(p), scale_factor=2.0, mode="nearest") + f4
        p = self.m4(p)
        o = self.head(p)
        if raw:
            return o
        return torch.cat([torch.sigmoid(o[:, 0:3]), o[:, 3:5]], 1)


class Residual(nn.Module):
    """relu(x + branch(x)), the branch two 3x3 convolutions (2-D) or 3-wide ones (1-D).

    The branch's last BatchNorm starts with zero scale, so a new block passes its input unchanged
    (its inputs come out of a ReLU): [`OCR.deepen`] adds such blocks to a trained reader."""

    def __init__(self, ch, dims=2):
        super().__init__()
        conv, bn = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv1d, nn.BatchNorm1d)
        self.branch = nn.Sequential(conv(ch, ch, 3, padding=1, bias=False), bn(ch), nn.ReLU(inplace=True),
                                    conv(ch, ch, 3, padding=1, bias=False), bn(ch))
        nn.init.zeros_(self.branch[4].weight)

    def forward(self, x):
        return torch.relu(x + self.branch(x))


class OCR(nn.Module):
    """CTC plate reader: [N,1,H,128] -> logits [N, len(ALPHABET), 32] (one column per 4 pixels).

    The height is folded into the channels (not averaged away: M, W, H and N differ only in
    their upper and lower halves), then 1-D convolutions see about two characters either side.

    height 32 (the first readers) or 64: a US plate crop is about twice as wide as tall, so at 32
    rows its characters are some 15 pixels high, less than the camera saw; at 64 a strided stem
    brings the crop to 32 rows in STEM channels before the same network, so the detail that
    separates 0/O, 8/B or 1/I can reach it ([`widen`] starts such a reader from a 32-row one).

    deep: one residual block at 8x32 (where the strokes that separate look-alikes are a few
    rows tall) and one in the 1-D head ([`deepen`] starts such a reader from a shallow one)."""

    T = 32
    STEM = 8

    # where deep=True inserts its blocks, as indices into f and seq (deepen renumbers after them)
    F_BLOCK, SEQ_BLOCK = 6, 6

    def __init__(self, slots=SLOTS, nclass=len(ALPHABET), height=32, deep=False):
        super().__init__()
        if height not in (32, 64):
            raise ValueError("OCR height %d: 32 or 64" % height)
        self.slots, self.nclass, self.height, self.deep = slots, nclass, height, deep
        # registered before f: onnx_init.py pairs ONNX convolutions with the net's in this order
        self.stem = nn.Sequential(nn.Conv2d(1, self.STEM, (4, 3), (2, 1), (1, 1)), nn.ReLU(inplace=True)) \
            if height == 64 else None
        f = [
            cbr(self.STEM if height == 64 else 1, 32), nn.MaxPool2d(2),  # 16x64
            cbr(32, 64), nn.MaxPool2d(2),                           # 8x32
            cbr(64, 96), cbr(96, 96), nn.MaxPool2d((2, 1)),         # 4x32
            cbr(96, 128), cbr(128, 128), nn.MaxPool2d((2, 1)),      # 2x32
        ]
        seq = [
            nn.Conv1d(256, 192, 3, padding=1, bias=False), nn.BatchNorm1d(192), nn.ReLU(inplace=True),
            nn.Conv1d(192, 192, 3, padding=2, dilation=2, bias=False), nn.BatchNorm1d(192),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Conv1d(192, nclass, 1),
        ]
        if deep:
            f.insert(self.F_BLOCK, Residual(96, 2))
            seq.insert(self.SEQ_BLOCK, Residual(192, 1))
        self.f = nn.Sequential(*f)
        self.seq = nn.Sequential(*seq)

    def forward(self, x):
        if self.stem is not None:
            x = self.stem(x)                                       # [N, STEM, 32, 128]
        m = self.f(x)                                              # [N, 128, 2, 32]
        return self.seq(m.flatten(1, 2))                           # [N, nclass, 32]

    @staticmethod
    def height_of(state):
        """The input height of the reader whose state dict this is."""
        return 64 if "stem.0.weight" in state else 32

    @classmethod
    def deep_of(cls, state):
        """Whether the reader whose state dict this is has the residual blocks."""
        return "f.%d.branch.0.weight" % cls.F_BLOCK in state

    @classmethod
    def deepen(cls, state, seed=0):
        """(state of a deep reader that reads as the shallow reader `state` does, the names of the
        new blocks' entries: parameters and BatchNorm statistics). The new blocks start as
        identities (their last BatchNorm scale is zero); the layers after them are renumbered."""
        torch.manual_seed(seed)  # the new blocks' first convolutions start random
        deep = cls(height=cls.height_of(state), deep=True)
        out = {k: v.clone() for k, v in deep.state_dict().items()}
        old = set()
        for k, v in state.items():
            part, idx, rest = k.split(".", 2) if k.startswith(("f.", "seq.")) else (k, None, None)
            if idx is not None and int(idx) >= {"f": cls.F_BLOCK, "seq": cls.SEQ_BLOCK}[part]:
                k = "%s.%d.%s" % (part, int(idx) + 1, rest)
            out[k] = v.clone()
            old.add(k)
        return out, sorted(set(out) - old)

    @classmethod
    def widen(cls, state, seed=0):
        """The state of a 64-row reader that reads as the 32-row reader `state` does.

        Stem channel 0 averages each pair of rows (what the 32-row crop holds; inputs are >= 0,
        so its ReLU passes it unchanged) and feeds the old first convolution; the other stem
        channels start random, and the first convolution's weights for them at zero, so training
        starts from the 32-row reader and grows the use of the finer rows from there."""
        torch.manual_seed(seed)  # the new stem channels' random start
        wide = cls(height=64, deep=cls.deep_of(state))
        out = {k: v.clone() for k, v in wide.state_dict().items()}
        for k, v in state.items():
            if k != "f.0.0.weight":
                out[k] = v.clone()
        first = torch.zeros_like(out["f.0.0.weight"])
        first[:, 0:1] = state["f.0.0.weight"]
        out["f.0.0.weight"] = first
        stem = out["stem.0.weight"]
        stem[0].zero_()
        stem[0, 0, 1:3, 1] = 0.5
        out["stem.0.bias"][0] = 0.0
        return out


class CTCSlots(nn.Module):
    """Export wrapper: turns the OCR's CTC column head into the fixed-slot contract.

    Greedy CTC decoding with static ops only (Softmax, ReduceMax, comparisons, MatMul):
    a column starts a character when its argmax is not the blank and differs from the previous
    column's; the k-th such column fills slot k with its probability vector; slots left over get
    the pad class with probability 1. Output [N, slots, nclass], text left-aligned."""

    def __init__(self, ocr):
        super().__init__()
        self.ocr = ocr
        T = ocr.T
        S, C = ocr.slots, ocr.nclass
        self.register_buffer("upper", torch.triu(torch.ones(T, T)))          # cumsum as a MatMul
        self.register_buffer("slot_ids", torch.arange(1, S + 1, dtype=torch.float32).reshape(1, 1, S))
        pad = torch.zeros(1, 1, C)
        pad[0, 0, C - 1] = 1.0
        self.register_buffer("pad", pad)

    def forward(self, x):
        c = self.ocr(x)                                  # [N, C, T]
        p = torch.softmax(c, 1).transpose(1, 2)          # [N, T, C]
        onehot = (p >= p.max(2, keepdim=True)[0]).float()
        not_blank = 1.0 - onehot[:, :, -1]               # [N, T]
        prev = torch.cat([torch.zeros_like(onehot[:, :1]), onehot[:, :-1]], 1)
        same = (onehot * prev).sum(2)                    # 1 when the argmax repeats
        start = not_blank * (1.0 - same)                 # [N, T]
        pos = torch.matmul(start, self.upper) * start    # running count at the starting columns
        assign = (pos.unsqueeze(2) == self.slot_ids).float()   # [N, T, S]
        slots = torch.matmul(assign.transpose(1, 2), p)  # [N, S, C]
        filled = assign.sum(1).unsqueeze(2)              # [N, S, 1]
        return slots + (1.0 - filled) * self.pad


def greedy_ctc(logits):
    """Greedy CTC decode of [N, C, T] logits into strings (repeats merged, blanks dropped)."""
    blank = len(ALPHABET) - 1
    out = []
    for row in logits.argmax(1).tolist():
        prev, chars = blank, []
        for k in row:
            if k != blank and k != prev:
                chars.append(ALPHABET[k])
            prev = k
        out.append("".join(chars))
    return out
