"""Context-modelled entropy codes for the labels and positions of our .nqz files, against NNCodec (MPEG NNR).

    OMP_NUM_THREADS=1 python benchmarks/explore_context_codes.py [--reference reference/cpu] \\
        [--networks lenet5 resnet32] [--files uniform-paper.nqz ...] [--group 6] [--chunk 64] \\
        [--speed [--speed-files lenet5/uniform-paper.nqz ...]] [--out results.json]

(about 1.5 minutes on one core for both networks, --speed included)

Research script (nothing here is used by netquant). For every Table 1 file of the networks (``pruned.nqz``
skipped) it measures the ideal code length, in bits, of the file's labels and positions under several
ADAPTIVE models - models whose probabilities depend only on what the decoder has already decoded and on
what the file already tells it (the codebooks, each tensor's shape and kept count, all in META today) - and
sets the totals beside NNCodec's lossless bits (``<reference>/benchmarks/nncodec_<network>.json``, part
"lossless") and beside our best code today (ans-layer labels + mask-context positions, re-encoded here).

Total of a model = 32 bits per codebook value + label bits + position bits + side information (none of the
adaptive models stores any) + ``OVERHEAD_BITS`` (framing of the five sections BOOK, LTAB, LBIT, ITAB, IBIT
as the format frames them today, 5 x 12 bytes, plus 64 bits per ANS stream for two streams). An ANS coder
reaches the ideal length within a few bytes per stream (``--speed`` checks it on a real coder).

Symbols. Each quantized tensor's labels become signed ranks as NNCodec was given them: pruned = 0, the
codebook values below 0 are -1, -2, ... and those above 0 are +1, +2, ... outward from zero.
A tensor is seen as a 4-D array (O, I, kh, kw): a conv weight as it is; a linear weight whose inputs are the
flattened output of the previous layer (in_features = previous out_features * s * s, s > 1: LeNet-5's fc1
reads conv2's 50 x 4 x 4 maps) as (out, channels, s, s); any other linear weight as (out, in, 1, 1); a 1-D
tensor (bias, BatchNorm) of n elements as (n, 1, 1, 1). "Row-major" below is the order of the original
tensor's elements; "plane order" visits the kernel positions j = (y, x) in raster order, then groups of G
output filters, then (o, i) row-major within the group.

Estimators:
- KT: a binary context's adaptive counts with a Krichevsky-Trofimov prior, p(1) = (n1 + 1/2) / (n + 1);
  multi-symbol: Dirichlet(1/2) counts. Code length depends only on each context's final counts.
- blend (hierarchical counts): a list of context levels from coarse to fine; the probability at level l is
  (n_l(s) + beta_l * p_{l-1}(s)) / (n_l + beta_l), p_{-1} uniform. Levels are either global (shared by all
  tensors of the file, kept across tensors) or per tensor (reset at each tensor).
- two-rate (DeepCABAC / VVC style): per context two exponential estimators p += (b - p) / 2^r, r = 4 and 7,
  from p = 1/2, averaged.
- batched: the same counts, but an event sees only the counts of earlier batches (one batch = one kernel
  position j of G filters x up to CHUNK input channels). That is what a decoder needs to decode a batch
  with one vectorised call.

Models (see the report for the numbers):
- positions: "mask-ans" (per-tensor Bernoulli, entropy bound); "P1-kt" DeepCABAC-like significance flags in
  row-major order, per-tensor KT contexts (left 2 flags, flag above in the previous row, bucket of the
  column's kept fraction so far), also with global contexts, input-channel-major scan, two-rate estimator;
  "P2" plane order, blend of (global: conv?, rc) -> (global: conv?, rc, nkc) -> (tensor: rc, nkc) ->
  (tensor: rc, nkc, cb), where nkc = kept count and number of the causal kernel neighbours (left, up,
  up-left, up-right: earlier planes), rc = bucket of the log-odds product of the filter's and the input
  channel's kept fractions over the earlier planes (the mask-context formula), cb = bucket of the kept
  fraction of the element's column (i, j) among the earlier filter groups of the plane; sequential and
  batched; "P2+mag": P2 with the neighbours' label magnitudes added (joint coding: labels of a batch are
  decoded right after its flags).
- labels: "L1-dir" per-tensor adaptive multi-symbol counts (what ans-layer stores as a table, learnt
  instead); "L1g" one global adaptive model; "L2" DeepCABAC binarisation - sign flag, unary
  "greater than i" flags i = 1..8 (none past the largest rank of that sign), then exp-Golomb-0 of m - 8 with
  every prefix and suffix bit context coded - blend (global) -> (tensor) without neighbour contexts;
  "L3" L2 with neighbour contexts (kernel neighbours left, up, up-left, up-right: earlier planes; 0 when
  pruned or outside): with a = |left| + |up| + (|up-left| + |up-right|) // 2, the sign given
  clip(left + up, -4, 4), the "greater than i" flags given a (0..7, then 8..12 for a in [8, 16), [16, 32),
  ... by powers of two), the exp-Golomb prefix bits also given min(floor(log2(a + 1)), 7); sequential and
  batched (plane order, labels of a tensor decoded after its mask).

--speed: the design as netquant implements it (the ``plane-context`` codes, ``netquant.coding.context``) on
the --speed-files, checked to round-trip, with its actual size and decode time; and, on the first file,
a per-element pure-Python decoder of the row-major P1-kt significance model to show what a per-decision
Python loop costs.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import constriction
import numpy as np
from scipy.signal import lfilter
from scipy.special import gammaln

from netquant import container
from netquant.coding.context import Counts as Blend
from netquant.coding.context import kernel_neighbours
from netquant.container import format as nqz_format
from netquant.qmodel import PRUNED

REPO = Path(__file__).resolve().parents[1]
TODAY_SECTIONS = ("BOOK", "LTAB", "LBIT", "ITAB", "IBIT")
OVERHEAD_BITS = 5 * 12 * 8 + 2 * 64  # section framing as today + ANS flush of two streams
NONE = 1 << 20  # "no neighbour here" (outside the kernel) in neighbour arrays
GROUP = 6  # filters per batch in plane order (--group)
CHUNK = 64  # input channels per batch in plane order (--chunk)
UNARY = 8  # "greater than i" flags before the exp-Golomb remainder
RC_PRIOR = 8.0  # weight, in elements, of the tensor's density in the filter / channel estimates of rc
CB_EDGES = (0.05, 0.15, 0.3, 0.5, 0.75)
SIG_BETAS = (4.0, 32.0, 32.0, 32.0)
LAB_BETAS = (1.0, 4.0, 16.0, 16.0)
REM_BETAS = (4.0, 16.0)


# --------------------------------------------------------------------------------------------------
# the files


@dataclass
class View:
    """One quantized tensor as the models see it."""

    name: str
    shape: tuple  # the tensor's own shape
    view: tuple  # (O, I, kh, kw)
    ranks: np.ndarray  # int64, row-major over ``shape`` (= over ``view``), pruned = 0
    nneg: int  # codebook values below zero (largest negative rank magnitude)
    npos: int  # codebook values above zero

    @property
    def spatial(self) -> int:
        return int(self.view[2] * self.view[3] > 1)

    @property
    def kept(self) -> int:
        return int(np.count_nonzero(self.ranks))


def signed_ranks(book: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Labels as NNCodec's symbols: pruned 0, values below 0 ranked -1, -2, ..., above 0 +1, +2, ... from 0."""
    order = np.argsort(book, kind="stable")
    below = int((book < 0).sum())
    position = np.empty(len(book), np.int64)
    position[order] = np.arange(len(book))
    rank_of = np.where(book < 0, position - below, position - below + 1)
    ranks = np.zeros(labels.size, np.int64)
    kept = labels != PRUNED
    ranks[kept] = rank_of[labels[kept]]
    return ranks


