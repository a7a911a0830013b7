"""Fine-tuning of shared values: fixed labels, zero pruned weights, member-gradient aggregation, real nets."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netquant import models
from netquant.finetune import finetune_codebooks
from netquant.qmodel import PRUNED, QuantizedModel, QuantizedTensor


def quantize_by_rounding(model: nn.Module, names: list[str], k: int, *, per_layer: bool = False,
                         prune_fraction: float = 0.0) -> QuantizedModel:
    """Round the named tensors to k evenly spaced values in [-max|w|, max|w|] (shared or per tensor);
    the smallest ``prune_fraction`` of each tensor's elements (by magnitude) is pruned."""
    state = {name: value.detach().cpu().numpy() for name, value in model.state_dict().items()}
    shared_range = max(float(np.abs(state[n]).max()) for n in names)
    codebooks, tensors = [], {}
    for name in names:
        w = state[name].reshape(-1).astype(np.float64)
        if per_layer or not codebooks:
            extent = float(np.abs(w).max()) if per_layer else shared_range
            codebooks.append(np.linspace(-extent, extent, k))
        centers = codebooks[-1]
        labels = np.abs(w[:, None] - centers[None, :]).argmin(axis=1).astype(np.int32)
        if prune_fraction:
            labels[np.abs(w) < np.quantile(np.abs(w), prune_fraction)] = PRUNED
        tensors[name] = QuantizedTensor(state[name].shape, len(codebooks) - 1, labels)
    return QuantizedModel(
        codebooks=codebooks,
        tensors=tensors,
        passthrough={n: v for n, v in state.items() if n not in tensors},
        order=list(state),
        param_names=[n for n, _ in model.named_parameters()],
    )


