"""``image-crops``: natural-image crops for an ImageNet network, from photos that packages ship.

There is no ImageNet here, and no labels: a pretrained classifier such as MobileNetV2 is judged
by how closely a compressed copy follows the dense network on natural images (top-1 agreement,
top-5 overlap, KL divergence), and retrained by distillation on them. The photos are the ones
installed packages ship: matplotlib's ``grace_hopper.jpg`` and the photographs inside the
scikit-image wheel (``skimage/data``; only files in the wheel, none of the ones skimage downloads
on demand). scikit-image is installed ``--no-deps`` and never imported: its files are read
with Pillow.

Each split draws its crops from its **own photos** (:data:`PHOTOS` assigns every photo to one
split), so a test crop never shows a scene that training saw: crops of one photo overlap, and
agreement measured on crops of training photos would be inflated. The stereo pair
``motorcycle_left/right`` is one scene, so only one of it is used.

Crops are ``RandomResizedCrop``-style: an area of 25–100 % of the photo, aspect ratio in
[3/4, 4/3] (log-uniform), a horizontal flip half of the time, resized to ``size``×``size`` with
Pillow's bilinear filter (antialiased when shrinking). Grey photos are repeated over the three
channels. Crop ``i`` of a split is fully determined by ``(seed, split, i)`` (its own numpy
generator) and comes from photo ``i mod (photos in the split)``, so a larger split extends a
smaller one and every run gives the same bytes. Nothing is cached: crops are made when a split
is asked for, and only that split is held in memory (``sizes`` bounds it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from deepshrink.data.packaged import PackagedFile
from deepshrink.data.spec import InputSpec
from deepshrink.data.split import Split
from deepshrink.errors import ConfigError, DataError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_CROPS",
    "PHOTOS",
    "ImageCrops",
    "Photo",
    "center_crop",
    "imagenet_spec",
    "load_photo",
]

IMAGE_CROPS = "image-crops"
SPLITS = ("train", "val", "test")
#: ImageNet's per-channel mean and std of RGB values in [0, 1] (torchvision's normalisation).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZES: Mapping[str, int] = {"train": 1536, "val": 256, "test": 512}
DEFAULT_SIZE = 224
#: Crop area as a fraction of the photo, and aspect-ratio range (torchvision's RandomResizedCrop,
#: with the smallest area raised from 8 % to 25 %: the photos are few, and tiny crops of them
#: are mostly texture).
AREA = (0.25, 1.0)
RATIO = (3 / 4, 4 / 3)
MAX_CROPS = 100_000  # per split; 224×224×3 bytes each, ~15 GB at this bound


@dataclass(frozen=True)
class Photo:
    """A photo a package ships, and the one split its crops go to."""

    name: str
    file: PackagedFile
    split: str


def _skimage(name: str, split: str) -> Photo:
    return Photo(name, PackagedFile("scikit-image", "skimage", f"data/{name}"), split)


#: Every photo and its split: 10 for training, 3 for validation, 4 for testing; colour and grey,
#: people, animals, objects, scenes, textures and microscopy in each split where the few photos
#: allow.
PHOTOS: tuple[Photo, ...] = (
    Photo("grace_hopper.jpg", PackagedFile("matplotlib", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"), "train"),
    _skimage("astronaut.png", "train"),
    _skimage("rocket.jpg", "train"),
    _skimage("hubble_deep_field.jpg", "train"),
    _skimage("retina.jpg", "train"),
    _skimage("brick.png", "train"),
    _skimage("grass.png", "train"),
    _skimage("moon.png", "train"),
    _skimage("clock_motion.png", "train"),
    _skimage("cell.png", "train"),
    _skimage("motorcycle_left.png", "val"),
    _skimage("ihc.png", "val"),
    _skimage("coins.png", "val"),
    _skimage("chelsea.png", "test"),
    _skimage("coffee.png", "test"),
    _skimage("camera.png", "test"),
    _skimage("gravel.png", "test"),
)


def imagenet_spec(size: int = DEFAULT_SIZE) -> InputSpec:
    """uint8 RGB ``(3, size, size)`` images, scaled to [0, 1] and normalised with ImageNet's statistics."""
    return InputSpec(shape=(3, size, size), dtype="uint8", scale=1 / 255, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def load_photo(photo: Photo) -> Image.Image:
    """The photo as an RGB Pillow image (grey repeated over the channels)."""
    path = photo.file.locate()
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read the photo {photo.name} ({exc}); reinstall {photo.file.distribution}") from None


def random_resized_crop(image: Image.Image, size: int, rng: np.random.Generator) -> np.ndarray:
    """One crop as uint8 ``(3, size, size)``: area and aspect drawn from :data:`AREA` and
    :data:`RATIO` (ten tries, then the largest centred square), flipped with probability 1/2."""
    width, height = image.size
    box = None
    for _ in range(10):
        area = width * height * rng.uniform(*AREA)
        ratio = math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
        w, h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            box = (left, top, left + w, top + h)
            break
    if box is None:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        box = (left, top, left + side, top + side)
    crop = image.resize((size, size), Image.BILINEAR, box=box)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(crop, dtype=np.uint8).transpose(2, 0, 1)


def center_crop(image: Image.Image, size: int = DEFAULT_SIZE, resize: int = 256) -> np.ndarray:
    """ImageNet's evaluation view of a photo as uint8 ``(3, size, size)``: the shorter side
    resized to ``resize`` (bilinear, antialiased), then the central ``size``×``size`` square, as
    torchvision's ``ImageClassification`` transform does for MobileNetV2."""
    image = image.convert("RGB")
    width, height = image.size
    factor = resize / min(width, height)
    image = image.resize((round(width * factor), round(height * factor)), Image.BILINEAR)
    left, top = (image.size[0] - size) // 2, (image.size[1] - size) // 2
    crop = image.crop((left, top, left + size, top + size))
    return np.asarray(crop, dtype=np.uint8).transpose(2, 0, 1)


class ImageCrops:
    """Unlabelled crops of packaged photos, split by photo (see the module docstring).

    ``sizes`` gives the crops per split (default :data:`DEFAULT_SIZES`), ``size`` the side of a
    crop, ``seed`` the crops drawn. :meth:`split` returns preprocessed float32 inputs with
    ``target=None``; :meth:`raw` the uint8 crops.
    """

    name = IMAGE_CROPS

    def __init__(self, sizes: Mapping[str, int] | None = None, *, size: int = DEFAULT_SIZE, seed: int = 0,
                 photos: tuple[Photo, ...] = PHOTOS):
        sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
        if set(sizes) != set(SPLITS):
            raise ConfigError(f"ImageCrops sizes must give exactly the splits {list(SPLITS)}, got {sorted(sizes)}")
        for split, n in sizes.items():
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_CROPS:
                raise ConfigError(f"ImageCrops sizes[{split!r}] must be an int in 0..{MAX_CROPS:,}, got {n!r}")
        if isinstance(size, bool) or not isinstance(size, int) or not 32 <= size <= 1024:
            raise ConfigError(f"ImageCrops size must be an int in 32..1024 pixels, got {size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ConfigError(f"ImageCrops seed must be an int in 0..2**63-1, got {seed!r}")
        for split in SPLITS:
            if sizes[split] and not any(p.split == split for p in photos):
                raise ConfigError(f"ImageCrops: no photo is assigned to the {split!r} split")
        self.sizes = sizes
        self.size = size
        self.seed = seed
        self.photos = tuple(photos)
        self.input_spec = imagenet_spec(size)

    def __repr__(self) -> str:
        return f"ImageCrops(sizes={self.sizes}, size={self.size}, seed={self.seed}, photos={len(self.photos)})"

    def split_sizes(self) -> dict[str, int]:
        return dict(self.sizes)

    def split_photos(self, split: str) -> tuple[Photo, ...]:
        """The photos whose crops make up ``split``."""
        _check_split(split)
        return tuple(p for p in self.photos if p.split == split)

    def raw(self, split: str) -> np.ndarray:
        """The split's crops as uint8 ``(N, 3, size, size)``; crop ``i`` comes from photo ``i mod k``."""
        photos = self.split_photos(split)
        n = self.sizes[split]
        out = np.empty((n, 3, self.size, self.size), dtype=np.uint8)
        images = [load_photo(p) for p in photos] if n else []
        k = SPLITS.index(split)
        for i in range(n):
            rng = np.random.default_rng([self.seed, k, i])
            out[i] = random_resized_crop(images[i % len(images)], self.size, rng)
        return out

    def split(self, split: str) -> Split:
        """The split's crops, preprocessed by :attr:`input_spec`; no target (no labels)."""
        return Split((self.input_spec.apply(torch.from_numpy(self.raw(split))),), None)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