def views(qmodel) -> list[View]:
    """The quantized tensors of a model, in state_dict order, with their 4-D views (module docstring)."""
    out, previous_out = [], None
    for name in qmodel.order:
        if name not in qmodel.tensors:
            continue
        t = qmodel.tensors[name]
        book = qmodel.codebooks[t.codebook]
        shape = tuple(t.shape)
        if len(shape) == 4:
            view = shape
        elif len(shape) == 2:
            view = (shape[0], shape[1], 1, 1)
            if previous_out and shape[1] % previous_out == 0:
                s = math.isqrt(shape[1] // previous_out)
                if s > 1 and s * s * previous_out == shape[1]:
                    view = (shape[0], previous_out, s, s)
        else:
            view = (int(np.prod(shape)), 1, 1, 1)
        if len(shape) >= 2:
            previous_out = shape[0]
        nneg = int((book < 0).sum())
        out.append(View(name, shape, view, signed_ranks(book, t.labels), nneg, len(book) - nneg))
    return out


def ours_today(qmodel) -> dict:
    """Bits of our best code today (ans-layer labels, mask-context positions): framed sections."""
    parsed = nqz_format.parse(nqz_format.Encoding(qmodel).file("ans-layer", "mask-context"))
    return {s: 8 * parsed.section_bytes[s] for s in TODAY_SECTIONS}


def content_key(qmodel) -> str:
    """Files with the same codebooks and labels get the same numbers: computed once."""
    h = hashlib.sha1()
    for book in qmodel.codebooks:
        h.update(book.tobytes())
    for name in qmodel.order:
        if name in qmodel.tensors:
            h.update(name.encode() + qmodel.tensors[name].labels.tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# estimators


def cumcount(keys: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions hold the same key."""
    keys = np.asarray(keys)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    start = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    index = np.arange(keys.size)
    first = np.maximum.accumulate(np.where(start, index, 0))
    out = np.empty(keys.size, np.int64)
    out[order] = index - first
    return out


def blend_probabilities(levels, symbols, k, betas, batch=None) -> np.ndarray:
    """Probability of each event's symbol under the hierarchical counts (module docstring); events in coding
    order; ``levels`` int64 context ids per event, coarse to fine. With ``batch`` an event sees only the
    counts of events in earlier batches."""
    symbols = np.asarray(symbols, np.int64)
    p = np.full(symbols.size, 1.0 / k)
    for ids, beta in zip(levels, betas):
        ids = np.asarray(ids, np.int64)
        n, ns = cumcount(ids), cumcount(ids * k + symbols)
        if batch is not None:
            both = ids * (1 << 22) + batch
            n, ns = n - cumcount(both), ns - cumcount(both * k + symbols)
        p = (ns + beta * p) / (n + beta)
    return p


def kt_bits(contexts, bits) -> float:
    """Ideal bits of binary events under adaptive KT counts per context (closed form)."""
    if len(contexts) == 0:
        return 0.0
    _, inverse = np.unique(np.asarray(contexts), return_inverse=True)
    n = np.bincount(inverse).astype(float)
    n1 = np.bincount(inverse, weights=np.asarray(bits, float))
    log_p = gammaln(n - n1 + 0.5) + gammaln(n1 + 0.5) - 2 * gammaln(0.5) - gammaln(n + 1.0) + gammaln(1.0)
    return float(-log_p.sum() / math.log(2))


def dirichlet_bits(contexts, symbols, k) -> float:
    """Ideal bits of k-ary events under adaptive Dirichlet(1/2) counts per context (closed form)."""
    if len(contexts) == 0:
        return 0.0
    _, inverse = np.unique(np.asarray(contexts), return_inverse=True)
    counts = np.bincount(inverse * k + np.asarray(symbols), minlength=(inverse.max() + 1) * k)
    counts = counts.reshape(-1, k).astype(float)
    log_p = gammaln(k * 0.5) - gammaln(counts.sum(1) + k * 0.5) + (gammaln(counts + 0.5) - gammaln(0.5)).sum(1)
    return float(-log_p.sum() / math.log(2))


def two_rate_bits(contexts, bits, rates=(4, 7)) -> float:
    """Ideal bits of binary events under DeepCABAC-style estimators: per context, two exponential estimates
    p += (b - p) / 2^r from 1/2, averaged (floating point, no state tables)."""
    contexts = np.asarray(contexts)
    bits = np.asarray(bits, float)
    order = np.argsort(contexts, kind="stable")
    c, b = contexts[order], bits[order]
    bounds = np.flatnonzero(np.r_[True, c[1:] != c[:-1], True])
    total = 0.0
    for s, e in itertools.pairwise(bounds):
        x = b[s:e]
        p = np.zeros(e - s)
        for r in rates:
            a = 2.0 ** -r
            y = lfilter([a], [1.0, -(1 - a)], x, zi=[(1 - a) * 0.5])[0]  # estimate after each event
            p += np.r_[0.5, y[:-1]] / len(rates)  # estimate before each event
        total += float(-(x * np.log2(p) + (1 - x) * np.log2(1 - p)).sum())
    return total


# --------------------------------------------------------------------------------------------------
# row-major significance (DeepCABAC-like) with KT or two-rate contexts


def rowmajor_features(v: View, scan: str = "row") -> tuple[np.ndarray, np.ndarray]:
    """(context id, flag) of every element of a partly pruned tensor in row-major order (``scan="row"``; rows
    = output units) or input-channel-major order (``scan="channel"``: rows = input channels, each row the
    (output, kernel position) elements). Context: left flag, the one before, the flag above (previous row,
    same column; 2 in the first row), bucket of the column's kept fraction over the earlier rows."""
    o, i, kh, kw = v.view
    m = (v.ranks != 0).reshape(o, i * kh * kw) if scan == "row" else \
        (v.ranks != 0).reshape(o, i, kh * kw).transpose(1, 0, 2).reshape(i, o * kh * kw)
    m = m.astype(np.int64)
    rows = m.shape[0]
    left1, left2 = np.zeros_like(m), np.zeros_like(m)
    left1[:, 1:], left2[:, 2:] = m[:, :-1], m[:, :-2]
    up = np.full_like(m, 2)
    up[1:] = m[:-1]
    column = np.cumsum(m, 0) - m
    r = np.arange(rows)[:, None]
    frac = (column + 0.5) / (r + 1.0)
    colb = np.where(r == 0, 0, 1 + np.searchsorted([0.02, 0.06, 0.12, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9],
                                                   frac, side="right"))
    ctx = ((left1 * 2 + left2) * 3 + up) * 16 + colb
    return ctx.reshape(-1), m.reshape(-1)


def p1_bits(vs: list[View], per_tensor=True, scan="row", estimator="kt") -> float:
    """Ideal bits of the row-major significance model P1 over all partly pruned tensors."""
    contexts, flags = [], []
    for t, v in enumerate(vs):
        if 0 < v.kept < v.ranks.size:
            c, b = rowmajor_features(v, scan)
            contexts.append(c + (t << 20 if per_tensor else 0))
            flags.append(b)
    if not contexts:
        return 0.0
    c, b = np.concatenate(contexts), np.concatenate(flags)
    return kt_bits(c, b) if estimator == "kt" else two_rate_bits(c, b)


def mask_entropy_bits(vs: list[View]) -> float:
    """sum size * H(kept / size): what mask-ans reaches."""
    total = 0.0
    for v in vs:
        n, k = v.ranks.size, v.kept
        if 0 < k < n:
            p = k / n
            total -= n * (p * math.log2(p) + (1 - p) * math.log2(1 - p))
    return total


# --------------------------------------------------------------------------------------------------
# the plane-order design: one loop that both measures (records every event) and codes (real rANS)


class Recorder:
    """Collects the events of one kind (context ids per level, bit, batch) for the ideal-length analysis."""

    def __init__(self):
        self.ids, self.bits, self.batch, self.tensor = [], [], [], []

    def add(self, ids, bits, batch, tensor):
        self.ids.append(np.stack([np.asarray(i, np.int64) for i in ids], 1))
        self.bits.append(np.asarray(bits, np.int64))
        self.batch.append(np.full(len(bits), batch, np.int64))
        self.tensor.append(np.full(len(bits), tensor, np.int64))

    def arrays(self):
        if not self.bits:
            return None
        return (np.concatenate(self.ids), np.concatenate(self.bits), np.concatenate(self.batch),
                np.concatenate(self.tensor))


class PlaneCodec:
    """The batched design: per tensor, the mask in plane order (P2), then the labels in plane order (L3).

    ``decide(model, p, bits)``: the coder hook, called once per batch of binary decisions with their
    probabilities of 1; returns the bits (the true ones when encoding, decoded ones when decoding).
    ``magnitude_context``: P2+mag, the significance contexts also see the neighbours' label magnitudes (then
    each batch's labels are coded right after its flags)."""

    def __init__(self, decide, magnitude_context=False, record=False):
        self.decide = decide
        self.mag = magnitude_context
        self.record = record
        mag_size = 9 if magnitude_context else 1
        # significance: (conv, rc), (conv, rc, nkc[, mag]), tensor (rc, nkc[, mag]), tensor (rc, nkc[, mag], cb)
        self.sig = Blend([2 * 24, 2 * 24 * 25 * mag_size, 24 * 25 * mag_size, 24 * 25 * mag_size * 6], SIG_BETAS)
        # sign: (conv), tensor, (conv, pred), tensor (pred)
        self.sign = Blend([2, 1, 2 * 9, 9], LAB_BETAS)
        # flags: (conv, i, s), tensor (i, s), (conv, mall, i, s), tensor (mall, i, s)
        self.flag = Blend([2 * 16 * 2, 16 * 2, 2 * 13 * 16 * 2, 13 * 16 * 2], LAB_BETAS)
        # exp-Golomb prefix (j, s) and suffix (length, bit): global, tensor
        self.prefix = Blend([64 * 2, 64 * 2, 8 * 64 * 2], REM_BETAS + REM_BETAS[-1:])
        self.suffix = Blend([64 * 64, 64 * 64], REM_BETAS)
        self.rec = {k: Recorder() for k in ("sig", "sign", "flag", "prefix", "suffix")}
        self.batch = 0
        self.tensor_index = 0

    def _code(self, blend, kind, ids, bits=None):
        p = np.clip(blend.prob(ids), 1e-6, 1 - 1e-6)
        out = np.asarray(self.decide(kind, p, bits), dtype=np.int64)
        blend.update(ids, out)
        if self.record:
            self.rec[kind].add(ids, out, self.batch, self.tensor_index)
        return out

    def run(self, vs: list[View], ranks: list[np.ndarray] | None) -> list[np.ndarray]:
        """Code the tensors (``ranks`` given: encoding) or decode them (``ranks`` None); returns the ranks."""
        out = []
        for t, v in enumerate(vs):
            self.tensor_index = t
            truth = None if ranks is None else ranks[t].reshape(v.view)
            out.append(self.tensor(v, truth).reshape(-1))
        return out

    def tensor(self, v: View, truth) -> np.ndarray:
        o, i, kh, kw = v.view
        size, kept = o * i * kh * kw, v.kept
        a4 = np.zeros((o, i, kh, kw), np.int64)  # decoded ranks (0 = pruned or not yet decoded)
        m4 = np.zeros((o, i, kh, kw), bool)
        self.sig.reset([2, 3])
        for blend in (self.sign, self.flag, self.prefix, self.suffix):
            levels = len(blend.betas)
            blend.reset([1, 3] if levels == 4 else list(range(1, levels)))
        if kept == size:
            m4[:] = True
        if 0 < kept < size:
            d = kept / size
            filter_kept = np.zeros(o)
            channel_kept = np.zeros(i)
            for j in range(kh * kw):
                y, x = divmod(j, kw)
                column_kept = np.zeros(i)
                for o0 in range(0, o, GROUP):
                    o1 = min(o0 + GROUP, o)
                    for i0 in range(0, i, CHUNK):
                        i1 = min(i0 + CHUNK, i)
                        self.mask_batch(v, m4, a4, truth, d, j, o0, o1, i0, i1, filter_kept, channel_kept,
                                        column_kept)
                        if self.mag:
                            self.labels_batch(v, a4, m4, truth, j, o0, o1, i0, i1)
                        self.batch += 1
                filter_kept += m4[:, :, y, x].sum(1)
                channel_kept += m4[:, :, y, x].sum(0)
        if int(m4.sum()) != kept:
            raise ValueError(f"{v.name}: decoded mask keeps {int(m4.sum())}, {kept} announced")
        if not self.mag or kept == size:
            for j in range(kh * kw):
                for o0 in range(0, o, GROUP):
                    for i0 in range(0, i, CHUNK):
                        self.labels_batch(v, a4, m4, truth, j, o0, min(o0 + GROUP, o), i0, min(i0 + CHUNK, i))
                        self.batch += 1
        return a4

    def mask_batch(self, v: View, m4, a4, truth, d, j, o0, o1, i0, i1, filter_kept, channel_kept, column_kept):
        """Significance flags of filters o0:o1, input channels i0:i1 at kernel position j (P2)."""
        o, i, _, kw = v.view
        y, x = divmod(j, kw)
        present = [n_ for n_ in kernel_neighbours(m4, o0, o1, i0, i1, y, x) if n_ is not None]
        nk = sum(n_.astype(np.int64) for n_ in present) if present else 0
        nkc = np.broadcast_to(nk * 5 + len(present), (o1 - o0, i1 - i0))
        pf = (filter_kept[o0:o1] + RC_PRIOR * d) / (i * j + RC_PRIOR)
        pc = (channel_kept[i0:i1] + RC_PRIOR * d) / (o * j + RC_PRIOR)
        lo = np.log(pf / (1 - pf))[:, None] + np.log(pc / (1 - pc))[None, :] - math.log(d / (1 - d))
        rc = np.clip(np.floor(lo * 1.5).astype(np.int64) + 15, 0, 23)
        if o0 == 0:
            cb = np.zeros((o1 - o0, i1 - i0), np.int64)
        else:
            frac = (column_kept[i0:i1] + 0.5) / (o0 + 1.0)
            cb = np.broadcast_to(1 + np.searchsorted(CB_EDGES, frac, side="right"), (o1 - o0, i1 - i0))
        ctx = rc * 25 + nkc
        if self.mag:  # neighbours' label magnitudes (their labels are decoded already)
            mags = [0 if n_ is None else np.abs(n_) for n_ in kernel_neighbours(a4, o0, o1, i0, i1, y, x)]
            ctx = ctx * 9 + np.broadcast_to(np.minimum(mags[0] + mags[1] + (mags[2] + mags[3]) // 2, 8), ctx.shape)
        conv = v.spatial
        ids = [(conv * 24 + rc).reshape(-1), (conv * 24 * 25 * (9 if self.mag else 1) + ctx).reshape(-1),
               ctx.reshape(-1), (ctx * 6 + cb).reshape(-1)]
        bits = None if truth is None else (truth[o0:o1, i0:i1, y, x] != 0).reshape(-1)
        got = self._code(self.sig, "sig", ids, bits).reshape(o1 - o0, i1 - i0).astype(bool)
        m4[o0:o1, i0:i1, y, x] = got
        column_kept[i0:i1] += got.sum(0)

    def labels_batch(self, v: View, a4, m4, truth, j, o0, o1, i0, i1):
        """Labels of the kept elements of filters o0:o1, input channels i0:i1 at kernel position j (L3)."""
        kw = v.view[3]
        y, x = divmod(j, kw)
        keep = m4[o0:o1, i0:i1, y, x]
        if not keep.any():
            return
        n = int(keep.sum())
        vals = kernel_neighbours(a4, o0, o1, i0, i1, y, x)
        zero = np.zeros((o1 - o0, i1 - i0), np.int64)
        left, up, upleft, upright = [zero if n_ is None else n_ for n_ in vals]
        pred = (np.clip(left + up, -4, 4) + 4)[keep]
        around = (np.abs(left) + np.abs(up) + (np.abs(upleft) + np.abs(upright)) // 2)[keep]
        # log2 scale of the neighbours' magnitudes, for the exp-Golomb length of large ranks
        scale = np.minimum(np.floor(np.log2(around + 1)).astype(np.int64), 7)
        mall = np.where(around < 8, around, 5 + scale)  # 0..7 as they are, then 8..12 by powers of two
        true = None if truth is None else truth[o0:o1, i0:i1, y, x][keep]
        conv = v.spatial
        # sign
        if v.nneg and v.npos:
            ids = [np.full(n, conv), np.zeros(n, np.int64), conv * 9 + pred, pred]
            positive = self._code(self.sign, "sign", ids, None if true is None else true > 0).astype(bool)
        else:
            positive = np.full(n, v.npos > 0)
        s = positive.astype(np.int64)
        largest = np.where(positive, v.npos, v.nneg)
        mag = np.ones(n, np.int64)
        active = np.ones(n, bool)
        for step in range(1, UNARY + 1):
            cand = np.flatnonzero(active & (largest > step))
            active[:] = False
            if cand.size == 0:
                break
            e = step * 2 + s[cand]
            ids = [conv * 32 + e, e, (conv * 13 + mall[cand]) * 32 + e, mall[cand] * 32 + e]
            bits = None if true is None else np.abs(true[cand]) > step
            more = self._code(self.flag, "flag", ids, bits).astype(bool)
            mag[cand[more]] = step + 1
            active[cand[more]] = True
        rest = np.flatnonzero(active & (largest > UNARY))  # m > UNARY: exp-Golomb-0 of m - UNARY >= 1
        if rest.size:
            value = None if true is None else np.abs(true[rest]) - UNARY
            length = np.zeros(rest.size, np.int64)
            open_ = np.ones(rest.size, bool)
            step = 0
            while open_.any():
                idx = np.flatnonzero(open_)
                e = np.full(idx.size, step * 2) + s[rest[idx]]
                bits = None if value is None else (np.floor(np.log2(value[idx])).astype(np.int64) > step)
                one = self._code(self.prefix, "prefix", [e, e, scale[rest[idx]] * 128 + e], bits).astype(bool)
                length[idx[one]] += 1
                open_[idx[~one]] = False
                step += 1
            mag[rest] = UNARY + self.suffix_bits(length, value)
        a4[o0:o1, i0:i1, y, x][keep] = np.where(positive, mag, -mag)


    def suffix_bits(self, length: np.ndarray, value: np.ndarray | None) -> np.ndarray:
        """The exp-Golomb suffixes of ``length`` bits (after the leading 1) as binary decisions in the
        (length, bit position) contexts: the values, ``value`` when encoding."""
        got = np.ones(length.size, np.int64)
        for bit in range(int(length.max())):
            idx = np.flatnonzero(length > bit)
            e = length[idx] * 64 + bit
            bits = None if value is None else (value[idx] >> (length[idx] - 1 - bit)) & 1
            got[idx] = got[idx] * 2 + self._code(self.suffix, "suffix", [e, e], bits)
        return got


def plane_measure(vs: list[View], magnitude_context=False) -> dict:
    """Ideal bits of the plane-order design, batched (as the real coder codes it) and with per-event updates
    (the same contexts, counts updated after every decision), per kind of decision, and the number of
    binary decisions."""
    codec = PlaneCodec(lambda kind, p, bits: bits, magnitude_context, record=True)
    decoded = codec.run(vs, [v.ranks for v in vs])
    assert all((d == v.ranks).all() for d, v in zip(decoded, vs))
    out = {}
    blends = {"sig": codec.sig, "sign": codec.sign, "flag": codec.flag, "prefix": codec.prefix,
              "suffix": codec.suffix}
    for kind, rec in codec.rec.items():
        if rec.arrays() is None:
            out[kind] = {"batched": 0.0, "sequential": 0.0, "decisions": 0}
            continue
        ids, bits, batch, tensor_of = rec.arrays()
        blend = blends[kind]
        # global levels are shared by all tensors; tensor levels restart at each tensor: prefix the tensor
        levels = []
        for l in range(ids.shape[1]):
            is_tensor_level = (kind == "sig" and l >= 2) or (kind in ("sign", "flag") and l in (1, 3)) or \
                (kind in ("prefix", "suffix") and l >= 1)
            levels.append(ids[:, l] + (tensor_of << 32 if is_tensor_level else 0))
        row = {}
        for mode, b in (("batched", batch), ("sequential", None)):
            p = np.clip(blend_probabilities(levels, bits, 2, blend.betas, b), 1e-6, 1 - 1e-6)
            row[mode] = float(-np.log2(p).sum())
        row["decisions"] = int(bits.size)
        out[kind] = row
    return out


# --------------------------------------------------------------------------------------------------
# label models without plane order


def label_symbols(vs: list[View]) -> tuple[np.ndarray, np.ndarray, int]:
    """(tensor index, symbol 0..2K) of every kept element in row-major order, and the alphabet size."""
    k = max(v.nneg + v.npos for v in vs)
    tensor, sym = [], []
    for t, v in enumerate(vs):
        a = v.ranks[v.ranks != 0]
        tensor.append(np.full(a.size, t))
        sym.append(a + k)
    return np.concatenate(tensor), np.concatenate(sym), 2 * k + 1


def l2_bits(vs: list[View], estimator="blend") -> float:
    """DeepCABAC binarisation (sign, unary flags to UNARY, exp-Golomb-0 remainder), row-major, contexts:
    (kind, flag index, sign) globally -> per tensor (blend) or per tensor only (two-rate)."""
    events = []  # (tensor, element, step, context-within-tensor, bit)
    base = 0
    for t, v in enumerate(vs):
        a = v.ranks[v.ranks != 0]
        m, pos = np.abs(a), (a > 0).astype(np.int64)
        e = base + np.arange(a.size)
        base += a.size
        largest = np.where(a > 0, v.npos, v.nneg)
        if v.nneg and v.npos:
            events.append((np.full(a.size, t), e, np.zeros(a.size), np.zeros(a.size), pos))
        for step in range(1, UNARY + 1):
            s = (m >= step) & (largest > step)
            events.append((np.full(s.sum(), t), e[s], np.full(s.sum(), step), 100 + step * 2 + pos[s], m[s] > step))
        s = (m > UNARY) & (largest > UNARY)
        value, es, ps = m[s] - UNARY, e[s], pos[s]
        length = np.floor(np.log2(np.maximum(value, 1))).astype(np.int64)
        for step in range(int(length.max()) + 1 if length.size else 0):
            q = length >= step
            events.append((np.full(q.sum(), t), es[q], np.full(q.sum(), 50 + step), 200 + step * 2 + ps[q],
                           length[q] > step))
        for bit in range(int(length.max()) if length.size else 0):
            q = length > bit
            events.append((np.full(q.sum(), t), es[q], np.full(q.sum(), 90 + bit), 1000 + length[q] * 64 + bit,
                           (value[q] >> (length[q] - 1 - bit)) & 1))
    t, e, step, ctx, bits = (np.concatenate([ev[c] for ev in events]).astype(np.int64) for c in range(5))
    order = np.lexsort((step, e))
    t, ctx, bits = t[order], ctx[order], bits[order]
    if estimator == "two-rate":
        return two_rate_bits(t * 100000 + ctx, bits)
    p = blend_probabilities([ctx, t * 100000 + ctx], bits, 2, (4.0, 16.0))
    return float(-np.log2(p).sum())


# --------------------------------------------------------------------------------------------------
# one file


def measure_file(qmodel) -> dict:
    """Every model's bits for one file (labels, positions, their totals)."""
    vs = views(qmodel)
    book = 32 * sum(len(b) for b in qmodel.codebooks)
    tensor, sym, k = label_symbols(vs)
    row = {"book_bits": book, "kept": int(sum(v.kept for v in vs)), "elements": int(sum(v.ranks.size for v in vs))}
    pos = {
        "mask-ans (entropy)": mask_entropy_bits(vs),
        "P1-kt": p1_bits(vs),
        "P1-kt global": p1_bits(vs, per_tensor=False),
        "P1-kt channel-major": p1_bits(vs, scan="channel"),
        "P1-two-rate": p1_bits(vs, estimator="two-rate"),
    }
    lab = {
        "L1-dir": dirichlet_bits(tensor, sym, k),
        "L1g": dirichlet_bits(np.zeros_like(sym), sym, k),
        "L2": l2_bits(vs),
        "L2 two-rate": l2_bits(vs, estimator="two-rate"),
    }
    plane = plane_measure(vs)
    joint = plane_measure(vs, magnitude_context=True)
    for mode in ("sequential", "batched"):
        pos[f"P2 {mode}"] = plane["sig"][mode]
        lab[f"L3 {mode}"] = sum(plane[kd][mode] for kd in ("sign", "flag", "prefix", "suffix"))
        pos[f"P2+mag {mode}"] = joint["sig"][mode]
        lab[f"L3 (joint) {mode}"] = sum(joint[kd][mode] for kd in ("sign", "flag", "prefix", "suffix"))
    row["positions"], row["labels"] = pos, lab
    row["decisions"] = {"significance": plane["sig"]["decisions"],
                        "labels": sum(plane[kd]["decisions"] for kd in ("sign", "flag", "prefix", "suffix"))}
    combos = {
        "A: P1-kt + L1-dir": ("P1-kt", "L1-dir"),
        "B: P1-kt + L2": ("P1-kt", "L2"),
        "C: P2 + L3 sequential": ("P2 sequential", "L3 sequential"),
        "D: P2 + L3 batched": ("P2 batched", "L3 batched"),
        "E: P2+mag + L3 batched (joint)": ("P2+mag batched", "L3 (joint) batched"),
    }
    row["totals"] = {name: book + pos[p] + lab[l] + OVERHEAD_BITS for name, (p, l) in combos.items()}
    return row


# --------------------------------------------------------------------------------------------------
# speed


def real_codec(qmodel) -> dict:
    """The design as netquant implements it (``netquant.coding.context``: the sign and unary part of a label
    as one categorical symbol, the exp-Golomb length as another, positions and labels in two streams): the
    file's positions and labels encoded and decoded, checked, timed, sized."""
    e = nqz_format.Encoding(qmodel)
    start = time.perf_counter()
    data = e.file("plane-context", "plane-context")
    encode_s = time.perf_counter() - start
    times = []
    for _ in range(3):
        start = time.perf_counter()
        decoded = container.decode(data)
        times.append(time.perf_counter() - start)
    ok = all(np.array_equal(decoded.values(n), qmodel.values(n)) for n in qmodel.tensors)
    parsed = nqz_format.parse(data)
    return {"roundtrip": bool(ok), "stream_bits": 8 * (len(parsed.sections["LBIT"]) + len(parsed.sections["IBIT"])),
            "encode_s": encode_s, "decode_s": min(times)}


def per_element_decode(vs: list[View]) -> dict:
    """A per-decision pure-Python decoder of the row-major P1-kt significance model (KT counts per tensor,
    contexts left, left-left, above, column bucket), constriction called once per flag; encoder vectorised."""
    family = constriction.stream.model.Bernoulli(perfect=False)
    coded = [v for v in vs if 0 < v.kept < v.ranks.size]
    coder = constriction.stream.stack.AnsCoder()
    for v in reversed(coded):
        ctx, bits = rowmajor_features(v)
        n = cumcount(ctx)
        # P(1) = (ones before + 1/2) / (n + 1): count the ones before each event in its context
        order = np.argsort(ctx, kind="stable")
        c_sorted, b_sorted = ctx[order], bits[order]
        start = np.r_[True, c_sorted[1:] != c_sorted[:-1]]
        cum = np.cumsum(b_sorted) - b_sorted
        group_start = np.maximum.accumulate(np.where(start, np.arange(ctx.size), 0))
        ones = np.empty(ctx.size)
        ones[order] = cum - (np.cumsum(b_sorted) - b_sorted)[group_start]
        p = (ones + 0.5) / (n + 1.0)
        coder.encode_reverse(bits.astype(np.int32), family, p)
    words = coder.get_compressed()
    decoder = constriction.stream.stack.AnsCoder(words)
    edges = [0.02, 0.06, 0.12, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9]
    start_time = time.perf_counter()
    decisions, ok = 0, True
    for v in coded:
        o, i, kh, kw = v.view
        rows, cols = o, i * kh * kw
        n = [0] * (6 * 3 * 16 * 2)
        ones = [0] * len(n)
        column = [0] * cols
        previous = [2] * cols
        out = []
        for r in range(rows):
            left1 = left2 = 0
            current = [0] * cols
            for c in range(cols):
                if r == 0:
                    colb = 0
                else:
                    frac = (column[c] + 0.5) / (r + 1.0)
                    colb = 1
                    for e in edges:
                        if frac >= e:
                            colb += 1
                ctx = ((left1 * 2 + left2) * 3 + previous[c]) * 16 + colb
                p = (ones[ctx] + 0.5) / (n[ctx] + 1.0)
                bit = int(decoder.decode(family, np.array([p]))[0])
                n[ctx] += 1
                ones[ctx] += bit
                current[c] = bit
                column[c] += bit
                left2, left1 = left1, bit
            previous = current
            out.extend(current)
            decisions += cols
        ok = ok and bool((np.array(out) == (v.ranks != 0)).all())
    seconds = time.perf_counter() - start_time
    return {"roundtrip": ok and decoder.is_empty(), "decisions": decisions, "decode_s": seconds,
            "us_per_decision": 1e6 * seconds / max(decisions, 1), "stream_bits": int(words.size * 32)}


# --------------------------------------------------------------------------------------------------


def main() -> None:
    global GROUP, CHUNK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=str(REPO / "reference" / "cpu"))
    parser.add_argument("--networks", nargs="+", default=["lenet5", "resnet32"])
    parser.add_argument("--files", nargs="*", help="only these file names")
    parser.add_argument("--group", type=int, default=GROUP, help="filters per batch in plane order")
    parser.add_argument("--chunk", type=int, default=CHUNK, help="input channels per batch in plane order")
    parser.add_argument("--speed", action="store_true", help="real coder and decode timings (--speed-files)")
    parser.add_argument("--speed-files", nargs="+", default=["lenet5/uniform-paper.nqz", "lenet5/kmeans-pruned.nqz",
                                                             "resnet32/hwkmeans-pruned.nqz"])
    parser.add_argument("--out", help="write every number as JSON here")
    args = parser.parse_args()
    GROUP, CHUNK = args.group, args.chunk
    reference = Path(args.reference)
    results, cache = {"files": {}}, {}
    for network in args.networks:
        lossless = json.loads((reference / "benchmarks" / f"nncodec_{network}.json").read_text())["lossless"]
        for entry in lossless["files"]:
            if entry["file"] == "pruned.nqz" or (args.files and entry["file"] not in args.files):
                continue
            qmodel = container.read(reference / "files" / network / entry["file"])
            key = content_key(qmodel)
            if key not in cache:
                start = time.perf_counter()
                cache[key] = measure_file(qmodel)
                cache[key]["seconds"] = time.perf_counter() - start
            row = dict(cache[key])
            today = ours_today(qmodel)
            row.update(nncodec_bits=entry["nncodec_bits"], today_bits=sum(today.values()), today_sections=today)
            results["files"][f"{network}/{entry['file']}"] = row
            print_row(f"{network}/{entry['file']}", row)
    print_summary(results["files"])
    if args.speed:
        results["speed"] = {}
        for name in args.speed_files:
            qmodel = container.read(reference / "files" / name)
            vs = views(qmodel)
            row = {"netquant": real_codec(qmodel)}
            if name == args.speed_files[0]:
                row["per_element_P1"] = per_element_decode(vs)
            results["speed"][name] = row
            print(name, json.dumps(row, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


def print_row(name: str, row: dict) -> None:
    nnc = row["nncodec_bits"]
    print(f"\n{name}: NNCodec {nnc:,} bits; ours today {row['today_bits']:,} ({row['today_bits'] / nnc:.4f}); "
          f"codebook {row['book_bits']:,}; {row['decisions']['significance']:,} + {row['decisions']['labels']:,} "
          f"binary decisions (plane design)")
    print("  positions: " + "; ".join(f"{k} {v:,.0f}" for k, v in row["positions"].items()))
    print("  labels:    " + "; ".join(f"{k} {v:,.0f}" for k, v in row["labels"].items()))
    for k, v in row["totals"].items():
        print(f"  {k:34s} {v:10,.0f}  {v / nnc:.4f}{'  <= 0.97' if v <= 0.97 * nnc else ''}")


def print_summary(files: dict) -> None:
    if not files:
        return
    names = next(iter(files.values()))["totals"]
    print("\nworst ratio to NNCodec over the files:")
    print(f"  {'ours today':34s} {max(r['today_bits'] / r['nncodec_bits'] for r in files.values()):.4f}")
    for name in names:
        worst = max(r["totals"][name] / r["nncodec_bits"] for r in files.values())
        print(f"  {name:34s} {worst:.4f}{'  (<= 0.97 on every file)' if worst <= 0.97 else ''}")


if __name__ == "__main__":
    main()
