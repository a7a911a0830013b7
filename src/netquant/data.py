"""Datasets as fast in-memory tensors (MNIST, CIFAR-10, synthetic) and streamed ImageNet folders.

Small datasets are prepared once into ``ImageTensors`` (uint8 images [N, C, H, W] + int64 labels) and saved
under ``resources/``; batches are normalised (and augmented) on the fly, on whole batches at once.
ImageNet (torchvision's ImageFolder layout, ``train/<class>/*`` and ``val/<class>/*``) is streamed from disk.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from netquant.io import atomic_path
from netquant.vocabulary import DATASET_SPLITS, FOLDER_DATASETS

STATS = {  # per-channel mean and std of the training images, on the 0..1 scale
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

MNIST_FILES = {  # torchvision's md5 sums of the original files
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
CIFAR_FILES = {  # torchvision's md5 sums of the original pickles
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}


class DataError(RuntimeError):
    """A dataset is missing or does not look like the dataset it claims to be."""


@dataclass
class ImageTensors:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] -> float32, scaled to 0..1 and standardised per channel."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (images.float() / 255.0 - mean) / std

    def subset(self, index: torch.Tensor) -> "ImageTensors":
        return ImageTensors(self.images[index], self.labels[index], self.mean, self.std)

    def to_dict(self) -> dict:
        return {"images": self.images, "labels": self.labels, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "ImageTensors":
        return cls(d["images"], d["labels"], tuple(d["mean"]), tuple(d["std"]))


def batches(data: ImageTensors, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
            augment: str = "none", drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over ``data`` in batches of normalised float32 inputs and int64 targets.

    ``augment``: "none"; "crop-flip" (CIFAR: 4-pixel zero-padded random crop + horizontal flip);
    "shift" (MNIST: random translation by up to 2 pixels). Random choices come from ``generator``.
    """
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        x = data.images[idx]
        if augment == "crop-flip":
            x = random_crop(x, 4, generator)
            flip = torch.rand(len(idx), generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        elif augment == "shift":
            x = random_crop(x, 2, generator)
        elif augment != "none":
            raise ValueError(f"unknown augmentation {augment!r}; expected none, crop-flip or shift")
        yield data.normalize(x), data.labels[idx]


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """Zero-pad [B, C, H, W] by ``pad`` and crop back to H x W at a random offset per image."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # [B, 1, H, 1]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # [B, 1, 1, W]
    batch = torch.arange(b)[:, None, None, None]
    chans = torch.arange(x.shape[1])[None, :, None, None]
    return padded[batch, chans, rows, cols]


# ----------------------------------------------------------------------------------------------- preparing

def prepare(dataset: str, root: str | os.PathLike, *, download: bool = False,
            synthetic_sizes: tuple[int, int] = (2048, 512), seed: int = 0) -> dict[str, ImageTensors]:
    """Read a dataset into memory: ``{"train": ImageTensors, "test": ImageTensors}``.

    ``root`` is the config key ``data_root`` (torchvision's layout: ``MNIST/raw/*.gz``,
    ``cifar-10-batches-py/*``). With ``download`` torchvision fetches missing files into ``root``.
    """
    if dataset == "mnist":
        return _prepare_mnist(Path(root), download)
    if dataset == "cifar10":
        return _prepare_cifar10(Path(root), download)
    if dataset.startswith("synthetic-"):
        return synthetic(dataset.removeprefix("synthetic-"), *synthetic_sizes, seed=seed)
    raise ValueError(f"cannot prepare {dataset!r} into memory; expected one of mnist, cifar10, synthetic-mnist, "
                     "synthetic-cifar10 (imagenet is streamed with imagenet_loader)")


def save_prepared(path: str | os.PathLike, splits: dict[str, ImageTensors]) -> None:
    with atomic_path(path) as tmp:
        torch.save({name: d.to_dict() for name, d in splits.items()}, tmp)


def load_prepared(path: str | os.PathLike) -> dict[str, ImageTensors]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return {name: ImageTensors.from_dict(d) for name, d in payload.items()}
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise DataError(f"{path} is not a prepared dataset written by netquant.data.save_prepared ({exc}); "
                        "delete it and let the workflow prepare it again") from exc


def _missing(root: Path, folder: str, names, download: bool, dataset: str) -> list[Path]:
    missing = [root / folder / n for n in names if not (root / folder / n).exists()]
    if missing and not download:
        listing = "\n  ".join(str(p) for p in missing)
        raise DataError(
            f"{dataset}: missing files under data_root={root}:\n  {listing}\n"
            f"Set the config key 'data_root' to the folder that holds '{folder.split('/')[0]}/', "
            "or set 'download: true' to let torchvision fetch them (needs internet)."
        )
    return missing


def _download(fetch, missing: list[Path], dataset: str) -> None:
    try:
        fetch()
    except Exception as exc:  # noqa: BLE001 - any failed download is the same user error
        listing = "\n  ".join(str(p) for p in missing)
        raise DataError(f"{dataset}: could not download the missing files\n  {listing}\n({exc}). Without "
                        "internet, copy them there or set the config key 'data_root' to a folder that has them") from exc


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _prepare_mnist(root: Path, download: bool) -> dict[str, ImageTensors]:
    from torchvision.datasets import mnist

    missing = _missing(root, "MNIST/raw", MNIST_FILES, download, "mnist")
    if missing:
        _download(lambda: mnist.MNIST(str(root), train=True, download=True), missing, "mnist")
    raw = root / "MNIST" / "raw"
    for name, md5 in MNIST_FILES.items():
        if _md5(raw / name) != md5:
            raise DataError(f"mnist: {raw / name} does not match torchvision's md5 {md5}; "
                            "the file is damaged or not MNIST - replace it (config key 'data_root')")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for split, prefix in (("train", "train"), ("test", "t10k")):
            tensors = []
            for kind in ("images-idx3", "labels-idx1"):
                plain = Path(tmp) / f"{prefix}-{kind}-ubyte"
                plain.write_bytes(gzip.decompress((raw / f"{prefix}-{kind}-ubyte.gz").read_bytes()))
                tensors.append(mnist.read_sn3_pascalvincent_tensor(str(plain), strict=True))
            images, labels = tensors
            out[split] = ImageTensors(images.unsqueeze(1).contiguous(), labels.long(), *STATS["mnist"])
    _check_counts("mnist", out, *DATASET_SPLITS["mnist"])
    return out


def _prepare_cifar10(root: Path, download: bool) -> dict[str, ImageTensors]:
    from torchvision.datasets import CIFAR10

    missing = _missing(root, "cifar-10-batches-py", CIFAR_FILES, download, "cifar10")
    if missing:
        _download(lambda: CIFAR10(str(root), train=True, download=True), missing, "cifar10")
    folder = root / "cifar-10-batches-py"
    differing = [n for n, md5 in CIFAR_FILES.items() if _md5(folder / n) != md5]
    out = {}
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        images, labels = [], []
        for name in names:
            try:
                with open(folder / name, "rb") as f:
                    entry = _CifarUnpickler(f, encoding="latin1").load()
                if not isinstance(entry, dict):
                    raise DataError(f"cifar10: {folder / name} holds a {type(entry).__name__}, not a CIFAR-10 "
                                    "batch (a dict); replace it (config key 'data_root')")
                images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
            except DataError:
                raise
            except Exception as exc:  # noqa: BLE001 - any unreadable batch is the same user error
                raise DataError(f"cifar10: {folder / name} is not a CIFAR-10 python batch ({exc}); "
                                "replace it (config key 'data_root')") from exc
        out[split] = ImageTensors(torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64),
                                  *STATS["cifar10"])
    _check_counts("cifar10", out, *DATASET_SPLITS["cifar10"])
    if differing:
        warnings.warn(f"cifar10: {', '.join(differing)} differ from the official md5 sums; the contents passed the "
                      "shape, count and label checks (50,000/10,000 images, 10 balanced classes) and are used",
                      stacklevel=2)
    return out


class _CifarUnpickler(pickle.Unpickler):
    """Reads CIFAR-10's python batches without running code: a pickle can name any function to call, and
    a batch only ever names numpy's array reconstruction. Anything else is refused before it is called."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.numeric", "_frombuffer"),
               ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise DataError(f"cifar10: refused to read a batch that asks for {module}.{name}: CIFAR-10 batches hold "
                            "only dicts, lists, strings, numbers and numpy arrays, so this file is not one (it could "
                            "run code); replace it with the original (config key 'data_root')")
        return super().find_class(module, name)


def _check_counts(dataset: str, splits: dict[str, ImageTensors], n_train: int, n_test: int,
                  shape: tuple[int, int, int]) -> None:
    for split, n in (("train", n_train), ("test", n_test)):
        d = splits[split]
        problems = []
        if tuple(d.images.shape) != (n, *shape):
            problems.append(f"images have shape {tuple(d.images.shape)}, expected {(n, *shape)}")
        if d.labels.shape != (n,):
            problems.append(f"{d.labels.shape[0]} labels, expected {n}")
        elif d.labels.min() < 0 or d.labels.max() > 9:
            problems.append("labels outside 0..9")
        else:
            counts = torch.bincount(d.labels, minlength=10)
            if counts.min() < 0.08 * n:
                problems.append(f"class counts {counts.tolist()} are not those of {dataset}")
        if d.images.float().std() < 1.0:
            problems.append("images are constant")
        if problems:
            raise DataError(f"{dataset} {split}: {'; '.join(problems)} - the files are not {dataset} "
                            "(config key 'data_root')")


def synthetic(like: str, n_train: int, n_test: int, *, seed: int = 0) -> dict[str, ImageTensors]:
    """Deterministic stand-in with the shapes of MNIST or CIFAR-10: 10 classes, each a fixed random pattern
    plus per-image noise and a random shift (LeNet-5 reaches about 85% after 40 iterations)."""
    if like not in ("mnist", "cifar10"):
        raise ValueError(f"synthetic data imitates mnist or cifar10, not {like!r}")
    shape = (1, 28, 28) if like == "mnist" else (3, 32, 32)
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand((10, *shape), generator=g) * 255
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = torch.arange(n) % 10
        labels = labels[torch.randperm(n, generator=g)]
        images = templates[labels] * 0.8 + torch.rand((n, *shape), generator=g) * 50
        images = random_crop(images, 2, g).clamp(0, 255).to(torch.uint8)
        out[split] = ImageTensors(images, labels, *STATS[like])
    return out


# ----------------------------------------------------------------------------------------------- ImageNet

def imagenet_loader(root: str | os.PathLike, split: str, *, batch_size: int, augment: bool, shuffle: bool,
                    workers: int = 0, image_size: int = 224, resize: int = 256, seed: int = 0,
                    limit: int | None = None):
    """A streaming DataLoader over ``root/<split>/<class>/<image>`` (torchvision's ImageFolder layout).

    ``augment``: random resized crop + flip; otherwise resize ``resize`` and centre crop ``image_size``.
    ``limit`` takes a seeded random subset of that many images (e.g. for Hessian or smoke runs).
    """
    from torchvision import datasets, transforms

    folder = Path(root) / split
    if not folder.is_dir():
        raise DataError(f"imagenet: {folder} not found; set the config key 'imagenet_root' to a folder with "
                        "train/<class>/*.JPEG and val/<class>/*.JPEG (torchvision's ImageFolder layout)")
    mean, std = STATS["imagenet"]
    if augment:
        tf = [transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip()]
    else:
        tf = [transforms.Resize(resize), transforms.CenterCrop(image_size)]
    ds = datasets.ImageFolder(str(folder), transforms.Compose([*tf, transforms.ToTensor(),
                                                               transforms.Normalize(mean, std)]))
    g = torch.Generator().manual_seed(seed)
    if limit is not None and limit < len(ds):
        ds = torch.utils.data.Subset(ds, torch.randperm(len(ds), generator=g)[:limit].tolist())
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                                       generator=g, persistent_workers=False)


# ----------------------------------------------------------------------------------------------- sources

class TensorSource:
    """Training and test data held in memory (MNIST, CIFAR-10, synthetic) behind one interface."""

    def __init__(self, train: ImageTensors, test: ImageTensors) -> None:
        self.train, self.test = train, test

    @property
    def samples_per_epoch(self) -> int:
        return len(self.train)

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def input_shape(self) -> tuple[int, int]:
        """(channels, image side)."""
        return int(self.train.images.shape[1]), int(self.train.images.shape[-1])

    def train_epoch(self, batch_size: int, generator: torch.Generator, *, augment: str = "none"):
        """One shuffled pass; ``augment`` as in :func:`batches`."""
        return batches(self.train, batch_size, shuffle=True, generator=generator, augment=augment)

    topk = (1,)  # accuracies reported: top-1

    def test_batches(self, batch_size: int = 128):
        # small batches stay in the CPU's cache: ResNet-32 evaluates about 2x faster at 128 than at 1,000
        return batches(self.test, batch_size)

    def train_sample(self, n: int, batch_size: int, seed: int):
        """A seeded random subset of ``n`` training samples, unaugmented, in batches."""
        if n > len(self.train):
            raise ValueError(f"asked for {n} training samples, the data set has {len(self.train)}")
        idx = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(seed))[:n]
        return batches(self.train.subset(idx), batch_size)


class FolderSource:
    """ImageNet-style folders streamed from disk (``root/train``, ``root/val``)."""

    def __init__(self, root: str | os.PathLike, *, workers: int = 0, image_size: int = 224, resize: int = 256) -> None:
        from torchvision import datasets

        self.root, self.workers, self.image_size, self.resize = Path(root), workers, image_size, resize
        self._train = datasets.ImageFolder(str(self.root / "train")) if (self.root / "train").is_dir() else None
        if self._train is None or not (self.root / "val").is_dir():
            raise DataError(f"imagenet: {self.root} must hold train/<class>/* and val/<class>/* (torchvision's "
                            "ImageFolder layout); set the config key 'imagenet_root'")

    @property
    def samples_per_epoch(self) -> int:
        return len(self._train)

    @property
    def num_classes(self) -> int:
        return len(self._train.classes)

    @property
    def input_shape(self) -> tuple[int, int]:
        return 3, self.image_size

    def _loader(self, split, batch_size, *, augment, shuffle, seed=0, limit=None):
        return imagenet_loader(self.root, split, batch_size=batch_size, augment=augment, shuffle=shuffle,
                               workers=self.workers, image_size=self.image_size, resize=self.resize, seed=seed,
                               limit=limit)

    def train_epoch(self, batch_size: int, generator: torch.Generator, *, augment: str = "none"):
        """One shuffled pass; any ``augment`` other than "none" means ImageNet's crop + flip."""
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        return self._loader("train", batch_size, augment=augment != "none", shuffle=True, seed=seed)

    topk = (1, 5)  # ImageNet: top-1 and top-5

    def test_batches(self, batch_size: int = 100):
        return self._loader("val", batch_size, augment=False, shuffle=False)

    def train_sample(self, n: int, batch_size: int, seed: int):
        return self._loader("train", batch_size, augment=False, shuffle=False, seed=seed, limit=n)


def open_source(dataset: str, *, prepared: str | os.PathLike | None = None, imagenet_root: str | None = None,
                workers: int = 0, image_size: int = 224, resize: int = 256):
    """The data source of a network: a prepared tensor file, or an ImageNet folder."""
    if dataset in FOLDER_DATASETS:
        return FolderSource(imagenet_root, workers=workers, image_size=image_size, resize=resize)
    splits = load_prepared(prepared)
    return TensorSource(splits["train"], splits["test"])


def make_synthetic_imagenet(root: str | os.PathLike, *, classes: int = 4, train_per_class: int = 8,
                            val_per_class: int = 4, size: int = 80, seed: int = 0) -> None:
    """Write a tiny ImageNet-layout folder (``train/<class>/*.png``, ``val/<class>/*.png``) of noisy class
    patterns, to drive the AlexNet rules end to end without ImageNet."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    templates = torch.rand((classes, size, size, 3), generator=g) * 255
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = Path(root) / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = (templates[c] * 0.6 + torch.rand((size, size, 3), generator=g) * 100).clamp(0, 255)
                Image.fromarray(pixels.to(torch.uint8).numpy()).save(folder / f"{split}_{c}_{i}.png")
