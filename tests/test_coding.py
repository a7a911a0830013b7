"""Codes of netquant.coding: round trips, optimality of Huffman lengths, ANS rate, index codes."""

from __future__ import annotations


import bitarray
import bitarray.util
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import optimal_huffman_cost
from netquant import coding



@st.composite
def label_streams(draw):
    """(symbols int32 [n], k): uniform, very skewed, one-symbol and large-alphabet streams."""
    kind = draw(st.sampled_from(["uniform", "skewed", "one", "large", "dirichlet"]))
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(0, 5000))
    rng = np.random.default_rng(seed)
    if kind == "one":
        k = draw(st.integers(1, 50))
        return np.full(n, rng.integers(k), dtype=np.int32), k
    k = draw(st.integers(2, 300)) if kind != "large" else draw(st.integers(1000, 70000))
    if kind == "uniform" or kind == "large":
        p = np.ones(k)
    elif kind == "skewed":
        p = 0.5 ** np.arange(k, dtype=np.float64)  # geometric: code lengths up to ~log2(n)
    else:
        p = rng.dirichlet(np.full(k, 0.2))
    return rng.choice(k, size=n, p=p / p.sum()).astype(np.int32), k


@settings(max_examples=60, deadline=None)
@given(label_streams())
def test_huffman_round_trip_and_optimal(stream):
    symbols, k = stream
    counts = coding.symbol_counts(symbols, k)
    lengths = coding.huffman_lengths(counts)
    data, nbits = coding.huffman_encode(symbols, lengths)
    assert nbits == optimal_huffman_cost(counts)
    assert len(data) == (nbits + 7) // 8
    assert coding.kraft_sum_is_one(lengths)
    assert np.array_equal(lengths >= 0, counts > 0)
    np.testing.assert_array_equal(coding.huffman_decode(data, nbits, lengths, symbols.size), symbols)


@settings(max_examples=40, deadline=None)
@given(label_streams())
def test_fixed_and_ans_round_trip(stream):
    symbols, k = stream
    width = coding.fixed_width(k)
    data, nbits = coding.fixed_encode(symbols, width)
    assert nbits == symbols.size * width
    np.testing.assert_array_equal(coding.fixed_decode(data, width, symbols.size), symbols)
    counts = coding.symbol_counts(symbols, k)
    data = coding.ans_encode(symbols, counts)
    np.testing.assert_array_equal(coding.ans_decode(data, counts, symbols.size), symbols)
    if np.count_nonzero(counts) <= 1:
        assert data == b""


def test_kraft_sum_is_exact():
    assert coding.kraft_sum_is_one([1, 2, 3, 3])
    assert not coding.kraft_sum_is_one([1, 2, 3])  # incomplete
    assert not coding.kraft_sum_is_one([1, 1, 2])  # over-full
    assert coding.kraft_sum_is_one([-1, 0, -1])  # one symbol, zero bits
    assert coding.kraft_sum_is_one([-1, -1])  # empty stream


def test_fixed_width():
    assert [coding.fixed_width(k) for k in (1, 2, 3, 4, 5, 32, 33, 256)] == [0, 1, 2, 2, 3, 5, 6, 8]


def _canonical_tables(lengths):
    """bitarray's (count, symbol) canonical tables for lengths: the canonical rule of DEFLATE."""
    present = np.flatnonzero(lengths >= 0)
    order = present[np.lexsort((present, lengths[present]))]
    count = np.bincount(lengths[present], minlength=int(lengths.max()) + 1).tolist()
    return count, order.tolist()


@pytest.mark.parametrize("k,n", [(32, 100_001), (300, 20_000), (3, 7)])
def test_canonical_stream_matches_bitarray(k, n):
    """The vectorised packer writes exactly the canonical code bitarray's decoder expects."""
    rng = np.random.default_rng(k)
    p = rng.dirichlet(np.full(k, 0.5))
    symbols = rng.choice(k, size=n, p=p).astype(np.int32)
    symbols[:k] = np.arange(k)  # every symbol occurs: bitarray's tables need at least two
    lengths = coding.huffman_lengths(coding.symbol_counts(symbols, k))
    data, nbits = coding.huffman_encode(symbols, lengths)
    stream = bitarray.bitarray(endian="big")
    stream.frombytes(data)
    count, order = _canonical_tables(lengths)
    decoded = list(bitarray.util.canonical_decode(stream[:nbits], count, order))
    assert decoded == symbols.tolist()
    # the same bits as bitarray's own encoder fed with the canonical codewords
    codes = coding.canonical_codes(lengths)
    table = {s: bitarray.util.int2ba(int(codes[s]), int(lengths[s]), endian="big") for s in order}
    reference = bitarray.bitarray(endian="big")
    reference.encode(table, symbols.tolist())
    assert reference.tobytes() == data


