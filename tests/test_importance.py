"""Importance estimators against exact references computed from explicit Jacobians and Hessians."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian, jacrev

from hypothesis import given, settings, strategies as st

from netquant import data, importance, models
from netquant.importance import adam_second_moments, apply_clamp, layer_summary
from netquant.importance import hessian_diagonal as hessian_diagonal_default

# the exact Gauss-Newton diagonal unless a test names another estimator
hessian_diagonal = functools.partial(hessian_diagonal_default, estimator="ggn")
from netquant.models import build


class TinyMLP(nn.Module):
    """Smooth (tanh) network: its exact Hessian diagonal differs from the Gauss-Newton diagonal."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


class TinyResNet(nn.Module):
    """Conv + BatchNorm + in-place ReLU + residual addition + max-pooling + Linear, input [B, 2, 4, 4]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(3)
        self.fc = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)) + x)
        return self.fc(F.max_pool2d(x, 2).flatten(1))


class LayerNormMLP(nn.Module):
    """A layer without a "modules" rule (LayerNorm): the "auto" backend must fall back to torch.func."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 5)
        self.norm = nn.LayerNorm(5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.fc1(x)))


def make(net: str, n: int = 12, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A float64 network in eval mode (BatchNorm with non-trivial running statistics) and n samples."""
    torch.manual_seed(seed)
    if net == "mlp":
        model, shape = TinyMLP(), (4,)
    elif net == "resnet":
        model, shape = TinyResNet(), (2, 4, 4)
    elif net == "linear":
        model, shape = nn.Linear(5, 4), (5,)
    else:
        model, shape = LayerNormMLP(), (4,)
    model = model.double()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    x = torch.randn(n, *shape, dtype=torch.float64)
    y = torch.randint(0, 3, (n,))
    return model.eval(), x, y


def flat_functions(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """(flat parameter vector, logits(flat) -> [n, C], mean loss(flat) -> scalar, unflatten)."""
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    buffers = dict(model.named_buffers())
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])

    def unflatten(v: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for k, s in zip(names, shapes):
            out[k] = v[i:i + s.numel()].view(s)
            i += s.numel()
        return out

    def logits(v: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**unflatten(v), **buffers}, (x,))

    def loss(v: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits(v), y)

    return flat, logits, loss, unflatten


def exact_ggn_diagonal(model, x, y) -> torch.Tensor:
    """diag((1/n) sum_n J_n^T (diag p_n - p_n p_n^T) J_n) with J from jacrev, flat [P]."""
    flat, logits, _, _ = flat_functions(model, x, y)
    jac = jacrev(logits)(flat)  # [n, C, P]
    p = torch.softmax(logits(flat), -1)
    h_out = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)
    return torch.einsum("ncp,ncd,ndp->p", jac, h_out, jac) / len(x)


def exact_hessian_diagonal(model, x, y) -> torch.Tensor:
    flat, _, loss, _ = flat_functions(model, x, y)
    return hessian(loss)(flat).diagonal()


def flatten(h: dict[str, torch.Tensor], model: nn.Module) -> torch.Tensor:
    return torch.cat([h[k].flatten() for k, _ in model.named_parameters()])


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------- hessian_diagonal against exact references

@pytest.mark.parametrize("net", ["mlp", "resnet", "layernorm"])
@pytest.mark.parametrize("backend", ["auto", "func"])
def test_ggn_equals_explicit_gauss_newton_diagonal(net, backend):
    model, x, y = make(net)
    h = hessian_diagonal(model, [(x, y)], len(x), clamp=None, backend=backend)
    assert rel_err(flatten(h, model), exact_ggn_diagonal(model, x, y)) < 1e-12


@pytest.mark.parametrize("backend", ["modules", "func"])
def test_ggn_in_single_rows_and_samples_when_memory_is_short(backend, monkeypatch):
    from netquant.importance import gauss_newton

    monkeypatch.setattr(gauss_newton, "_ELEMENTS_BUDGET", 50)  # one sample and one row of C per step
    model, x, y = make("resnet", n=4)
    h = hessian_diagonal(model, [(x, y)], len(x), clamp=None, backend=backend)
    assert rel_err(flatten(h, model), exact_ggn_diagonal(model, x, y)) < 1e-12


def test_modules_backend_refuses_layers_without_a_rule():
    model, x, y = make("layernorm")
    with pytest.raises(ValueError, match="LayerNorm"):
        hessian_diagonal(model, [(x, y)], len(x), backend="modules")


def test_ggn_is_the_exact_hessian_for_a_linear_model():
    model, x, y = make("linear")
    h = hessian_diagonal(model, [(x, y)], len(x), clamp=None)
    assert rel_err(flatten(h, model), exact_hessian_diagonal(model, x, y)) < 1e-12


def test_piecewise_linear_network_has_hessian_diagonal_equal_to_ggn_diagonal():
    # ReLU, max-pooling, eval-mode BatchNorm and residual additions: d^2 logits / d w_i^2 = 0 a.e.
    model, x, y = make("resnet")
    assert rel_err(exact_hessian_diagonal(model, x, y), exact_ggn_diagonal(model, x, y)) < 1e-10


def test_hutchinson_converges_to_exact_hessian_not_to_ggn():
    model, x, y = make("mlp")
    exact, ggn = exact_hessian_diagonal(model, x, y), exact_ggn_diagonal(model, x, y)
    assert rel_err(ggn, exact) > 0.2  # the smooth network separates the two quantities
    few = flatten(hessian_diagonal(model, [(x, y)], len(x), estimator="hutchinson", n_probes=20, clamp=None), model)
    many = flatten(hessian_diagonal(model, [(x, y)], len(x), estimator="hutchinson", n_probes=3000, clamp=None),
                   model)
    assert rel_err(many, exact) < 0.08
    assert rel_err(many, exact) < rel_err(few, exact) / 3
    assert rel_err(many, ggn) > 0.15


def test_ggn_mc_converges_to_exact_ggn():
    model, x, y = make("resnet")
    ggn = exact_ggn_diagonal(model, x, y)
    estimate = hessian_diagonal(model, [(x, y)], len(x), estimator="ggn-mc", mc_samples=3000, clamp=None)
    assert rel_err(flatten(estimate, model), ggn) < 0.05


def test_paper_networks_shapes_and_positive_finite_values():
    torch.manual_seed(0)
    model = build("lenet5")
    x, y = torch.randn(3, 1, 28, 28), torch.randint(0, 10, (3,))
    for estimator in ("ggn", "ggn-mc", "hutchinson"):
        h = hessian_diagonal(model, [(x, y)], 3, estimator=estimator)
        assert list(h) == [k for k, _ in model.named_parameters()]
        for k, p in model.named_parameters():
            assert h[k].shape == p.shape and h[k].dtype == p.dtype
            assert torch.isfinite(h[k]).all() and (h[k] > 0).all()
    resnet, x = build("resnet32"), torch.randn(2, 3, 32, 32)
    for m in resnet.modules():  # a fresh network's running statistics saturate the softmax: set them from data
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        resnet(torch.randn(16, 3, 32, 32))
    h = hessian_diagonal(resnet, [(x, torch.randint(0, 10, (2,)))], 2)
    assert {k: v.shape for k, v in h.items()} == {k: p.shape for k, p in resnet.named_parameters()}
    assert all(torch.isfinite(v).all() and (v > 0).all() for v in h.values())


@pytest.mark.parametrize("estimator", ["ggn", "ggn-mc"])
def test_backends_agree_on_lenet5(estimator):
    torch.manual_seed(1)
    model = build("lenet5")
    x, y = torch.randn(3, 1, 28, 28), torch.randint(0, 10, (3,))
    a = hessian_diagonal(model, [(x, y)], 3, estimator=estimator, backend="modules", clamp=None)
    b = hessian_diagonal(model, [(x, y)], 3, estimator=estimator, backend="func", clamp=None)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6 * float(b[k].abs().max()))


@pytest.mark.parametrize("estimator", ["ggn-mc", "hutchinson"])
def test_random_estimators_are_reproducible_with_the_seed(estimator):
    model, x, y = make("resnet")

    def run(seed):
        return flatten(hessian_diagonal(model, [(x, y)], len(x), estimator=estimator, seed=seed), model)

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_uses_exactly_the_first_n_samples_and_pulls_no_further_batch():
    model, x, y = make("resnet", n=10)
    expected = hessian_diagonal(model, [(x[:7], y[:7])], 7, clamp=None)

    def batches():
        yield x[:3], y[:3]
        yield x[3:8], y[3:8]  # overshoots: only its first 4 samples count
        raise AssertionError("a batch beyond n_samples was requested")

    got = hessian_diagonal(model, batches(), 7, clamp=None, chunk_size=2)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-12, atol=0)


def test_too_few_samples_is_an_error():
    model, x, y = make("mlp", n=5)
    with pytest.raises(ValueError, match="only 5 samples"):
        hessian_diagonal(model, [(x, y)], 6)


def test_model_mode_and_parameters_are_left_as_they_were():
    model, x, y = make("resnet")
    model.train()
    model.conv2.weight.requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    hessian_diagonal(model, [(x, y)], len(x))
    assert model.training and not model.conv2.weight.requires_grad
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"estimator": "exact"}, "unknown estimator"),
        ({"backend": "backpack"}, "unknown backend"),
        ({"n_samples": 0}, "n_samples must be a positive integer"),
        ({"n_probes": 0}, "n_probes must be a positive integer"),
        ({"clamp": -1.0}, "clamp must be"),
        ({"targets": torch.zeros(4)}, "targets must be int64"),
        ({"targets": torch.zeros(3, dtype=torch.int64)}, "targets must be int64"),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs, message):
    model, x, y = make("mlp", n=4)
    y = kwargs.pop("targets", y)
    n = kwargs.pop("n_samples", 4)
    with pytest.raises(ValueError, match=message):
        hessian_diagonal(model, [(x, y)], n, **kwargs)


def test_batchnorm_without_running_statistics_is_rejected():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False), nn.Flatten(),
                          nn.Linear(2, 3))
    with pytest.raises(ValueError, match="track_running_stats=True"):
        hessian_diagonal(model, [(torch.randn(2, 1, 3, 3), torch.tensor([0, 1]))], 2)


# ---------------------------------------------------------------- floor

def test_floor_clamps_negative_hutchinson_values_to_a_fraction_of_the_mean():
    model, x, y = make("mlp")
    raw = hessian_diagonal(model, [(x, y)], len(x), estimator="hutchinson", clamp=None)
    flat_raw = flatten(raw, model)
    assert (flat_raw < 0).any()  # one probe: noisy, some negative values
    floored = flatten(hessian_diagonal(model, [(x, y)], len(x), estimator="hutchinson", clamp=1e-3), model)
    threshold = 1e-3 * float(flat_raw.abs().mean())
    torch.testing.assert_close(floored, flat_raw.clamp(min=threshold), rtol=1e-12, atol=0)
    assert float(floored.min()) == pytest.approx(threshold, rel=1e-12)


def test_apply_clamp_rejects_all_zero_and_non_finite_estimates():
    with pytest.raises(ValueError, match="zero for every parameter"):
        apply_clamp({"w": torch.zeros(3)}, 1e-8)
    with pytest.raises(ValueError, match="non-finite"):
        apply_clamp({"w": torch.tensor([1.0, float("nan")])}, 1e-8)


# ---------------------------------------------------------------- Adam second moments

def adam_batches(n_batches: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 2, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g))
            for _ in range(n_batches)]


@pytest.mark.parametrize("bias_correction", [True, False])
def test_adam_importance_is_sqrt_of_torch_adam_second_moment(bias_correction):
    model, _, _ = make("resnet")
    reference = copy.deepcopy(model).train()
    batches = adam_batches()
    betas = (0.8, 0.99)
    importance, history = adam_second_moments(model, batches, epochs=2, lr=1e-2, betas=betas, eps=1e-7,
                                              bias_correction=bias_correction)

    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2, betas=betas, eps=1e-7)
    for _ in range(2):
        for x, y in batches:
            optimizer.zero_grad()
            F.cross_entropy(reference(x), y).backward()
            optimizer.step()
    for (k, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
        state = optimizer.state[q]
        v = state["exp_avg_sq"] / (1 - betas[1] ** float(state["step"])) if bias_correction else state["exp_avg_sq"]
        torch.testing.assert_close(importance[k], v.sqrt(), rtol=1e-12, atol=0)
    assert [h["steps"] for h in history] == [3, 6] and not model.training


def test_adam_keeps_pruned_weights_exactly_zero():
    model, _, _ = make("resnet")
    torch.manual_seed(5)
    masks = {"conv2.weight": torch.rand(model.conv2.weight.shape) < 0.5, "fc.weight": torch.rand(3, 12) < 0.5}
    start = {k: p.detach().clone() for k, p in model.named_parameters()}
    importance, _ = adam_second_moments(model, adam_batches(), epochs=3, lr=1e-2, masks=masks)
    params = dict(model.named_parameters())
    for k, keep in masks.items():
        assert (params[k][~keep] == 0).all()
        assert (importance[k][~keep] == 0).all() and (importance[k][keep] > 0).all()
        assert not torch.equal(params[k][keep], start[k][keep])


def test_adam_training_length_and_history():
    model, _, _ = make("resnet")
    batches = adam_batches()
    epochs_seen = []

    def per_epoch(epoch):
        epochs_seen.append(epoch)
        return batches

    _, history = adam_second_moments(model, per_epoch, epochs=3, lr=1e-3)
    assert epochs_seen == [0, 1, 2] and [h["epoch"] for h in history] == [1, 2, 3]
    assert all(h["samples"] == 24 and 0 <= h["accuracy"] <= 1 for h in history)
    _, history = adam_second_moments(model, batches, steps=5, lr=1e-3)
    assert [(h["steps"], h["samples"]) for h in history] == [(3, 24), (5, 16)]


def test_adam_loss_decreases_on_a_learnable_problem():
    model, _, _ = make("resnet")
    batches = adam_batches(n_batches=2)
    _, history = adam_second_moments(model, batches, epochs=30, lr=1e-2)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one of epochs= or steps="),
        ({"epochs": 1, "steps": 1}, "exactly one of epochs= or steps="),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"epochs": 1, "masks": {"nope": torch.ones(1, dtype=torch.bool)}}, "matches no parameter"),
        ({"epochs": 1, "masks": {"fc.weight": torch.ones(3, 11, dtype=torch.bool)}}, "bool tensor of shape"),
        ({"epochs": 1, "masks": {"fc.weight": torch.ones(3, 12)}}, "bool tensor of shape"),
        ({"epochs": 2, "one_shot": True}, "no batches in epoch 2"),
    ],
)
def test_adam_bad_arguments_raise_one_clear_error(kwargs, message):
    model, _, _ = make("resnet")
    batches = iter(adam_batches()) if kwargs.pop("one_shot", False) else adam_batches()
    with pytest.raises(ValueError, match=message):
        adam_second_moments(model, batches, **kwargs)


# ---------------------------------------------------------------- summary

def test_layer_summary_statistics_cover_kept_entries():
    importance = {"a": torch.tensor([1.0, 2.0, 3.0, 10.0]), "b": torch.tensor([[4.0, 0.0]])}
    rows = layer_summary(importance, masks={"a": torch.tensor([True, True, True, False])})
    assert rows[0] == {"name": "a", "numel": 4, "kept": 3, "mean": 2.0, "median": 2.0, "min": 1.0, "max": 3.0}
    assert rows[1] == {"name": "b", "numel": 2, "kept": 2, "mean": 2.0, "median": 0.0, "min": 0.0, "max": 4.0}


def test_becker_lecun_is_exact_for_a_single_linear_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    x, y = torch.randn(40, 3, 2, 2), torch.randint(0, 5, (40,))
    ours = importance.hessian_diagonal(model, [(x, y)], 40, estimator="becker-lecun", clamp=None)
    exact = importance.hessian_diagonal(model, [(x, y)], 40, estimator="ggn", clamp=None)
    for name in exact:
        torch.testing.assert_close(ours[name], exact[name], rtol=1e-5, atol=1e-7)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 9))
def test_becker_lecun_matches_the_hand_written_recursion(seed, batch):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    for p in model.parameters():
        p.data = torch.randn(p.shape, generator=g, dtype=torch.float64)
    x = torch.randn(batch, 4, generator=g, dtype=torch.float64)
    ours = importance.hessian_diagonal(model, [(x, torch.zeros(batch, dtype=torch.int64))], batch,
                                       estimator="becker-lecun", clamp=None)
    w1, b1, w2 = model[0].weight.detach(), model[0].bias.detach(), model[2].weight.detach()
    a = x @ w1.T + b1
    r = a.clamp(min=0)
    p = torch.softmax(model(x).detach(), 1)
    d_z = p * (1 - p)                                  # [B, 2]
    d_a = (d_z @ (w2 * w2)) * (a > 0)                  # [B, 3]
    expected = {"0.weight": d_a.T @ (x * x), "0.bias": d_a.sum(0), "2.weight": d_z.T @ (r * r),
                "2.bias": d_z.sum(0)}
    for name, value in expected.items():
        torch.testing.assert_close(ours[name], value / batch)


def test_becker_lecun_ranks_resnet32_like_the_exact_diagonal():
    from scipy.stats import spearmanr

    torch.manual_seed(0)
    model = models.build("resnet32")
    splits = data.synthetic("cifar10", 256, 16)
    x, y = splits["train"].normalize(splits["train"].images[:48]), splits["train"].labels[:48]
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model.train()(splits["train"].normalize(splits["train"].images))  # running statistics of the data
    ours = importance.hessian_diagonal(model, [(x, y)], 48, estimator="becker-lecun", clamp=None)
    exact = importance.hessian_diagonal(model, [(x, y)], 48, estimator="ggn", clamp=None)
    flat = lambda h: torch.cat([v.flatten() for v in h.values()]).numpy()  # noqa: E731
    assert spearmanr(flat(ours), flat(exact)).statistic > 0.6
    torch.testing.assert_close(ours["fc.weight"], exact["fc.weight"], rtol=1e-4, atol=1e-9)


def test_becker_lecun_refuses_smooth_nonlinearities():
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="smooth nonlinearity.*ggn"):
        importance.hessian_diagonal(model, [(torch.randn(5, 4), torch.zeros(5, dtype=torch.int64))], 5,
                                    estimator="becker-lecun")
