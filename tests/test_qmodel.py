"""The quantized-model representation: decoding, counts, pruned elements, construction errors."""

import numpy as np
import pytest
import torch

from netquant.qmodel import PRUNED, QuantizedModel, QuantizedTensor, from_pruned


def _model():
    labels = np.array([0, 1, PRUNED, 1, 0, PRUNED], dtype=np.int32)
    return QuantizedModel([np.array([-0.5, 0.25], np.float32)], {"w": QuantizedTensor((2, 3), 0, labels)},
                          {"b": np.ones(2, np.float32), "count": np.array(3)}, ["w", "b", "count"], ["w", "b"])


def test_values_state_dict_and_counts():
    q = _model()
    np.testing.assert_array_equal(q.values("w"), [[-0.5, 0.25, 0.0], [0.25, -0.5, 0.0]])
    sd = q.state_dict()
    assert list(sd) == ["w", "b", "count"] and sd["w"].dtype == torch.float32
    assert q.n_params == 8 and q.n_quantized == 4
    assert q.tensors["w"].mask.tolist() == [True, True, False, True, True, False]


def test_inconsistent_models_are_refused():
    with pytest.raises(ValueError, match="labels outside"):
        QuantizedModel([np.zeros(1, np.float32)], {"w": QuantizedTensor((2,), 0, np.array([0, 1]))}, {}, ["w"])
    with pytest.raises(ValueError, match="order and entries"):
        QuantizedModel([], {}, {"b": np.ones(1)}, ["a"])
    with pytest.raises(ValueError, match="needs 6"):
        QuantizedTensor((2, 3), 0, np.zeros(5))


def test_from_pruned_keeps_every_kept_value_exactly():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 5, generator=g)
    mask = w.abs() > 0.5
    q = from_pruned({"w": w * mask, "b": torch.ones(5)}, {"w": mask}, param_names=["w", "b"])
    assert torch.equal(q.state_dict()["w"], w * mask) and q.n_quantized == int(mask.sum())