def test_long_codewords_beyond_32_bits():
    """A complete code with lengths up to 40 (only reachable with huge skewed streams) still round trips."""
    lengths = np.array([*range(1, 41), 40], dtype=np.int64)
    assert coding.kraft_sum_is_one(lengths)
    rng = np.random.default_rng(0)
    symbols = rng.integers(0, lengths.size, size=5001).astype(np.int32)
    data, nbits = coding.huffman_encode(symbols, lengths)
    assert nbits == int(lengths[symbols].sum())
    np.testing.assert_array_equal(coding.huffman_decode(data, nbits, lengths, symbols.size), symbols)


def test_pairs_longer_than_32_bits_are_split():
    """Codes of up to 20 bits: pairs of long codewords exceed one packing entry and go in as two."""
    lengths = np.array([*range(1, 21), 20], dtype=np.int64)
    codes = coding.canonical_codes(lengths)
    rng = np.random.default_rng(2)
    symbols = rng.integers(0, lengths.size, size=300_001).astype(np.int32)
    data, nbits = coding.huffman_encode(symbols, lengths)
    table = {s: bitarray.util.int2ba(int(codes[s]), int(lengths[s]), endian="big") for s in range(lengths.size)}
    reference = bitarray.bitarray(endian="big")
    reference.encode(table, symbols.tolist())
    assert reference.tobytes() == data and len(reference) == nbits
    np.testing.assert_array_equal(coding.huffman_decode(data, nbits, lengths, symbols.size), symbols)


@pytest.mark.parametrize("n", [10_000, 10_001, 100_001, 100_002])  # decoded in pairs / triples, with a tail
def test_grouped_decoding_with_tails(n):
    rng = np.random.default_rng(n)
    symbols = rng.choice(8, size=n, p=[0.4, 0.2, 0.1, 0.1, 0.1, 0.05, 0.03, 0.02]).astype(np.int32)
    lengths = coding.huffman_lengths(coding.symbol_counts(symbols, 8))
    data, nbits = coding.huffman_encode(symbols, lengths)
    np.testing.assert_array_equal(coding.huffman_decode(data, nbits, lengths, symbols.size), symbols)


def test_single_symbol_costs_nothing():
    lengths = coding.huffman_lengths([0, 7, 0])
    assert lengths.tolist() == [-1, 0, -1]
    assert coding.huffman_encode(np.ones(7, np.int32), lengths) == (b"", 0)
    np.testing.assert_array_equal(coding.huffman_decode(b"", 0, lengths, 7), np.ones(7))


def test_huffman_decode_rejects_bad_streams():
    symbols = np.array([0, 1, 2, 2, 2, 1], dtype=np.int32)
    lengths = coding.huffman_lengths(coding.symbol_counts(symbols, 3))
    data, nbits = coding.huffman_encode(symbols, lengths)
    with pytest.raises(coding.CodingError, match="Kraft"):
        coding.huffman_decode(data, nbits, np.array([1, 2, 3]), symbols.size)
    with pytest.raises(coding.CodingError):
        coding.huffman_decode(data, nbits, lengths, symbols.size + 5)  # not enough codewords
    with pytest.raises(coding.CodingError, match="use"):
        coding.huffman_decode(data, nbits, lengths, symbols.size - 1)  # bits left over
    with pytest.raises(coding.CodingError, match="bytes"):
        coding.huffman_decode(data + b"\0", nbits, lengths, symbols.size)


@pytest.mark.parametrize("k", [4, 1000])
def test_huffman_encode_rejects_symbols_without_codeword(k):
    counts = np.ones(k, dtype=np.int64)
    counts[2] = 0
    lengths = coding.huffman_lengths(counts)
    for symbols in ([0, 1, 2, 3], [0, 1, 3, 2], [0, 1, 3, 0, 2]):  # in a pair, as second, as odd tail
        with pytest.raises(ValueError, match="no codeword"):
            coding.huffman_encode(np.array(symbols), lengths)
    with pytest.raises(ValueError, match="lie in"):
        coding.huffman_encode(np.array([0, k]), lengths)
    with pytest.raises(ValueError, match="Kraft"):
        coding.huffman_encode(np.array([0, 1]), np.array([1, 2, 2, 2]))


