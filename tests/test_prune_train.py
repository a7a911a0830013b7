import pytest
import torch
from hypothesis import given, settings, strategies as st

from netquant import data, models, prune, train
from netquant.checkpoint import Checkpoint, load_checkpoint, save_checkpoint


@given(st.floats(0.0, 0.99), st.integers(1, 6))
def test_schedule_is_increasing_and_ends_at_target(target, steps):
    s = prune.sparsity_schedule(target, steps)
    assert len(s) == steps and abs(s[-1] - target) < 1e-12
    assert all(a <= b + 1e-12 for a, b in zip(s, s[1:]))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.0, 0.95), st.sampled_from(["global", "layer"]))
def test_magnitude_masks_prune_exactly_and_keep_the_largest(seed, sparsity, scope):
    g = torch.Generator().manual_seed(seed)
    tensors = {"a": torch.randn(7, 5, generator=g), "b": torch.randn(40, generator=g) * 3}
    masks = prune.magnitude_masks(tensors, sparsity, scope=scope)
    if scope == "global":
        total = sum(t.numel() for t in tensors.values())
        assert sum(int((~m).sum()) for m in masks.values()) == round(sparsity * total)
        kept = torch.cat([t[m].abs() for t, m in zip(tensors.values(), masks.values())])
        dropped = torch.cat([t[~m].abs() for t, m in zip(tensors.values(), masks.values())])
        if kept.numel() and dropped.numel():
            assert kept.min() >= dropped.max()
    else:
        for name, t in tensors.items():
            assert int((~masks[name]).sum()) == round(sparsity * t.numel())


def test_prunable_names_are_conv_and_fc_weights():
    assert prune.prunable_names(models.build("lenet5")) == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]


def _tiny_data(n=256):
    return data.synthetic("mnist", n, 64, seed=1)


def test_masks_survive_retraining_and_loss_decreases():
    splits = _tiny_data()
    torch.manual_seed(0)
    model = models.build("lenet5")
    params = dict(model.named_parameters())
    masks = prune.magnitude_masks({n: params[n] for n in prune.prunable_names(model)}, 0.9)
    recipe = train.Recipe(lr=0.01, batch_size=32, iterations=24, weight_decay=5e-4, lr_policy="inv", gamma=1e-4)
    g = torch.Generator().manual_seed(0)
    history = train.train(model, lambda e: data.batches(splits["train"], 32, shuffle=True, generator=g), 256, recipe,
                          masks=masks)
    for name, mask in masks.items():
        assert torch.all(params[name][~mask] == 0), name
        assert torch.count_nonzero(params[name][mask]) > 0.9 * mask.sum()
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_training_is_deterministic():
    splits = _tiny_data(128)
    states = []
    for _ in range(2):
        torch.manual_seed(3)
        model = models.build("lenet5")
        g = torch.Generator().manual_seed(3)
        recipe = train.Recipe(lr=0.01, batch_size=32, iterations=5, augment="shift")
        train.train(model, lambda e: data.batches(splits["train"], 32, shuffle=True, generator=g, augment="shift"),
                    128, recipe)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_recipe_rejects_two_lengths_and_unknown_keys():
    import pytest

    with pytest.raises(ValueError, match="exactly one"):
        train.Recipe(lr=0.1, batch_size=8, iterations=3, epochs=1)
    with pytest.raises(ValueError, match="momentun"):
        train.Recipe.from_config({"lr": 0.1, "batch_size": 8, "iterations": 3, "momentun": 0.9})


def test_lr_policies():
    inv = train.Recipe(lr=0.01, batch_size=1, iterations=10, lr_policy="inv", gamma=1e-4, power=0.75)
    assert abs(inv.lr_factor(10000, 10000) - (1 + 1.0) ** -0.75) < 1e-12
    step = train.Recipe(lr=0.1, batch_size=1, iterations=100, lr_policy="multistep", milestones=[0.5, 0.75])
    assert [step.lr_factor(i, 100) for i in (0, 49, 50, 75)] == [1.0, 1.0, 0.1, 0.1 ** 2]


