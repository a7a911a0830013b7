"""Entropy codes for cluster labels and for the positions of unpruned weights.

Label codes (a stream of integer symbols ``0..k-1``, int32, shape [n]):

- **fixed**: every symbol in ``fixed_width(k) = ceil(log2 k)`` bits (0 bits when k == 1).
- **huffman**: canonical Huffman. Only the code length of each symbol is stored; the codewords follow
  from the lengths by the canonical rule (symbols sorted by (length, symbol), consecutive integer codes),
  so decoding is integer-only and identical on every machine. A stream with a single distinct symbol has
  code length 0 for it and costs 0 bits (the table alone says what every symbol is).
- **ans**: rANS from ``constriction`` (stack coder, 32-bit words, 24-bit fixed-point model). The model is
  built from the integer symbol counts, which are what a file stores, so the decoder rebuilds exactly the
  encoder's model. It reaches the entropy within a few bits per stream.
- **ans-layer**: as ``ans``, but a tensor whose labels are distributed differently from the stream's (a
  layer of larger weights, the biases) is coded with its own counts, stored after the stream's, where
  that is estimated to cost less than the shared model, table included (``layer_label_models``).

Bit order: fixed and Huffman bitstreams are big-endian (first bit = most significant bit of byte 0),
padded with zero bits to whole bytes; ``nbits`` is the unpadded length. ANS streams are constriction's
uint32 words, stored little-endian.

Position codes (one boolean mask per tensor, True = kept, flattened row-major):

- **deep-compression** (Han et al. 2016): each kept weight is given by its distance ``gap >= 1`` to the
  previous kept weight (the first one from position -1). Gaps up to ``bound`` are the symbols ``1..bound``;
  a larger gap first emits ``(gap - 1) // bound`` filler symbols ``0``, each meaning "advance ``bound``
  positions, no weight here". The symbols of all tensors form one stream, Huffman coded with one table.
  Unlike Deep Compression, a filler carries no weight codeword (there it is a stored zero weight), so
  fillers cost only their index codeword. Pruned elements after the last kept one are not coded.
- **mask-ans**: the mask of each tensor, one binary symbol per element, ANS coded with a Bernoulli model
  of probability ``kept / size`` of that tensor (both numbers are known to the decoder). This costs
  ``size * H(kept / size)`` bits, the entropy of the mask when its elements are taken as independent: the
  optimum for that model, with no table, no fillers, no Huffman rounding, and the density of each tensor
  rather than one table for all. Hence it is the better option reported beside deep-compression.
- **mask-context**: the mask of each tensor as a matrix (rows = output units, ``shape[0]``; a 1-D tensor is
  one row), rows in order, each element ANS coded with its own probability from what the decoder already
  knows: the row's kept count ``n_r`` (stored, a varint per row), and how many earlier rows kept the same
  column (an input unit, or an input channel and kernel position). With ``q = n_r / C`` the row's density,
  ``d`` the tensor's, ``c = (kept in the column so far + CONTEXT_PRIOR * d) / (rows so far +
  CONTEXT_PRIOR)`` the column's estimate, the odds of "kept" are ``odds(q) * odds(c) / odds(d)``: row and
  column effects multiply the odds (independent evidence about one unit's inputs and outputs). Only
  + - * / enter, so encoder and decoder compute the same probabilities bit for bit on any machine. It pays
  where pruning left structure: output units that lost most of their inputs, inputs pruned in every row.
  Where it would not (estimated with its row counts), a tensor is coded as by mask-ans; a flag says which.

Both at once, by their neighbourhood (``context``):

- **plane-context**: a tensor as a 4-D array visited kernel position by kernel position ("plane order");
  every position's kept flag is coded with contexts from its causal kernel neighbours and from how much
  its filter and input channel kept in earlier planes; every label, as a signed rank, with DeepCABAC's
  binarisation and contexts from the neighbours' ranks; adaptive counts, no table (``coding.context``).

Every decoder raises ``CodingError`` (a ``ValueError``) on a stream that does not decode to what was
announced.

The codes by family: ``symbols`` (statistics, ``CodingError``), ``prefix`` (fixed-length and canonical
Huffman, bit packing), ``ans`` (rANS label codes and the ANS decoder), ``gaps`` (Deep Compression's
relative index), ``masks`` (Bernoulli-modelled masks: mask-ans, mask-context), ``context`` (plane-context
labels and masks).
"""

from netquant.coding.ans import (ans_decode, ans_decoder, ans_encode, ans_layers_decode, ans_layers_encode,
                                 layer_label_models)
from netquant.coding.context import labels_decode as context_labels_decode
from netquant.coding.context import labels_encode as context_labels_encode
from netquant.coding.context import masks_decode as context_masks_decode
from netquant.coding.context import masks_encode as context_masks_encode
from netquant.coding.gaps import dc_gap_symbols, dc_masks
from netquant.coding.masks import (CONTEXT_PRIOR, mask_ans_decode, mask_ans_encode, mask_context_choice,
                                   mask_context_decode, mask_context_encode, mask_context_row_counts,
                                   mask_entropy_bits, mask_rows)
from netquant.coding.prefix import (canonical_codes, fixed_decode, fixed_encode, fixed_width, huffman_decode,
                                    huffman_encode, huffman_lengths, kraft_sum_is_one)
from netquant.coding.symbols import CodingError, entropy_bits, symbol_counts, varint_bytes
from netquant.vocabulary import INDEX_CODES, LABEL_CODES

__all__ = ["CONTEXT_PRIOR", "INDEX_CODES", "LABEL_CODES", "CodingError", "ans_decode", "ans_decoder", "ans_encode",
           "context_labels_decode", "context_labels_encode", "context_masks_decode", "context_masks_encode",
           "ans_layers_decode", "ans_layers_encode", "canonical_codes", "dc_gap_symbols", "dc_masks", "entropy_bits",
           "fixed_decode", "fixed_encode", "fixed_width", "huffman_decode", "huffman_encode", "huffman_lengths",
           "kraft_sum_is_one", "layer_label_models", "mask_ans_decode", "mask_ans_encode", "mask_context_choice",
           "mask_context_decode", "mask_context_encode", "mask_context_row_counts", "mask_entropy_bits", "mask_rows",
           "symbol_counts", "varint_bytes"]