def test_ans_reaches_the_entropy():
    """1M skewed symbols: within 0.1% of the empirical entropy (model = the stream's own counts)."""
    rng = np.random.default_rng(0)
    k = 32
    p = np.exp(-np.abs(np.arange(k) - 16) / 2.5)
    symbols = rng.choice(k, size=1_000_000, p=p / p.sum()).astype(np.int32)
    counts = coding.symbol_counts(symbols, k)
    data = coding.ans_encode(symbols, counts)
    entropy = symbols.size * coding.entropy_bits(counts)
    assert 8 * len(data) <= entropy * 1.001
    assert 8 * len(data) >= entropy * 0.999  # sanity: nobody beats the entropy of an i.i.d. model
    np.testing.assert_array_equal(coding.ans_decode(data, counts, symbols.size), symbols)


def test_ans_decode_checks_the_model():
    counts = np.array([3, 1])
    with pytest.raises(coding.CodingError, match="sum"):
        coding.ans_decode(b"", counts, 5)
    with pytest.raises(coding.CodingError, match="multiple of 4"):
        coding.ans_decode(b"abc", counts, 4)


def test_deep_compression_symbols_by_hand():
    mask = np.zeros(50, dtype=bool)
    mask[[0, 3, 40]] = True
    # gaps 1, 3, 37; 37 > 8 -> (37 - 1) // 8 = 4 fillers, then 37 - 32 = 5
    symbols = coding.dc_gap_symbols(mask, 8)
    assert symbols.tolist() == [1, 3, 0, 0, 0, 0, 5]
    (back,) = coding.dc_masks(symbols, 8, [50], [3])
    np.testing.assert_array_equal(back, mask)
    # a gap of exactly bound needs no filler, bound + 1 needs one
    mask = np.zeros(20, dtype=bool)
    mask[[7, 16]] = True
    assert coding.dc_gap_symbols(mask, 8).tolist() == [8, 0, 1]