def test_checkpoint_round_trip_and_foreign_file(tmp_path):
    import pytest

    model = models.build("lenet5")
    masks = {"fc1.weight": torch.rand(500, 800) > 0.5}
    save_checkpoint(tmp_path / "m.pt", Checkpoint("lenet5", model.state_dict(), masks, {"accuracy": 1.0}))
    ck = load_checkpoint(tmp_path / "m.pt")
    assert ck.arch == "lenet5" and torch.equal(ck.masks["fc1.weight"], masks["fc1.weight"])
    assert all(torch.equal(ck.state_dict[k], v) for k, v in model.state_dict().items())
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a netquant checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    assert not list(tmp_path.glob("*.tmp"))


class _Stop(Exception):
    pass


def _resumable_run(tmp_path, stop_after=None, masks=None):
    """Train LeNet-5 on tiny data for 3 epochs with a resume file; optionally die after an epoch."""
    from netquant.steps import epoch_generator

    splits = _tiny_data()
    torch.manual_seed(0)
    model = models.build("lenet5")
    recipe = train.Recipe(lr=0.05, batch_size=32, epochs=3, lr_policy="cosine", warmup=0.1, nesterov=True,
                          augment="shift", weight_decay=1e-4)

    def on_epoch(row):
        if stop_after is not None and row["epoch"] == stop_after:
            raise _Stop

    history = train.train(model, lambda e: data.batches(splits["train"], 32, shuffle=True,
                                                        generator=epoch_generator(7, e), augment="shift"),
                          len(splits["train"]), recipe, masks=masks, on_epoch=on_epoch,
                          resume_path=tmp_path / "model.pt.resume", resume_key="k")
    return model, history


def test_a_killed_training_resumes_to_the_same_weights(tmp_path):
    masks = prune.magnitude_masks({"fc1.weight": models.build("lenet5").fc1.weight}, 0.5)
    whole, whole_history = _resumable_run(tmp_path / "whole", masks=masks)
    for stop in (1, 2):
        try:
            _resumable_run(tmp_path / "killed", stop_after=stop, masks=masks)
        except _Stop:
            pass
    resumed, history = _resumable_run(tmp_path / "killed", masks=masks)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in whole_history]
    assert bool((resumed.fc1.weight[~masks["fc1.weight"]] == 0).all())


def test_a_resume_file_of_other_settings_is_not_used(tmp_path):
    _resumable_run(tmp_path)
    splits = _tiny_data()
    model = models.build("lenet5")
    recipe = train.Recipe(lr=0.05, batch_size=32, epochs=1)
    history = train.train(model, lambda e: data.batches(splits["train"], 32), len(splits["train"]), recipe,
                          resume_path=tmp_path / "model.pt.resume", resume_key="other")
    assert len(history) == 1 and history[0]["epoch"] == 1


def test_warmup_ramps_then_cosine_decays():
    recipe = train.Recipe(lr=1.0, batch_size=1, iterations=100, lr_policy="cosine", warmup=0.1)
    factors = [recipe.lr_factor(it, 100) for it in range(100)]
    assert factors[0] == 0.1 / 1.0 and abs(factors[9] - 1.0) < 1e-12
    assert all(a >= b for a, b in zip(factors[9:], factors[10:])) and factors[-1] < 0.01


def test_bf16_training_keeps_float32_weights_and_learns():
    splits = _tiny_data(512)
    torch.manual_seed(0)
    model = models.build("lenet5")
    recipe = train.Recipe(lr=0.05, batch_size=32, epochs=2, precision="bf16", momentum=0.9)
    train.train(model, lambda e: data.batches(splits["train"], 32, shuffle=True,
                                              generator=torch.Generator().manual_seed(e)),
                len(splits["train"]), recipe)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert train.evaluate(model, data.batches(splits["test"], 64))["accuracy"] > 50


