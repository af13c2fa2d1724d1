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


class OCR(nn.Module):
    """Fixed-slot plate reader: [N,1,32,128] -> [N, SLOTS, len(ALPHABET)] (softmax unless raw).

    Training also uses an auxiliary CTC head on 32 columns of the mid-level features (ctc=True);
    it makes the backbone learn characters quickly and is not part of the exported graph."""

    def __init__(self, slots=SLOTS, nclass=len(ALPHABET)):
        super().__init__()
        self.slots, self.nclass = slots, nclass
        self.f1 = nn.Sequential(
            cbr(1, 16), nn.MaxPool2d(2),                       # 16x64
            cbr(16, 32), cbr(32, 48), nn.MaxPool2d(2),         # 8x32
            cbr(48, 64), cbr(64, 64),                          # 8x32
        )
        self.f2 = nn.Sequential(
            nn.MaxPool2d(2),                                   # 4x16
            cbr(64, 128), cbr(128, 128), nn.MaxPool2d(2),      # 2x8
        )
        self.ctc = nn.Conv1d(64, nclass, 3, padding=1)
        self.fc1 = nn.Linear(128 * 2 * 8, 256)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(256, slots * nclass)

    def forward(self, x, raw=False, ctc=False):
        m = self.f1(x)
        h = torch.flatten(self.f2(m), 1)
        h = self.drop(F.relu(self.fc1(h)))
        o = self.fc2(h).reshape(-1, self.slots, self.nclass)
        if ctc:
            c = self.ctc(m.mean(2))  # [N, nclass, 32]
            return o, c
        if raw:
            return o
        return torch.softmax(o, -1)


class CTCSlots(nn.Module):
    """Export wrapper: turns the OCR's CTC column head into the fixed-slot contract.

    Greedy CTC decoding with static ops only (Softmax, ReduceMax, comparisons, MatMul):
    a column starts a character when its argmax is not the blank and differs from the previous
    column's; the k-th such column fills slot k with its probability vector; slots left over get
    the pad class with probability 1. Output [N, slots, nclass], text left-aligned."""

    def __init__(self, ocr):
        super().__init__()
        self.ocr = ocr
        T = 32
        S, C = ocr.slots, ocr.nclass
        self.register_buffer("upper", torch.triu(torch.ones(T, T)))          # cumsum as a MatMul
        self.register_buffer("slot_ids", torch.arange(1, S + 1, dtype=torch.float32).reshape(1, 1, S))
        pad = torch.zeros(1, 1, C)
        pad[0, 0, C - 1] = 1.0
        self.register_buffer("pad", pad)

    def forward(self, x):
        m = self.ocr.f1(x)
        c = self.ocr.ctc(m.mean(2))                      # [N, C, T]
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