@st.composite
def mask_sets(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    sizes = draw(st.lists(st.integers(1, 3000), min_size=1, max_size=5))
    densities = draw(st.lists(st.sampled_from([0.0, 0.001, 0.05, 0.3, 0.9, 1.0]), min_size=len(sizes),
                              max_size=len(sizes)))
    return [rng.random(s) < d for s, d in zip(sizes, densities)]


@settings(max_examples=60, deadline=None)
@given(mask_sets(), st.sampled_from([1, 3, 32, 256]))
def test_index_codes_round_trip(masks, bound):
    sizes = [m.size for m in masks]
    kept = [int(m.sum()) for m in masks]
    symbols = np.concatenate([coding.dc_gap_symbols(m, bound) for m in masks])
    for got, want in zip(coding.dc_masks(symbols, bound, sizes, kept), masks):
        np.testing.assert_array_equal(got, want)
    data = coding.mask_ans_encode(masks)
    for got, want in zip(coding.mask_ans_decode(data, sizes, kept), masks):
        np.testing.assert_array_equal(got, want)
    if all(k in (0, s) for k, s in zip(kept, sizes)):
        assert data == b""


def test_mask_ans_reaches_the_mask_entropy_and_beats_deep_compression():
    rng = np.random.default_rng(0)
    masks = [rng.random(430_000) < 0.08, rng.random(25_000) < 0.12, rng.random(500) < 0.66]
    sizes, kept = [m.size for m in masks], [int(m.sum()) for m in masks]
    bound_bits = coding.mask_entropy_bits(sizes, kept)
    ans_bits = 8 * len(coding.mask_ans_encode(masks))
    assert bound_bits <= ans_bits <= bound_bits * 1.001 + 64
    symbols = np.concatenate([coding.dc_gap_symbols(m, 32) for m in masks])
    _, dc_bits = coding.huffman_encode(symbols, coding.huffman_lengths(coding.symbol_counts(symbols, 33)))
    assert ans_bits < dc_bits


@st.composite
def shaped_mask_sets(draw):
    """Masks with row and column structure: output units and inputs of different densities."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shapes = draw(st.lists(st.sampled_from([(7,), (1, 9), (5, 3, 2, 2), (40, 30), (3, 1), (64, 16)]),
                           min_size=1, max_size=4))
    masks = []
    for shape in shapes:
        rows, cols = coding.mask_rows(shape)
        kind = draw(st.sampled_from(["empty", "full", "random", "structured"]))
        if kind in ("empty", "full"):
            masks.append(np.full(rows * cols, kind == "full"))
            continue
        p = rng.random((rows, cols)) if kind == "random" else np.outer(rng.random(rows), rng.random(cols))
        masks.append((rng.random((rows, cols)) < p).reshape(-1))
    return shapes, masks


@settings(max_examples=80, deadline=None)
@given(shaped_mask_sets())
def test_mask_context_round_trip(case):
    shapes, masks = case
    kept = [int(m.sum()) for m in masks]
    use = coding.mask_context_choice(masks, shapes)
    for context in (use, [True] * len(masks)):  # as chosen, and the context model everywhere
        data = coding.mask_context_encode(masks, shapes, context)
        counts = [c if u else None for c, u in zip(coding.mask_context_row_counts(masks, shapes), context)]
        for got, want in zip(coding.mask_context_decode(data, shapes, kept, counts), masks):
            np.testing.assert_array_equal(got, want)


def test_mask_context_uses_the_structure_of_pruned_layers():
    """Units that lost most of their inputs, inputs removed in most units: the context model costs well
    under the per-tensor entropy that mask-ans reaches; on masks without structure it is close to it."""
    rng = np.random.default_rng(0)
    rows, cols = 500, 800
    structured = rng.random((rows, cols)) < np.outer(rng.beta(0.5, 3, rows), rng.beta(0.5, 1, cols)) * 1.5
    plain = rng.random((rows, cols)) < structured.mean()
    for mask, chosen, at_most in ((structured, True, 0.8), (plain, False, 1.001)):
        masks, shapes = [mask.reshape(-1)], [(rows, cols)]
        assert coding.mask_context_choice(masks, shapes) == [chosen]
        table_bits = 8 * sum(max(1, (int(c).bit_length() + 6) // 7) for c in mask.sum(axis=1)) if chosen else 0
        bits = 8 * len(coding.mask_context_encode(masks, shapes, [chosen])) + table_bits
        assert bits <= at_most * coding.mask_entropy_bits([mask.size], [int(mask.sum())]) + 64


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.lists(st.integers(0, 3000), min_size=1, max_size=6))
def test_ans_layer_round_trip(seed, k, sizes):
    rng = np.random.default_rng(seed)
    parts = [rng.integers(0, rng.integers(1, k + 1), size=n).astype(np.int32) for n in sizes]
    shared, own = coding.layer_label_models(parts, k)
    data = coding.ans_layers_encode(parts, shared, own)
    np.testing.assert_array_equal(coding.ans_layers_decode(data, sizes, shared, own), np.concatenate(parts))


def test_ans_layer_pays_only_where_a_layer_differs():
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 16, 50_000).astype(np.int32)       # labels of a layer of large weights
    narrow = rng.integers(6, 10, 50_000).astype(np.int32)     # one of small weights
    alike = rng.integers(0, 16, 300).astype(np.int32)         # a small layer like the first
    shared, own = coding.layer_label_models([wide, narrow, alike], 16)
    assert own[1] is not None and own[2] is None
    layered = 8 * len(coding.ans_layers_encode([wide, narrow, alike], shared, own))
    single = 8 * len(coding.ans_encode(np.concatenate([wide, narrow, alike]), shared))
    assert layered < 0.85 * single


def test_dc_masks_rejects_inconsistent_streams():
    symbols = coding.dc_gap_symbols(np.array([1, 0, 1, 1], dtype=bool), 4)
    with pytest.raises(coding.CodingError, match="kept positions"):
        coding.dc_masks(symbols, 4, [4], [2])
    with pytest.raises(coding.CodingError, match="points at element"):
        coding.dc_masks(symbols, 4, [3], [3])
    with pytest.raises(coding.CodingError, match="lie in"):
        coding.dc_masks(np.array([9]), 4, [20], [1])


def test_entropy_bits():
    assert coding.entropy_bits([5]) == 0.0
    assert coding.entropy_bits([1, 1, 1, 1]) == pytest.approx(2.0)
    assert coding.entropy_bits([0, 0]) == 0.0


@st.composite
def plane_streams(draw):
    """Tensors of a label stream (shapes as networks have them, a linear layer reading 2 x 2 maps among them),
    masks of every kind, and a codebook with ranks beyond the unary part on both sides, or one sign only."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shapes = draw(st.lists(st.sampled_from([(4, 3, 3, 3), (7,), (5, 12), (9, 5, 1, 1), (3, 20), (6, 2, 5, 5)]),
                           min_size=1, max_size=4))
    k = draw(st.sampled_from([1, 2, 5, 40, 300]))
    sign = draw(st.sampled_from(["both", "positive", "negative"]))
    book = np.sort(rng.normal(size=k)).astype(np.float32)
    book = {"both": book, "positive": np.abs(book) + 0.01, "negative": -np.abs(book) - 0.01}[sign]
    masks, parts = [], []
    for shape in shapes:
        size = int(np.prod(shape))
        kind = draw(st.sampled_from(["empty", "full", "random"]))
        mask = np.full(size, kind == "full") if kind != "random" else rng.random(size) < rng.random()
        masks.append(mask)
        parts.append(rng.integers(0, k, int(mask.sum())).astype(np.int32))
    return shapes, masks, parts, book


