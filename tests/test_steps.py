"""The workflow's steps as plain functions: a sweep point is encoded once and each file decoded once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netquant import coding, container, measure, models, prune, quantize, steps, sweeps


@pytest.fixture
def pruned_qmodel():
    torch.manual_seed(0)
    model = models.build("lenet5")
    names = [n for n, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    masks = prune.magnitude_masks({n: params[n] for n in prune.prunable_names(model)}, 0.9)
    state = {k: v.detach() * masks[k] if k in masks else v.detach() for k, v in model.state_dict().items()}
    return quantize.quantize_model(state, param_names=names, masks=masks, method="kmeans", k=16, parameters=names)


def _counting(monkeypatch, module, name, counts):
    original = getattr(module, name)

    def counted(*args, **kwargs):
        counts[name] = counts.get(name, 0) + 1
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)


def test_a_sweep_point_runs_each_coder_once(tmp_path, monkeypatch, pruned_qmodel):
    counts: dict[str, int] = {}
    for name in ("huffman_encode", "ans_encode", "mask_ans_encode", "dc_gap_symbols", "ans_layers_encode",
                 "mask_context_encode"):
        _counting(monkeypatch, coding, name, counts)
    coding_cfg = {"label_code": "huffman", "index_code": "deep-compression", "index_bound": 32}
    decoded, metrics, variants = measure.write_files(str(tmp_path / "k=16-ft"), pruned_qmodel, coding_cfg,
                                                     sweeps.OTHER_CODES)
    n_sparse = sum(not t.mask.all() for t in pruned_qmodel.tensors.values())
    # labels by Huffman once, positions by Deep Compression's gaps once (its Huffman stream once), ANS
    # labels once (the ANS file and the "ans" size), mask-ANS positions once, per-layer ANS labels and
    # context-modelled positions once (the context file and its sizes)
    assert counts == {"huffman_encode": 2, "dc_gap_symbols": n_sparse, "ans_encode": 1, "mask_ans_encode": 1,
                      "ans_layers_encode": 1, "mask_context_encode": 1}
    assert set(variants) == {"ans", "mask-ans", "context"}
    for path, m in [(str(tmp_path / "k=16-ft.nqz"), metrics), *variants.values()]:
        assert container.metrics(path)["ratio_file"] == m["ratio_file"]
        for a, b in zip(container.read_state_dict(path).values(), decoded.state_dict().values()):
            assert torch.equal(a, b)
    assert metrics["bits_per_weight"]["ans"] == pytest.approx(
        variants["ans"][1]["bits_per_weight"]["in_file"], abs=64 / metrics["n_quantized"])


def test_an_unpruned_point_is_one_file(tmp_path, pruned_qmodel):
    _, metrics, variants = measure.write_files(str(tmp_path / "p"), pruned_qmodel, {
        "label_code": "huffman", "index_code": "deep-compression", "index_bound": 32})
    assert variants == {} and sorted(p.name for p in tmp_path.iterdir()) == ["p.nqz"]
    assert metrics["file_bytes"] == (tmp_path / "p.nqz").stat().st_size


def test_epoch_generators_are_independent_of_order():
    a = torch.rand(3, generator=steps.epoch_generator(5, 2))
    torch.rand(10, generator=steps.epoch_generator(5, 1))
    assert torch.equal(a, torch.rand(3, generator=steps.epoch_generator(5, 2)))
    assert not torch.equal(a, torch.rand(3, generator=steps.epoch_generator(5, 3)))


def test_method_options_map_the_config_section():
    options = {"init": "linear", "max_iter": 100, "tol": 1e-7, "zero_center": True, "weighted_mean": True,
               "ecsq_k": 256, "bins": None}
    assert quantize.method_options("ecsq", options)["k"] == 256
    assert "k" not in quantize.method_options("kmeans", options)
    assert "bins" not in quantize.method_options("dp-kmeans", options)
    assert quantize.method_options("dp-ecsq", {**options, "bins": 512})["bins"] == 512
    assert np.isscalar(quantize.method_options("uniform", options)["tol"])


def test_the_paper_floor_of_each_row():
    assert sweeps.paper_floor("lenet5", "uniform", "hessian-50000") == 99.28
    assert sweeps.paper_floor("resnet32", "dp-ecsq", "hessian-50000") == 92.73  # its heuristic's: ECSQ
    assert sweeps.paper_floor("alexnet", "hwkmeans", "adam") == 56.04
    with pytest.raises(ValueError, match="no ecsq row for alexnet"):
        sweeps.paper_floor("alexnet", "ecsq", "adam")


def test_unquantized_parameters_in_half_precision(tmp_path):
    from netquant.qmodel import QuantizedModel, QuantizedTensor

    q = QuantizedModel([np.array([-1.0, 1.0], np.float32)],
                       {"w": QuantizedTensor((4,), 0, np.array([0, 1, -1, 1], np.int32))},
                       {"bn.weight": np.array([0.3, 33.1], np.float32), "bn.running_mean": np.zeros(2, np.float32)},
                       ["w", "bn.weight", "bn.running_mean"], ["w", "bn.weight"])
    coding = {"label_code": "huffman", "index_code": "mask-ans", "index_bound": 32}
    full = measure.write_files(str(tmp_path / "full"), q, coding)[1]
    decoded, half, _ = measure.write_files(str(tmp_path / "half"), q, {**coding, "unquantized": "float16"})
    # two parameters, 2 bytes each saved in the unquantized section
    assert full["section_bytes"]["PASS"] - half["section_bytes"]["PASS"] == 2 * 2
    assert decoded.passthrough["bn.weight"].dtype == np.float16
    assert decoded.passthrough["bn.running_mean"].dtype == np.float32  # buffers stay as they are
    np.testing.assert_allclose(decoded.passthrough["bn.weight"], [0.3, 33.1], rtol=1e-3)
