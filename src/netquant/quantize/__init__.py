"""Scalar quantizers of network weights and applying them to a model.

Every quantizer works on a 1-D weight vector ``w`` [n] with an optional importance ``h`` [n] (a diagonal
Hessian or the square root of Adam's second moments, ``h >= 0``; ``None`` means all ones) and returns a
:class:`QuantizationResult`: float32 ``centers`` [k], ascending, every one used, and int32 ``labels`` [n].
Statistics are per weight: ``weighted_distortion = 1/n sum h (w - c[l])^2``, ``entropy`` in bits of the
label histogram, ``objective`` the weighted distortion (+ ``lam * entropy`` for ECSQ: Algorithm 1's J).

The files follow the algorithm families:

- ``vector``: :func:`quantize`, one vector with any of :data:`METHODS`;
- ``sorted``: the sorted weights and prefix sums every method but uniform shares;
- ``lloyd``: k-means and Hessian-weighted k-means; ``ecsq``: iterative ECSQ (Algorithm 1);
- ``uniform``: uniform quantization with plain or weighted bin means;
- ``dp``: exact dynamic-programming solvers (optimal k-means; optimal interval-cell ECSQ);
- ``rates``: rate grids (k, step or lam for a range of bits); ``model``: :func:`quantize_model`, a
  state_dict's tensors with one codebook or one per layer;
- ``network``: :func:`quantize_network`, an ``nn.Module``: which parameters, their masks, BatchNorm folded,
  the rate as the method's own parameter (the workflow's points and ``netquant.compress`` both use it);
- ``checks``, ``result``: argument checks and the result type.

The choices the paper leaves open (initialisation, iteration limits, rate grids, whether 0 is a bin
centre, ...) are options of :func:`quantize`, exposed as config keys and listed in config/README.md.
"""

from netquant.quantize.model import kept_values, quantize_model
from netquant.quantize.network import quantize_network, quantized_names
from netquant.quantize.rates import rate_grid, rate_is_integer, rate_parameter
from netquant.quantize.result import QuantizationResult
from netquant.quantize.vector import method_options, quantize
from netquant.vocabulary import METHODS

__all__ = ["METHODS", "QuantizationResult", "kept_values", "method_options", "quantize", "quantize_model",
           "quantize_network", "quantized_names", "rate_grid", "rate_is_integer", "rate_parameter"]