@settings(max_examples=80, deadline=None)
@given(plane_streams())
def test_plane_context_codes_round_trip(case):
    shapes, masks, parts, book = case
    sparse = [(s, m) for s, m in zip(shapes, masks) if not m.all()]
    data = coding.context_masks_encode([m for _, m in sparse], [s for s, _ in sparse])
    for got, (_, want) in zip(coding.context_masks_decode(data, [s for s, _ in sparse],
                                                          [int(m.sum()) for _, m in sparse]), sparse):
        np.testing.assert_array_equal(got, want)
    data = coding.context_labels_encode(parts, book, shapes, masks)
    want = np.concatenate(parts)
    np.testing.assert_array_equal(coding.context_labels_decode(data, book, shapes, masks), want)


def test_plane_views_read_a_linear_layer_as_the_maps_it_reads():
    from netquant.coding.context import plane_views

    assert plane_views([(20, 1, 5, 5), (20,), (50, 20, 5, 5), (500, 800), (10, 500)]) == [
        (20, 1, 5, 5), (20, 1, 1, 1), (50, 20, 5, 5), (500, 50, 4, 4), (10, 500, 1, 1)]


def test_plane_context_codes_use_neighbouring_weights():
    """Smooth kernels with a structured mask: both codes spend well under the order-0 entropy of what they
    code (the per-tensor mask entropy; the labels' entropy), which is what ans / mask-ans reach."""
    rng = np.random.default_rng(1)
    shape = (32, 16, 5, 5)
    smooth = rng.normal(size=(32, 16, 1, 1)) + 0.3 * rng.normal(size=shape)
    keep = np.abs(smooth) > np.quantile(np.abs(smooth), 0.7)
    book = np.linspace(-3, 3, 25).astype(np.float32)
    labels = np.abs(book[None, :] - smooth.reshape(-1)[keep.reshape(-1), None]).argmin(1).astype(np.int32)
    mask = keep.reshape(-1)
    position_bits = 8 * len(coding.context_masks_encode([mask], [shape]))
    label_bits = 8 * len(coding.context_labels_encode([labels], book, [shape], [mask]))
    assert position_bits < 0.9 * coding.mask_entropy_bits([mask.size], [int(mask.sum())])
    assert label_bits < 0.9 * labels.size * coding.entropy_bits(coding.symbol_counts(labels, 25))


def test_plane_context_decoders_refuse_what_was_not_announced():
    mask = np.zeros(40, bool)
    mask[::3] = True
    data = coding.context_masks_encode([mask], [(4, 10)])
    with pytest.raises(coding.CodingError):
        coding.context_masks_decode(data, [(4, 10)], [int(mask.sum()) + 1])
    book = np.array([-1.0, 1.0], np.float32)
    data = coding.context_labels_encode([np.array([0, 1, 1, 0], np.int32)], book, [(4,)], [np.ones(4, bool)])
    with pytest.raises(coding.CodingError):  # only positive values now: a negative rank is no label
        coding.context_labels_decode(data, np.array([1.0, 2.0], np.float32), [(4,)], [np.ones(4, bool)])
