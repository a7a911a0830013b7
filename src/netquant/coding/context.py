"""Context-modelled codes in plane order: the positions (significance) and the labels of quantized tensors,
each modelled from what the decoder has already decoded nearby, one rANS stream each (``plane-context``).

A tensor is seen as a 4-D array (O, I, kh, kw) (:func:`plane_views`). Its elements are visited in *plane
order*: kernel position j = (y, x) in raster order, then groups of ``GROUP`` output filters (more where a
tensor has fewer than ``FEW_INPUTS`` input channels: a 1-D tensor, a first layer), then up to ``CHUNK``
input channels; one such block is a *batch*, coded with one vectorised coder call, so
every probability of a batch depends only on earlier batches.

Positions (the mask of a tensor with some but not all elements kept): one binary decision per element.
Its context, coarse to fine: whether the tensor is a convolution; ``rc``, a bucket of the product of the
odds of the element's filter and input channel having been kept in the earlier planes (row and column
effects); ``nkc``, how many of its causal kernel neighbours (left, up, up-left, up-right) exist and are kept;
``cb``, a bucket of how often its input channel was kept by the earlier filter groups of the plane.

Labels (as signed ranks: pruned 0, codebook values below 0 ranked -1, -2, ... outward, the others +1, +2,
...; a bijection with the labels): DeepCABAC's binarisation - sign, "greater than i" flags for i = 1..UNARY,
then an exp-Golomb code of the rest - with contexts from the neighbours' ranks. The sign and the unary part
are one categorical symbol, the exp-Golomb length another, the suffix bits binary decisions.

Probabilities are hierarchical adaptive counts (:class:`Counts`): at each level ``p = (n_s + beta p_coarser)
/ (n + beta)``. Only + - * / and comparisons with constants written below enter, so encoder and decoder
compute the same probabilities bit for bit on any machine (IEEE-754 double precision; no log or exp).

The constants below are part of the file format: files are decoded with the values they were encoded with,
so a change to any of them is a new code (a new ID in ``netquant.container.codes``), never an edit.
"""

from __future__ import annotations

import constriction
import numpy as np

from netquant.coding.ans import ans_decoder, decoding
from netquant.coding.symbols import CodingError

GROUP = 6  # output filters per batch (more for tensors of few input channels; see _group)
CHUNK = 64  # input channels per batch
FEW_INPUTS = 8  # below this many input channels, a batch takes MIN_BATCH elements
UNARY = 8  # "greater than i" flags before the exp-Golomb remainder
MAX_LENGTH = 15  # exp-Golomb lengths 0..MAX_LENGTH - 1: ranks below UNARY + 2^15
RC_PRIOR = 8.0  # weight, in elements, of the tensor's density in the filter and channel estimates
# rc = floor(1.5 ln(odds ratio)) + 15 clipped to 0..23, as the odds ratio's place among exp(r / 1.5),
# r = -14..8 (written out: the same constants on every machine)
RC_THRESHOLDS = np.array([
    8.842698865988302e-05, 0.00017223225596081014, 0.00033546262790251185, 0.0006533919798673806,
    0.0012726338013398079, 0.0024787521766663585, 0.004827949993831441, 0.009403562551495206,
    0.01831563888873418, 0.035673993347252395, 0.06948345122280154, 0.1353352832366127, 0.26359713811572677,
    0.513417119032592, 1.0, 1.9477340410546757, 3.7936678946831774, 7.38905609893065, 14.391916095149892,
    28.03162489452614, 54.598150033144236, 106.34267539816554, 207.1272488898345])
CB_EDGES = np.array([0.05, 0.15, 0.3, 0.5, 0.75])
POWERS_OF_TWO = 2 ** np.arange(1, 64, dtype=np.int64).astype(np.float64)
SIG_BETAS = (4.0, 32.0, 32.0, 32.0)
LAB_BETAS = (1.0, 4.0, 16.0, 16.0)
REM_BETAS = (4.0, 16.0, 16.0)
SUF_BETAS = (4.0, 16.0)
EPS = 1e-6


def floor_log2(x: np.ndarray) -> np.ndarray:
    """floor(log2(x)) of integers x >= 1, without floating-point logarithms."""
    return np.searchsorted(POWERS_OF_TWO, np.asarray(x, np.float64), side="right").astype(np.int64)