def test_a_fraction_of_all_parameters_prunes_the_prunable_ones_to_match():
    model = models.build("lenet5")
    names = prune.prunable_names(model)
    n_all = models.count_parameters(model)
    n_prunable = sum(dict(model.named_parameters())[n].numel() for n in names)
    sparsity = prune.prunable_sparsity(0.9145, "all", n_all, n_prunable)
    kept = (1 - sparsity) * n_prunable + (n_all - n_prunable)
    assert abs(kept / n_all - 0.0855) < 1e-12 and sparsity > 0.9145
    assert prune.prunable_sparsity(0.8, "prunable", n_all, n_prunable) == 0.8


def test_the_last_stage_retrains_longest_and_a_pruned_checkpoint_is_a_starting_point(tmp_path):
    import csv

    from netquant import steps

    torch.set_num_threads(1)
    data.save_prepared(tmp_path / "d.pt", data.synthetic("mnist", 256, 64, seed=0))
    source = {"dataset": "synthetic-mnist", "prepared": str(tmp_path / "d.pt")}
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "base.pt", Checkpoint("lenet5", models.build("lenet5").state_dict(), {}, {}))
    retrain = {"lr": 0.01, "batch_size": 64, "epochs": 1, "iterations": None}
    cfg = {"prune": {"sparsity": 0.8, "steps": 2, "final_epochs": 3, "retrain": retrain}}
    out = {name: str(tmp_path / "a" / name) for name in ("model.pt", "metrics.json", "epochs.csv")}
    first = steps.prune_network("lenet5", cfg, baseline=str(tmp_path / "base.pt"), source=source, seed=0,
                                device="cpu", out_model=out["model.pt"], out_metrics=out["metrics.json"],
                                out_epochs=out["epochs.csv"])
    stages = [row["stage"] for row in csv.DictReader(open(out["epochs.csv"]))]
    assert stages == ["1", "2", "2", "2"]  # one epoch after the first stage, three after the last
    again = {name: str(tmp_path / "b" / name) for name in out}
    cfg["prune"]["pretrained"] = out["model.pt"]
    second = steps.prune_network("lenet5", cfg, baseline=str(tmp_path / "base.pt"), source=source, seed=0,
                                 device="cpu", out_model=again["model.pt"], out_metrics=again["metrics.json"],
                                 out_epochs=again["epochs.csv"])
    assert second["accuracy"] == first["accuracy"] and second["nonzeros"] == first["nonzeros"]
    loaded = load_checkpoint(again["model.pt"])
    for name, mask in load_checkpoint(out["model.pt"]).masks.items():
        assert torch.equal(loaded.masks[name], mask)
    # the same network as a .nqz file of its 32-bit values (a fifth of the size) starts a run the same way
    from netquant import container
    from netquant.qmodel import from_pruned

    pruned = load_checkpoint(out["model.pt"])
    container.save(tmp_path / "pruned.nqz", from_pruned(pruned.state_dict, pruned.masks, network={"arch": "lenet5"}),
                   label_code="raw", index_code="mask-context")
    cfg["prune"]["pretrained"] = str(tmp_path / "pruned.nqz")
    third = steps.prune_network("lenet5", cfg, baseline=str(tmp_path / "base.pt"), source=source, seed=0,
                                device="cpu", out_model=str(tmp_path / "e.pt"), out_metrics=str(tmp_path / "e.json"),
                                out_epochs=str(tmp_path / "e.csv"))
    from_file = load_checkpoint(tmp_path / "e.pt")
    assert third["accuracy"] == first["accuracy"]
    for name, value in pruned.state_dict.items():
        assert torch.equal(from_file.state_dict[name], value), name
    for name, mask in pruned.masks.items():
        assert torch.equal(from_file.masks[name], mask), name
    cfg["prune"]["pretrained"] = str(tmp_path / "base.pt")  # no masks: not a pruned network
    with pytest.raises(ValueError, match="prune.pretrained"):
        steps.prune_network("lenet5", cfg, baseline=str(tmp_path / "base.pt"), source=source, seed=0, device="cpu",
                            out_model=str(tmp_path / "c.pt"), out_metrics=str(tmp_path / "c.json"),
                            out_epochs=str(tmp_path / "c.csv"))
