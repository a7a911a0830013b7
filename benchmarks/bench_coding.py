"""Label coding speed at pruned-AlexNet scale: 6.7 M labels over 32 symbols.

    OMP_NUM_THREADS=1 python benchmarks/bench_coding.py [--n 6700000] [--dahuffman-n 500000] [--repeat 3]

The labels come from uniform quantization (32 bins) of Laplacian weights with the smallest 89% of
magnitudes pruned, as in AlexNet (Table 1): a bimodal, skewed distribution (about 4 bits of entropy).
Each codec encodes and decodes the same stream; times are the best of ``--repeat`` runs. Building the
code (counting the symbols, code lengths) is timed apart from encoding. ``dahuffman`` (pure Python) is
timed the same way on the first ``--dahuffman-n`` labels (its code for encoding is built from the counts
of the full stream, so both codecs write the same number of bits); its times per symbol are extrapolated
linearly to the full stream.
Targets: >= 10 M symbols/s each way and >= 20x faster than dahuffman.
"""

from __future__ import annotations

import argparse

import numpy as np

from netquant import coding
from timing import best_of


def realistic_labels(n: int, k: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Laplace(0, 1) weights keeping the 11% largest magnitudes: |w| > t = ln(1 / 0.11), and the excess
    # over t is again Exp(1) (memoryless), so the survivors are drawn directly.
    w = (np.log(1 / 0.11) + rng.exponential(1.0, n)) * rng.choice([-1.0, 1.0], n)
    lo, hi = w.min(), w.max()
    return np.clip(np.rint((w - lo) / (hi - lo) * (k - 1)), 0, k - 1).astype(np.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6_700_000)
    parser.add_argument("--dahuffman-n", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    k = 32
    labels = realistic_labels(args.n, k)
    n = labels.size
    counts = coding.symbol_counts(labels, k)
    print(f"{n:,} labels, {np.count_nonzero(counts)} of {k} symbols used, "
          f"entropy {coding.entropy_bits(counts):.4f} bits/symbol")

    rows = []  # (codec, code construction s, encode s, decode s, bits per symbol)

    t_code, lengths = best_of(args.repeat, lambda: coding.huffman_lengths(coding.symbol_counts(labels, k)))
    t_enc, (data, nbits) = best_of(args.repeat, lambda: coding.huffman_encode(labels, lengths))
    t_dec, back = best_of(args.repeat, lambda: coding.huffman_decode(data, nbits, lengths, n))
    assert np.array_equal(back, labels)
    rows.append(("huffman (netquant)", t_code, t_enc, t_dec, nbits / n))

    width = coding.fixed_width(k)
    t_enc, (data, nbits) = best_of(args.repeat, lambda: coding.fixed_encode(labels, width))
    t_dec, back = best_of(args.repeat, lambda: coding.fixed_decode(data, width, n))
    assert np.array_equal(back, labels)
    rows.append(("fixed (netquant)", 0.0, t_enc, t_dec, nbits / n))

    t_code, counts = best_of(args.repeat, lambda: coding.symbol_counts(labels, k))
    t_enc, data = best_of(args.repeat, lambda: coding.ans_encode(labels, counts))
    t_dec, back = best_of(args.repeat, lambda: coding.ans_decode(data, counts, n))
    assert np.array_equal(back, labels)
    rows.append(("ans (constriction)", t_code, t_enc, t_dec, 8 * len(data) / n))

    from dahuffman import HuffmanCodec

    m = min(args.dahuffman_n, n)
    sample = labels[:m].tolist()
    scale = n / m
    t_code, _ = best_of(args.repeat, lambda: HuffmanCodec.from_data(sample))
    codec = HuffmanCodec.from_frequencies({s: int(c) for s, c in enumerate(counts) if c})  # full-stream code
    t_enc, encoded = best_of(args.repeat, lambda: codec.encode(sample))
    t_dec, decoded = best_of(args.repeat, lambda: codec.decode(encoded))
    assert decoded == sample
    rows.append((f"dahuffman (x{scale:.1f} from {m:,})", t_code * scale, t_enc * scale, t_dec * scale,
                 8 * len(encoded) / m))

    _, ref_code, ref_enc, ref_dec, _ = rows[-1]
    ref_total = ref_code + ref_enc + ref_dec
    print(f"\n{'codec':<34}{'code s':>8}{'encode s':>10}{'decode s':>10}{'enc Msym/s':>12}{'dec Msym/s':>12}"
          f"{'bits/sym':>10}{'enc x':>8}{'dec x':>8}{'all x':>8}")
    for name, tc, te, td, bits in rows:
        print(f"{name:<34}{tc:>8.3f}{te:>10.3f}{td:>10.3f}{n / te / 1e6:>12.1f}{n / td / 1e6:>12.1f}{bits:>10.4f}"
              f"{ref_enc / te:>8.1f}{ref_dec / td:>8.1f}{ref_total / (tc + te + td):>8.1f}")
    print("code s: counting the symbols and building the code (dahuffman: from_data); "
          "x: dahuffman's time / this codec's time; all: code + encode + decode")

    _, tc, te, td, _ = rows[0]
    print("\ntargets for huffman (netquant):")
    checks = [
        (">= 10 M symbols/s encode (code + encode)", n / (tc + te) >= 10e6),
        (">= 10 M symbols/s decode", n / td >= 10e6),
        (">= 20x dahuffman encode", ref_enc / te >= 20),
        (">= 20x dahuffman decode", ref_dec / td >= 20),
        (">= 20x dahuffman code + encode + decode", ref_total / (tc + te + td) >= 20),
    ]
    for label, ok in checks:
        print(f"  {label:<44}{'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