def plane_views(shapes: list[tuple[int, ...]]) -> list[tuple[int, int, int, int]]:
    """The 4-D view of each tensor of a list in state_dict order: a convolution as it is; a linear weight
    whose inputs are the previous layer's outputs flattened from s x s maps (in = previous out x s x s, s > 1)
    as (out, previous out, s, s); any other 2-D tensor as (out, in, 1, 1); others as (n, 1, 1, 1)."""
    views, previous_out = [], None
    for shape in shapes:
        shape = tuple(int(d) for d in shape)
        if len(shape) == 4:
            view = shape
        elif len(shape) == 2:
            view = (shape[0], shape[1], 1, 1)
            if previous_out and shape[1] % previous_out == 0:
                s = int(np.sqrt(shape[1] // previous_out))
                while s * s < shape[1] // previous_out:
                    s += 1
                if s > 1 and s * s * previous_out == shape[1]:
                    view = (shape[0], previous_out, s, s)
        else:
            view = (int(np.prod(shape)) if shape else 1, 1, 1, 1)
        if len(shape) >= 2:
            previous_out = shape[0]
        views.append(view)
    return views


class Counts:
    """Hierarchical adaptive counts of binary events, one (n, n1) table per level, coarse to fine."""

    def __init__(self, sizes: tuple[int, ...], betas: tuple[float, ...]) -> None:
        self.betas = betas
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n = np.zeros(int(self.offsets[-1]))
        self.n1 = np.zeros(int(self.offsets[-1]))

    def reset(self, levels) -> None:
        for level in levels:
            self.n[self.offsets[level]:self.offsets[level + 1]] = 0
            self.n1[self.offsets[level]:self.offsets[level + 1]] = 0

    def prob(self, ids) -> np.ndarray:
        """P(1) for events with the context ids ``ids`` (one int array per level)."""
        p = 0.5
        for offset, beta, c in zip(self.offsets, self.betas, ids):
            c = c + offset
            p = (self.n1[c] + beta * p) / (self.n[c] + beta)
        return np.clip(p, EPS, 1 - EPS)

    def update(self, ids, bits) -> None:
        flat = np.concatenate([c + offset for offset, c in zip(self.offsets, ids)])
        size = int(self.offsets[-1])
        self.n += np.bincount(flat, minlength=size)
        self.n1 += np.bincount(flat, weights=np.tile(np.asarray(bits, np.float64), len(ids)), minlength=size)


def kernel_neighbours(a4: np.ndarray, o0: int, o1: int, i0: int, i1: int, y: int, x: int) -> list:
    """The left, up, up-left and up-right kernel neighbours of (o0:o1, i0:i1, y, x); None outside."""
    kh, kw = a4.shape[2:]
    out = []
    for dy, dx in ((0, -1), (-1, 0), (-1, -1), (-1, 1)):
        yy, xx = y + dy, x + dx
        out.append(a4[o0:o1, i0:i1, yy, xx] if 0 <= yy < kh and 0 <= xx < kw else None)
    return out


MIN_BATCH = 384


def _group(view) -> int:
    """Output filters per batch: ``GROUP``, or for tensors of fewer than ``FEW_INPUTS`` input channels
    enough to make ``MIN_BATCH`` elements, since decoding time goes by batches: a 1-D tensor of a million
    elements is 2,600 batches, not 170,000 (about a second either way then; smaller batches model better
    where there are many input channels: GROUP 16 costs LeNet-5's files 1% more)."""
    return GROUP if view[1] >= FEW_INPUTS else max(GROUP, MIN_BATCH // view[1])


def _batches(view):
    o, i, kh, kw = view
    group = _group(view)
    for j in range(kh * kw):
        for o0 in range(0, o, group):
            for i0 in range(0, i, CHUNK):
                yield j, o0, min(o0 + group, o), i0, min(i0 + CHUNK, i)


class _Coder:
    """Encoding records (probabilities, symbols) per call and encodes them at the end (rANS is last in,
    first out); decoding reads each call's symbols from the stream."""

    binary = constriction.stream.model.Bernoulli(perfect=False)
    categorical = constriction.stream.model.Categorical(perfect=False)

    def __init__(self, data: bytes | None = None) -> None:
        self.calls: list = []
        self.decoder = None if data is None else ans_decoder(data)

    def __call__(self, p: np.ndarray, symbols: np.ndarray | None) -> np.ndarray:
        p = np.ascontiguousarray(p, dtype=np.float64)
        model = self.categorical if p.ndim == 2 else self.binary
        if self.decoder is None:
            symbols = np.ascontiguousarray(symbols, np.int32)
            self.calls.append((model, p, symbols))
            return symbols.astype(np.int64)
        return np.asarray(self.decoder.decode(model, p), np.int64)

    def bytes(self) -> bytes:
        if not self.calls:
            return b""
        coder = constriction.stream.stack.AnsCoder()
        for model, p, symbols in reversed(self.calls):
            coder.encode_reverse(symbols, model, p)
        return coder.get_compressed().astype("<u4").tobytes()


def _mask_tensor(code: _Coder, sig: Counts, view, kept: int, truth: np.ndarray | None) -> np.ndarray:
    """The mask (O, I, kh, kw) of one tensor keeping ``kept`` of its elements, coded in plane order."""
    o, i, kh, kw = view
    size = o * i * kh * kw
    m4 = np.zeros(view, bool)
    if kept == size:
        m4[:] = True
    if not 0 < kept < size:
        return m4
    sig.reset([2, 3])
    d = kept / size
    odds_d = d / (1 - d)
    conv = int(kh * kw > 1)
    filter_kept, channel_kept = np.zeros(o), np.zeros(i)
    column_kept = np.zeros(i)
    for j, o0, o1, i0, i1 in _batches(view):
        y, x = divmod(j, kw)
        if o0 == 0 and i0 == 0:
            column_kept[:] = 0
        present = [n for n in kernel_neighbours(m4, o0, o1, i0, i1, y, x) if n is not None]
        nk = sum(n.astype(np.int64) for n in present) if present else 0
        nkc = np.broadcast_to(nk * 5 + len(present), (o1 - o0, i1 - i0))
        pf = (filter_kept[o0:o1] + RC_PRIOR * d) / (i * j + RC_PRIOR)
        pc = (channel_kept[i0:i1] + RC_PRIOR * d) / (o * j + RC_PRIOR)
        ratio = (pf / (1 - pf))[:, None] * (pc / (1 - pc))[None, :] / odds_d
        rc = np.searchsorted(RC_THRESHOLDS, ratio, side="right").astype(np.int64)
        if o0 == 0:
            cb = np.zeros((o1 - o0, i1 - i0), np.int64)
        else:
            frac = (column_kept[i0:i1] + 0.5) / (o0 + 1.0)
            cb = np.broadcast_to(1 + np.searchsorted(CB_EDGES, frac, side="right"), (o1 - o0, i1 - i0))
        ctx = rc * 25 + nkc
        ids = [(conv * 24 + rc).reshape(-1), (conv * 600 + ctx).reshape(-1), ctx.reshape(-1),
               (ctx * 6 + cb).reshape(-1)]
        bits = None if truth is None else truth[o0:o1, i0:i1, y, x].reshape(-1).astype(np.int32)
        got = code(sig.prob(ids), bits)
        sig.update(ids, got)
        got = got.reshape(o1 - o0, i1 - i0).astype(bool)
        m4[o0:o1, i0:i1, y, x] = got
        column_kept[i0:i1] += got.sum(0)
        if o1 == o and i1 == i:
            filter_kept += m4[:, :, y, x].sum(1)
            channel_kept += m4[:, :, y, x].sum(0)
    return m4


def _counts_for_masks() -> Counts:
    return Counts((2 * 24, 2 * 600, 600, 600 * 6), SIG_BETAS)


def masks_encode(masks: list[np.ndarray], shapes: list[tuple[int, ...]]) -> bytes:
    """The flat boolean masks of tensors (state_dict order) as one rANS stream."""
    code, sig = _Coder(), _counts_for_masks()
    for mask, view in zip(masks, plane_views(shapes)):
        _mask_tensor(code, sig, view, int(mask.sum()), np.asarray(mask, bool).reshape(view))
    return code.bytes()


def masks_decode(data: bytes, shapes: list[tuple[int, ...]], kept: list[int]) -> list[np.ndarray]:
    """Inverse of :func:`masks_encode`, given each tensor's shape and kept count."""
    code, sig = _Coder(data), _counts_for_masks()
    out = []
    with decoding(code.decoder, "plane-context positions"):
        for view, n in zip(plane_views(shapes), kept):
            m4 = _mask_tensor(code, sig, view, int(n), None)
            if int(m4.sum()) != n:
                raise CodingError(f"a mask decodes to {int(m4.sum())} kept elements, {n} announced")
            out.append(m4.reshape(-1))
    return out


def signed_ranks(codebook: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Labels (int, PRUNED = -1 for pruned) as signed ranks: pruned 0, codebook values below 0 ranked -1, -2,
    ... outward from 0, the others +1, +2, ..."""
    order = np.argsort(codebook, kind="stable")
    below = int((codebook < 0).sum())
    position = np.empty(len(codebook), np.int64)
    position[order] = np.arange(len(codebook))
    rank_of = np.where(codebook < 0, position - below, position - below + 1)
    ranks = np.zeros(labels.size, np.int64)
    kept = labels >= 0
    ranks[kept] = rank_of[labels[kept]]
    return ranks


def labels_of_ranks(codebook: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Inverse of :func:`signed_ranks` on the kept (non-zero) ranks: int32 labels."""
    order = np.argsort(codebook, kind="stable")
    below = int((codebook < 0).sum())
    index = np.where(ranks < 0, ranks + below, ranks + below - 1)
    return order[index].astype(np.int32)


class _LabelModel:
    def __init__(self) -> None:
        self.sign = Counts((2, 1, 2 * 9, 9), LAB_BETAS)
        self.flag = Counts((2 * 32, 32, 2 * 13 * 32, 13 * 32), LAB_BETAS)
        self.prefix = Counts((64 * 2, 64 * 2, 8 * 64 * 2), REM_BETAS)
        self.suffix = Counts((64 * 64, 64 * 64), SUF_BETAS)

    def reset(self) -> None:
        self.sign.reset([1, 3])
        self.flag.reset([1, 3])
        self.prefix.reset([1, 2])
        self.suffix.reset([1])


def _labels_batch(code: _Coder, model: _LabelModel, a4, keep, truth, conv: int, nneg: int, npos: int,
                  j: int, o0: int, o1: int, i0: int, i1: int) -> None:
    """The ranks of the kept elements of one batch (``keep`` its mask), written into ``a4``."""
    kw = a4.shape[3]
    y, x = divmod(j, kw)
    n = int(keep.sum())
    zero = np.zeros((o1 - o0, i1 - i0), np.int64)
    left, up, upleft, upright = [zero if v is None else v for v in kernel_neighbours(a4, o0, o1, i0, i1, y, x)]
    pred = (np.clip(left + up, -4, 4) + 4)[keep]
    around = (np.abs(left) + np.abs(up) + (np.abs(upleft) + np.abs(upright)) // 2)[keep]
    scale = np.minimum(floor_log2(around + 1), 7)
    mall = np.where(around < 8, around, 5 + scale)
    true = None if truth is None else truth[keep]
    steps = np.arange(1, UNARY + 1)
    sign_ids = [np.full(n, conv), np.zeros(n, np.int64), conv * 9 + pred, pred]
    if nneg and npos:
        p_pos = model.sign.prob(sign_ids)
    else:
        p_pos = np.full(n, 1.0 if npos else 0.0)
    table = np.empty((n, 2, UNARY + 1))
    for s_, largest in ((0, nneg), (1, npos)):
        e = np.broadcast_to(steps * 2 + s_, (n, UNARY))
        m_ = np.broadcast_to(mall[:, None], (n, UNARY))
        ids = [(conv * 32 + e).reshape(-1), e.reshape(-1), ((conv * 13 + m_) * 32 + e).reshape(-1),
               (m_ * 32 + e).reshape(-1)]
        q = model.flag.prob(ids).reshape(n, UNARY)
        go_on = np.where(steps < largest, q, 0.0)
        reach = np.concatenate([np.ones((n, 1)), np.cumprod(go_on, axis=1)], axis=1)
        stop = np.concatenate([1.0 - go_on, np.ones((n, 1))], axis=1)
        table[:, s_, :] = reach * stop * (p_pos if s_ else 1.0 - p_pos)[:, None]
    symbol = None
    if true is not None:
        symbol = (true > 0) * (UNARY + 1) + np.minimum(np.abs(true), UNARY + 1) - 1
    got = code(table.reshape(n, -1), symbol)
    positive = got >= UNARY + 1
    u = got % (UNARY + 1) + 1
    s = positive.astype(np.int64)
    largest = np.where(positive, npos, nneg)
    if np.any(u > largest):
        raise CodingError("a label's rank exceeds the codebook")
    if nneg and npos:
        model.sign.update(sign_ids, s)
    coded = (steps[None, :] <= u[:, None]) & (steps[None, :] < largest[:, None])
    row, col = np.nonzero(coded)
    e = steps[col] * 2 + s[row]
    model.flag.update([conv * 32 + e, e, (conv * 13 + mall[row]) * 32 + e, mall[row] * 32 + e],
                      (u[row] > steps[col]).astype(np.int64))
    mag = np.minimum(u, UNARY + 1)
    rest = np.flatnonzero((u == UNARY + 1) & (largest > UNARY))
    if rest.size:
        value = None if true is None else np.abs(true[rest]) - UNARY
        jj = np.arange(MAX_LENGTH + 1)
        e = jj[None, :] * 2 + s[rest][:, None]
        sc = np.broadcast_to(scale[rest][:, None], e.shape)
        c = model.prefix.prob([e.reshape(-1), e.reshape(-1), (sc * 128 + e).reshape(-1)]).reshape(e.shape)
        reach = np.concatenate([np.ones((rest.size, 1)), np.cumprod(c[:, :-1], axis=1)], axis=1)
        stop = np.concatenate([1.0 - c[:, :-1], np.ones((rest.size, 1))], axis=1)
        length_true = None if value is None else floor_log2(value)
        if length_true is not None and length_true.max() >= MAX_LENGTH:
            raise ValueError(f"a rank beyond {UNARY + (1 << MAX_LENGTH)}: too many shared values for this code")
        length = code((reach * stop)[:, :MAX_LENGTH], length_true)
        row, col = np.nonzero(jj[None, :] <= length[:, None])
        ee = jj[col] * 2 + s[rest][row]
        model.prefix.update([ee, ee, scale[rest][row] * 128 + ee], (length[row] > jj[col]).astype(np.int64))
        got_value = np.ones(length.size, np.int64)
        for bit in range(int(length.max())):
            idx = np.flatnonzero(length > bit)
            ids = [length[idx] * 64 + bit] * 2
            bits = None if value is None else ((value[idx] >> (length[idx] - 1 - bit)) & 1).astype(np.int32)
            b = code(model.suffix.prob(ids), bits)
            model.suffix.update(ids, b)
            got_value[idx] = got_value[idx] * 2 + b
        mag[rest] = UNARY + got_value
    if np.any(mag > largest):
        raise CodingError("a label's rank exceeds the codebook")
    a4[o0:o1, i0:i1, j // kw, j % kw][keep] = np.where(positive, mag, -mag)


def _label_tensors(code: _Coder, codebook: np.ndarray, shapes, masks, ranks) -> list[np.ndarray]:
    nneg = int((codebook < 0).sum())
    npos = len(codebook) - nneg
    model = _LabelModel()
    out = []
    for t, view in enumerate(plane_views(shapes)):
        model.reset()
        m4 = masks[t].reshape(view)
        a4 = np.zeros(view, np.int64)
        truth = None if ranks is None else ranks[t].reshape(view)
        conv = int(view[2] * view[3] > 1)
        for j, o0, o1, i0, i1 in _batches(view):
            y, x = divmod(j, view[3])
            keep = m4[o0:o1, i0:i1, y, x]
            if keep.any():
                _labels_batch(code, model, a4, keep, None if truth is None else truth[o0:o1, i0:i1, y, x],
                              conv, nneg, npos, j, o0, o1, i0, i1)
        out.append(a4.reshape(-1))
    return out


def labels_encode(parts: list[np.ndarray], codebook: np.ndarray, shapes, masks) -> bytes:
    """The labels of the kept elements of a stream's tensors (``parts``: int32, in order; ``masks``: each
    tensor's flat mask) as one rANS stream."""
    ranks = []
    for part, mask in zip(parts, masks):
        labels = np.full(mask.size, -1, np.int64)
        labels[mask] = part
        ranks.append(signed_ranks(codebook, labels))
    code = _Coder()
    _label_tensors(code, codebook, shapes, masks, ranks)
    return code.bytes()


def labels_decode(data: bytes, codebook: np.ndarray, shapes, masks) -> np.ndarray:
    """Inverse of :func:`labels_encode`: the stream's labels (int32), tensor after tensor."""
    if not len(codebook) and any(m.any() for m in masks):
        raise CodingError("labels announced for an empty codebook")
    code = _Coder(data)
    with decoding(code.decoder, "plane-context labels"):
        ranks = _label_tensors(code, codebook, shapes, masks, None)
    return np.concatenate([labels_of_ranks(codebook, r[m]) for r, m in zip(ranks, masks)]) if masks else \
        np.zeros(0, np.int32)