def toy_problem(seed: int = 0):
    """Three linearly separable classes in 8-D and a small MLP trained on them (dense, float32)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 8, generator=gen)
    y = (x @ torch.randn(8, 3, generator=gen)).argmax(dim=1)
    torch.manual_seed(seed)
    mlp = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.Adam(mlp.parameters(), lr=0.02)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(mlp(x), y).backward()
        opt.step()
    return mlp, x, y


def decoded_loss(arch_model: nn.Module, qmodel: QuantizedModel, x: torch.Tensor, y: torch.Tensor) -> float:
    arch_model.load_state_dict(qmodel.state_dict())
    arch_model.eval()
    with torch.no_grad():
        return F.cross_entropy(arch_model(x), y).item()


def assert_same_assignment(before: QuantizedModel, after: QuantizedModel) -> None:
    assert after.order == before.order
    assert set(after.tensors) == set(before.tensors)
    for name, t in before.tensors.items():
        np.testing.assert_array_equal(after.tensors[name].labels, t.labels)
        assert after.tensors[name].codebook == t.codebook
        values = after.values(name).reshape(-1)
        assert np.all(values[t.labels == PRUNED] == 0.0)
        used = np.unique(t.labels[t.labels != PRUNED])
        assert len(np.unique(values[t.labels != PRUNED])) == len(used)
    assert [len(c) for c in after.codebooks] == [len(c) for c in before.codebooks]
    for b, a in zip(before.codebooks, after.codebooks):
        assert a.dtype == np.float32 and len(np.unique(a)) == len(np.unique(b))
    for name, value in before.passthrough.items():
        np.testing.assert_array_equal(after.passthrough[name], value)


@pytest.mark.parametrize(("reduction", "lr"), [("mean", 0.2), ("sum", 0.005)])
@pytest.mark.parametrize("per_layer", [False, True], ids=["shared", "per-layer"])
def test_toy_loss_decreases_with_fixed_labels_and_zero_pruned(per_layer, reduction, lr):
    """3 values + pruned zeros (30%); "sum" needs an lr about one cluster size (~40-80 here) smaller."""
    torch.set_num_threads(1)
    mlp, x, y = toy_problem()
    qmodel = quantize_by_rounding(mlp, ["0.weight", "2.weight"], k=3, per_layer=per_layer, prune_fraction=0.3)
    loss_quantized = decoded_loss(mlp, qmodel, x, y)
    batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 512, 64)]

    tuned, history = finetune_codebooks(mlp, qmodel, batches, steps=80, lr=lr, reduction=reduction)

    assert_same_assignment(qmodel, tuned)
    assert not all(np.array_equal(a, b) for a, b in zip(tuned.codebooks, qmodel.codebooks))
    loss_tuned = decoded_loss(mlp, tuned, x, y)  # measured independently on the decoded network
    assert loss_tuned < 0.5 * loss_quantized, (loss_quantized, loss_tuned)
    assert len(history.loss) == 80 and history.lr == [lr] * 80
    assert np.mean(history.loss[-8:]) < np.mean(history.loss[:8])
    # biases were not quantized: frozen passthrough, bit for bit, also in the model left behind
    for name in ("0.bias", "2.bias"):
        np.testing.assert_array_equal(tuned.passthrough[name], qmodel.passthrough[name])
        np.testing.assert_array_equal(mlp.state_dict()[name].numpy(), qmodel.passthrough[name])


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("per_layer", [False, True], ids=["shared", "per-layer"])
def test_centre_gradient_aggregates_member_gradients(reduction, per_layer):
    """One plain SGD step (no momentum) moves each centre by -lr times the sum (or mean) of the dense
    gradients of its members, computed here by autograd on the decoded weights and a bincount."""
    torch.set_num_threads(1)
    mlp, x, y = toy_problem(seed=1)
    names = ["0.weight", "0.bias", "2.weight"]
    qmodel = quantize_by_rounding(mlp, names, k=5, per_layer=per_layer, prune_fraction=0.2)
    batch = (x[:100], y[:100])

    dense = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    dense.load_state_dict(qmodel.state_dict())
    F.cross_entropy(dense(batch[0]), batch[1]).backward()
    grads = dict(dense.named_parameters())
    expected = [np.zeros(len(c)) for c in qmodel.codebooks]
    counts = [np.zeros(len(c)) for c in qmodel.codebooks]
    for name in names:
        t = qmodel.tensors[name]
        kept = t.labels != PRUNED
        g = grads[name].grad.double().numpy().reshape(-1)
        expected[t.codebook] += np.bincount(t.labels[kept], weights=g[kept], minlength=len(expected[t.codebook]))
        counts[t.codebook] += np.bincount(t.labels[kept], minlength=len(counts[t.codebook]))
    if reduction == "mean":
        expected = [e / np.maximum(n, 1) for e, n in zip(expected, counts)]
    assert max(np.abs(e).max() for e in expected) > 1e-4  # a real gradient, not all zeros

    scale = max(np.abs(c).max() for c in qmodel.codebooks) / max(np.abs(e).max() for e in expected)
    tuned, _ = finetune_codebooks(mlp, qmodel, [batch], steps=1, lr=scale, momentum=0.0, reduction=reduction)

    for before, after, e in zip(qmodel.codebooks, tuned.codebooks, expected):
        measured = (before.astype(np.float64) - after.astype(np.float64)) / scale
        np.testing.assert_allclose(measured, e, rtol=1e-4, atol=1e-5 * np.abs(e).max())


def test_callable_batches_start_a_new_epoch_and_lists_cycle():
    torch.set_num_threads(1)
    mlp, x, y = toy_problem()
    qmodel = quantize_by_rounding(mlp, ["0.weight", "2.weight"], k=4)
    epochs = []

    def epoch():
        epochs.append(1)
        return iter([(x[:64], y[:64]), (x[64:128], y[64:128])])

    _, history = finetune_codebooks(mlp, qmodel, epoch, steps=5, lr=0.01)
    assert len(epochs) == 3 and len(history.loss) == 5
    _, history = finetune_codebooks(mlp, qmodel, [(x[:64], y[:64])], steps=3, lr=0.01, momentum=0.0)
    assert len(history.loss) == 3 and history.loss[0] > history.loss[2]  # same batch, descending

    one_shot = ((x[:64], y[:64]) for _ in range(2))
    with pytest.raises(ValueError, match="ran out after 2 steps"):
        finetune_codebooks(mlp, qmodel, one_shot, steps=3, lr=0.01)


def test_lr_schedule_eval_fn_and_determinism():
    torch.set_num_threads(1)
    mlp, x, y = toy_problem()
    qmodel = quantize_by_rounding(mlp, ["0.weight", "2.weight"], k=4, prune_fraction=0.3)
    batches = [(x[i:i + 128], y[i:i + 128]) for i in range(0, 512, 128)]

    def accuracy(model):
        assert not model.training
        with torch.no_grad():
            return (model(x).argmax(1) == y).float().mean().item()

    runs = [finetune_codebooks(mlp, qmodel, batches, steps=12, lr=lambda s: 0.05 * 0.5 ** (s // 4),
                               eval_fn=accuracy) for _ in range(2)]
    (tuned, history), (again, _) = runs
    assert history.lr == [0.05] * 4 + [0.025] * 4 + [0.0125] * 4
    for a, b in zip(tuned.codebooks, again.codebooks):
        np.testing.assert_array_equal(a, b)
    assert history.eval_before == pytest.approx(accuracy(_loaded(mlp, qmodel)))
    assert history.eval_after == pytest.approx(accuracy(_loaded(mlp, tuned)))
    as_dict = history.to_dict()
    assert as_dict["reduction"] == "mean" and len(as_dict["loss"]) == 12

    unchanged, history = finetune_codebooks(mlp, qmodel, batches, steps=0, lr=0.1)
    for a, b in zip(unchanged.codebooks, qmodel.codebooks):
        np.testing.assert_array_equal(a, b)
    assert history.loss == []


def _loaded(model, qmodel):
    model.load_state_dict(qmodel.state_dict())
    return model.eval()


def test_lenet5_shapes_shared_codebook_all_parameters():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    lenet = models.build("lenet5")
    names = [n for n, _ in lenet.named_parameters()]
    qmodel = quantize_by_rounding(lenet, names, k=8, prune_fraction=0.5)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 1, 28, 28, generator=gen), torch.randint(0, 10, (8,), generator=gen))]

    tuned, history = finetune_codebooks(lenet, qmodel, batches, steps=2, lr=0.01)

    assert_same_assignment(qmodel, tuned)
    assert len(tuned.codebooks) == 1 and not np.array_equal(tuned.codebooks[0], qmodel.codebooks[0])
    assert all(np.isfinite(history.loss))
    assert tuned.n_params == 431_080
    state = lenet.state_dict()  # the model is left holding the fine-tuned decoded values
    for name in names:
        np.testing.assert_array_equal(state[name].numpy(), tuned.values(name))


def test_resnet32_with_batchnorm_parameters_quantized_runs_in_eval_mode():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    resnet = models.build("resnet32")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 32, 32, generator=gen)
    resnet.train()
    with torch.no_grad():  # trained-looking BN parameters; running statistics of x (passthrough)
        for module in resnet.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.momentum = None  # cumulative average: the statistics of this one pass
        resnet(x)
    names = [n for n, _ in resnet.named_parameters()]  # conv, fc and BN gamma/beta, as in the paper
    assert "bn1.weight" in names and "bn1.bias" in names
    qmodel = quantize_by_rounding(resnet, names, k=64, prune_fraction=0.1)
    assert "bn1.running_mean" in qmodel.passthrough and "bn1.num_batches_tracked" in qmodel.passthrough
    batch = (x[:4], torch.randint(0, 10, (4,), generator=gen))

    tuned, history = finetune_codebooks(resnet, qmodel, [batch], steps=2, lr=0.01)

    assert_same_assignment(qmodel, tuned)  # includes: running statistics untouched
    assert not resnet.training
    for name, value in qmodel.passthrough.items():
        np.testing.assert_array_equal(resnet.state_dict()[name].numpy(), value)
    # The first step's loss is the eval-mode loss of the decoded quantized network (running statistics).
    assert history.loss[0] == pytest.approx(decoded_loss(models.build("resnet32"), qmodel, *batch), rel=1e-5)
    assert history.loss[1] < history.loss[0]  # same batch twice
    for name in ("bn1.weight", "layer3.4.bn2.bias"):
        assert not np.array_equal(tuned.values(name), qmodel.values(name))


def test_mismatched_network_or_arguments_fail_clearly():
    torch.set_num_threads(1)
    lenet = models.build("lenet5")
    qmodel = quantize_by_rounding(lenet, ["conv1.weight", "fc2.weight"], k=4)
    batches = [(torch.randn(2, 1, 28, 28), torch.tensor([0, 1]))]
    with pytest.raises(ValueError, match="does not match the network's state_dict.*architecture"):
        finetune_codebooks(models.build("resnet32"), qmodel, batches, steps=1, lr=0.01)
    with pytest.raises(ValueError, match=r"shapes \(fc2.weight: quantized \(10, 500\) vs network \(5, 500\)"):
        finetune_codebooks(models.build("lenet5", num_classes=5), qmodel, batches, steps=1, lr=0.01)
    with pytest.raises(ValueError, match="reduction must be one of"):
        finetune_codebooks(lenet, qmodel, batches, steps=1, lr=0.01, reduction="average")
    with pytest.raises(ValueError, match="steps must be an integer"):
        finetune_codebooks(lenet, qmodel, batches, steps=-1, lr=0.01)
    with pytest.raises(ValueError, match="not an \\(inputs, targets\\) pair"):
        finetune_codebooks(lenet, qmodel, [torch.randn(3, 1, 28, 28)], steps=1, lr=0.01)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        finetune_codebooks(lenet, qmodel, batches, steps=5, lr=1e30, reduction="sum")


def test_clipping_bounds_each_step_of_a_wrecked_network():
    """Centres 1,000 times too large: huge gradients. A clipped step moves the centres by at most
    lr * max_grad_norm (no momentum); an unclipped one by far more."""
    mlp, x, y = toy_problem()
    qmodel = quantize_by_rounding(mlp, ["0.weight", "2.weight"], 8)
    qmodel.codebooks = [book * 1000 for book in qmodel.codebooks]
    batches = [(x[:64], y[:64])]

    def moved(max_grad_norm):
        tuned, history = finetune_codebooks(copy.deepcopy(mlp), qmodel, batches, steps=1, lr=0.1, momentum=0.0,
                                            max_grad_norm=max_grad_norm)
        return float(np.linalg.norm(tuned.codebooks[0] - qmodel.codebooks[0])), history.clipped

    assert moved(0.5)[0] <= 0.1 * 0.5 * (1 + 1e-5) and moved(0.5)[1] == 1
    assert moved(None)[0] > 10 * 0.1 * 0.5 and moved(None)[1] == 0


def test_training_the_unquantized_parameters_too():
    """Biases are stored as they are: training them with the centres lowers the loss further, labels fixed."""
    torch.set_num_threads(1)
    mlp, x, y = toy_problem()
    qmodel = quantize_by_rounding(mlp, ["0.weight", "2.weight"], k=3, prune_fraction=0.3)
    batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 512, 64)]
    centres, _ = finetune_codebooks(copy.deepcopy(mlp), qmodel, batches, steps=60, lr=0.2)
    both, _ = finetune_codebooks(copy.deepcopy(mlp), qmodel, batches, steps=60, lr=0.2, train_unquantized=True)
    for name in both.tensors:
        np.testing.assert_array_equal(both.tensors[name].labels, qmodel.tensors[name].labels)
    assert not np.array_equal(both.passthrough["0.bias"], qmodel.passthrough["0.bias"])
    assert decoded_loss(mlp, both, x, y) < decoded_loss(mlp, centres, x, y)


def test_batchnorm_statistics_measured_again_on_the_quantized_network():
    from netquant import batchnorm

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    qmodel = quantize_by_rounding(model, ["0.weight", "4.weight"], k=4)
    x = torch.randn(256, 3, 8, 8) * 2 + 1
    measured = batchnorm.reestimate(copy.deepcopy(model), qmodel, [(x[i:i + 64], None) for i in range(0, 256, 64)])
    decoded = copy.deepcopy(model)
    decoded.load_state_dict(qmodel.state_dict())
    with torch.no_grad():
        features = decoded[0](x)  # the quantized convolution's outputs: their per-channel mean and variance
    np.testing.assert_allclose(measured.passthrough["1.running_mean"], features.mean((0, 2, 3)).numpy(), rtol=1e-4)
    np.testing.assert_allclose(measured.passthrough["1.running_var"], features.var((0, 2, 3)).numpy(), rtol=1e-3)
    assert_same_assignment(qmodel, QuantizedModel(measured.codebooks, measured.tensors, qmodel.passthrough,
                                                  measured.order, measured.param_names))


def test_statistics_measured_again_on_a_folded_network_give_the_same_network():
    from netquant import batchnorm

    torch.manual_seed(1)
    # two BatchNorm layers in a row: the second one's statistics depend on how the first one runs
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4),
                          nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 2))
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    unfolded = {k: v.detach().clone() for k, v in model.state_dict().items()}
    folded_state, _ = batchnorm.fold(model, unfolded)
    folded_model = copy.deepcopy(model)
    folded_model.load_state_dict(folded_state)
    plain = quantize_by_rounding(model, ["0.weight", "3.weight", "7.weight"], k=4)
    folded = quantize_by_rounding(folded_model, ["0.weight", "3.weight", "7.weight"], k=4)
    x = torch.randn(256, 3, 8, 8) * 2 + 1
    batches = [(x[i:i + 64], None) for i in range(0, 256, 64)]
    want = batchnorm.reestimate(copy.deepcopy(model), plain, batches)
    got = batchnorm.reestimate(copy.deepcopy(model), folded, batches, unfolded=unfolded)
    outputs = []
    for q in (want, got):
        net = copy.deepcopy(model)
        net.load_state_dict(q.state_dict())
        with torch.no_grad():
            outputs.append(net.eval()(x))
    assert torch.allclose(outputs[0], outputs[1], rtol=1e-4, atol=1e-4), (outputs[0] - outputs[1]).abs().max()


def test_a_cosine_learning_rate_decays_to_zero():
    from netquant.finetune import _cosine

    assert _cosine(0.01, 100, 0) == 0.01
    assert _cosine(0.01, 100, 50) == pytest.approx(0.005)
    assert _cosine(0.01, 100, 99) < 1e-5
