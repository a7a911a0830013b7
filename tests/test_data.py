import gzip
import pickle
import shutil

import numpy as np
import pytest
import torch

from netquant import data


def test_synthetic_is_deterministic_and_shaped():
    a = data.synthetic("cifar10", 100, 20, seed=5)
    b = data.synthetic("cifar10", 100, 20, seed=5)
    assert a["train"].images.shape == (100, 3, 32, 32) and a["train"].images.dtype == torch.uint8
    assert torch.equal(a["train"].images, b["train"].images) and torch.equal(a["test"].labels, b["test"].labels)
    assert data.synthetic("mnist", 30, 10)["train"].images.shape == (30, 1, 28, 28)


def test_batches_normalise_and_augment_keep_shapes():
    d = data.synthetic("cifar10", 50, 10)["train"]
    g = torch.Generator().manual_seed(0)
    xs = [x for x, _ in data.batches(d, 16, shuffle=True, generator=g, augment="crop-flip")]
    assert [x.shape[0] for x in xs] == [16, 16, 16, 2] and xs[0].dtype == torch.float32
    plain = torch.cat([x for x, _ in data.batches(d, 50)])
    assert abs(float(plain.mean())) < 3 and torch.allclose(plain, d.normalize(d.images))


def test_random_crop_is_a_shift_of_the_image():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6)
    g = torch.Generator().manual_seed(1)
    out = data.random_crop(x, 2, g)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        assert any(torch.equal(out[i, 0], padded[i, 0, dy:dy + 6, dx:dx + 6]) for dy in range(5) for dx in range(5))


def test_missing_files_name_files_and_config_key(tmp_path):
    with pytest.raises(data.DataError, match="data_root") as err:
        data.prepare("mnist", tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(err.value)
    with pytest.raises(data.DataError, match="cifar-10-batches-py"):
        data.prepare("cifar10", tmp_path)


def _write_cifar(root, n_train=50000, n_test=10000, garbage=False):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", n_train // 5) for i in range(1, 6)] + [("test_batch", n_test)]:
        labels = (np.arange(n) % 10).tolist() if not garbage else [0] * n
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": labels}, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f, protocol=2)


def test_cifar_with_other_bytes_is_checked_and_warned(tmp_path):
    _write_cifar(tmp_path)
    with pytest.warns(UserWarning, match="official md5"):
        splits = data.prepare("cifar10", tmp_path)
    assert splits["train"].images.shape == (50000, 3, 32, 32) and len(splits["test"]) == 10000


def test_cifar_garbage_is_refused(tmp_path):
    _write_cifar(tmp_path, n_train=5000, n_test=1000, garbage=True)
    with pytest.raises(data.DataError, match=r"expected \(50000, 3, 32, 32\)"):
        data.prepare("cifar10", tmp_path)


def test_one_class_labels_are_refused():
    images = torch.randint(0, 256, (100, 3, 4, 4), dtype=torch.uint8)
    split = data.ImageTensors(images, torch.zeros(100, dtype=torch.int64), (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(data.DataError, match="class counts"):
        data._check_counts("cifar10", {"train": split, "test": split}, 100, 100, (3, 4, 4))


def test_mnist_with_wrong_bytes_is_refused(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.MNIST_FILES:
        (raw / name).write_bytes(gzip.compress(b"not mnist"))
    with pytest.raises(data.DataError, match="md5"):
        data.prepare("mnist", tmp_path)


def test_imagenet_folder_layout_is_read(tmp_path):
    data.make_synthetic_imagenet(tmp_path, classes=3, train_per_class=2, val_per_class=2, size=40)
    source = data.open_source("synthetic-imagenet", imagenet_root=str(tmp_path), image_size=32, resize=36)
    assert source.num_classes == 3 and source.samples_per_epoch == 6
    x, y = next(iter(source.test_batches(4)))
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.int64
    shutil.rmtree(tmp_path / "val")
    with pytest.raises(data.DataError, match="imagenet_root"):
        data.open_source("imagenet", imagenet_root=str(tmp_path))


def test_a_crafted_cifar_batch_cannot_run_code(tmp_path):
    import os
    import pickle
    import shutil

    import pytest

    from netquant.data import DataError, prepare

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name in data.CIFAR_FILES:
        (folder / name).write_bytes(pickle.dumps({"data": Exploit(), "labels": [0]}))
    with pytest.raises(DataError, match="refused.*posix.system|refused.*os.system|refused"):
        prepare("cifar10", tmp_path)
    assert not marker.exists()
    shutil.rmtree(folder)


def test_a_foreign_prepared_file_is_one_clear_error(tmp_path):
    import pytest

    (tmp_path / "mnist.pt").write_bytes(b"not a torch file")
    with pytest.raises(data.DataError, match="not a prepared dataset"):
        data.load_prepared(tmp_path / "mnist.pt")
