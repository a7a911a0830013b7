import pytest
import torch

from netquant import models


@pytest.mark.parametrize("arch, count", [("lenet5", 431_080), ("resnet32", 464_154), ("alexnet", 61_100_840)])
def test_parameter_counts_match_the_paper(arch, count):
    assert models.count_parameters(models.build(arch)) == count


def test_resnet32_layout():
    model = models.build("resnet32")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 31  # + 1 fc = 32 weighted layers; option-A shortcuts have no parameters
    bn = sum(p.numel() for n, p in model.named_parameters() if ".bn" in n or n.startswith("bn"))
    assert bn == 2_272


@pytest.mark.parametrize("arch, shape", [("lenet5", (2, 1, 28, 28)), ("resnet32", (2, 3, 32, 32)),
                                         ("alexnet", (2, 3, 64, 64))])
def test_forward_shapes(arch, shape):
    out = models.build(arch, num_classes=7).eval()(torch.zeros(shape))
    assert out.shape == (2, 7)


def test_unknown_architecture_is_named():
    with pytest.raises(ValueError, match="vgg16"):
        models.build("vgg16")


def test_missing_alexnet_weights_name_the_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="alexnet.pretrained"):
        models.build("alexnet", pretrained=str(tmp_path / "missing.pth"))


def test_a_pretrained_checkpoint_or_state_dict_is_loaded(tmp_path):
    import pytest
    import torch

    from netquant.checkpoint import Checkpoint, save_checkpoint

    torch.manual_seed(1)
    trained = models.build("resnet32")
    save_checkpoint(tmp_path / "model.pt", Checkpoint("resnet32", trained.state_dict()))
    torch.save(trained.state_dict(), tmp_path / "state.pt")
    for path in ("model.pt", "state.pt"):
        loaded = models.build("resnet32", pretrained=str(tmp_path / path))
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), trained.state_dict().values()))
    with pytest.raises(ValueError, match="not lenet5"):
        models.build("lenet5", pretrained=str(tmp_path / "model.pt"))
    with pytest.raises(FileNotFoundError, match="resnet32.pretrained"):
        models.build("resnet32", pretrained=str(tmp_path / "missing.pt"))
