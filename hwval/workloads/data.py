"""Image data sets for the training workload, as numpy arrays (torch is not needed here).

Three sources, chosen by ``--data``:

- ``synthetic`` (default): CIFAR-shaped (3x32x32, 10 classes), deterministic for a seed, and
  learnable: each class is a fixed pattern of two coloured gratings (its own orientations,
  frequencies and phases); each sample is its class pattern shifted by a few pixels, scaled in
  contrast, overlaid with an unrelated grating and buried in Gaussian noise, so a CNN climbs
  well above chance within a few epochs but does not reach 100 % in the first.
- a folder with one sub-folder per class (``DATA/<class>/<file>``), or with ``train/`` and
  ``test/`` (or ``val/``, ``eval/``) folders of those (``train/`` alone: ``--eval-fraction`` of it
  is held out); files are images read with Pillow
  (optional: ``pip install pillow``) or ``.npy`` arrays (H,W / H,W,C / C,H,W).
- an ``.npz`` file with ``x`` (N,H,W,C or N,C,H,W or N,H,W; uint8 or float) and ``y`` (N
  integer labels), and optionally ``x_eval``/``y_eval`` (or ``x_test``/``y_test``).

Everything ends as float32 N,C,H,W scaled to [0, 1] (uint8 / 255) and then standardised per
channel with the training split's mean and deviation. Every problem is a :class:`DataError`
whose message is one line naming the path and what was expected.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
EVAL_FOLDERS = ("test", "val", "eval")
MAX_CHANNELS = 4
MIN_IMAGE_SIZE = 8  # the vgg family halves the image three times


class DataError(ValueError):
    """A data set that cannot be used; the message names the path and what was expected."""


@dataclass
class Dataset:
    x_train: np.ndarray          # float32 N,C,H,W, standardised
    y_train: np.ndarray          # int64 N
    x_eval: np.ndarray
    y_eval: np.ndarray
    class_names: list[str]
    source: str                  # "synthetic" or the path
    notes: list[str] = field(default_factory=list)

    @property
    def classes(self) -> int:
        return len(self.class_names)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def describe(self) -> dict:
        return {"source": self.source, "classes": self.classes, "train_samples": int(len(self.y_train)),
                "eval_samples": int(len(self.y_eval)), "sample_shape": list(self.sample_shape)}


# ---------------------------------------------------------------- synthetic


def synthetic_patterns(classes: int, channels: int, size: int, seed: int) -> np.ndarray:
    """One pattern per class, float32 (classes, channels, size, size) in [-1, 1]."""
    rng = np.random.default_rng([seed, 0x5EED])
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    patterns = np.zeros((classes, channels, size, size), dtype=np.float64)
    for k in range(classes):
        for _ in range(2):
            angle = rng.uniform(0, np.pi)
            cycles = rng.uniform(1.0, 4.0)          # periods across the image
            phase = rng.uniform(0, 2 * np.pi)
            colour = rng.uniform(-1, 1, size=channels)
            wave = np.sin(2 * np.pi * cycles * (xx * np.cos(angle) + yy * np.sin(angle)) / size + phase)
            patterns[k] += colour[:, None, None] * wave
    patterns /= np.abs(patterns).max(axis=(1, 2, 3), keepdims=True)
    return patterns.astype(np.float32)


def synthetic_samples(patterns: np.ndarray, n: int, rng: np.random.Generator, noise: float = 1.6,
                      distractor: float = 1.0, max_shift: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy copies of the class patterns as uint8 images, with their labels.

    Each copy is shifted by up to ``max_shift`` pixels, scaled in contrast, overlaid with a random
    grating unrelated to the class (amplitude up to ``distractor``) and Gaussian noise of
    deviation ``noise`` (the patterns span [-1, 1]).
    """
    classes, channels, size, _ = patterns.shape
    y = rng.integers(0, classes, size=n)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(n, 2))
    contrast = rng.uniform(0.5, 1.2, size=n).astype(np.float32)
    x = np.empty((n, channels, size, size), dtype=np.float32)
    for i in range(n):
        x[i] = np.roll(patterns[y[i]], shift=tuple(shifts[i]), axis=(1, 2)) * contrast[i]
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    angle = rng.uniform(0, np.pi, size=(n, 1, 1))
    cycles = rng.uniform(1.0, 4.0, size=(n, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    colour = rng.uniform(-1, 1, size=(n, channels)) * rng.uniform(0, distractor, size=(n, 1))
    wave = np.sin(2 * np.pi * cycles * (xx * np.cos(angle) + yy * np.sin(angle)) / size + phase)
    x += (colour[:, :, None, None] * wave[:, None]).astype(np.float32)
    x += rng.normal(0.0, noise, size=x.shape).astype(np.float32)
    # Stored like a real image set (uint8), so the synthetic path and a user's data take the
    # same normalisation.
    img = np.clip(np.rint((x + 2.0) * (255.0 / 4.0)), 0, 255).astype(np.uint8)
    return img, y.astype(np.int64)


def synthetic(train_samples: int = 2048, eval_samples: int = 512, classes: int = 10, image_size: int = 32,
              channels: int = 3, seed: int = 0) -> Dataset:
    """The default data set: deterministic for ``seed``, learnable, CIFAR-shaped by default."""
    if train_samples < 1 or eval_samples < 0:
        raise DataError(f"synthetic data: train samples must be >= 1 and eval samples >= 0 "
                        f"(got {train_samples}, {eval_samples})")
    if classes < 2:
        raise DataError(f"synthetic data: at least 2 classes needed (got {classes})")
    patterns = synthetic_patterns(classes, channels, image_size, seed)
    x_train, y_train = synthetic_samples(patterns, train_samples, np.random.default_rng([seed, 1]))
    x_eval, y_eval = synthetic_samples(patterns, eval_samples, np.random.default_rng([seed, 2]))
    return finish(x_train, y_train, x_eval, y_eval, [f"class{k}" for k in range(classes)], "synthetic")


# ---------------------------------------------------------------- folders


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as exc:  # permissions, a folder removed while being read
        raise DataError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None


def _class_dirs(root: Path) -> list[Path]:
    return [p for p in _listing(root) if p.is_dir() and not p.name.startswith(".")]


def _read_image(path: Path) -> np.ndarray:
    """One file as an array H,W,C (images) or as stored (.npy, checked by the caller)."""
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable .npy file ({exc})") from None
        return _npy_to_hwc(arr, path)
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError(f"{path}: reading images needs Pillow: pip install 'hwval[workloads]' (or pip install "
                        "pillow); .npy files need nothing extra") from None
    try:
        with Image.open(path) as im:
            im = im.convert("L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB")
            return np.asarray(im, dtype=np.uint8)[..., None] if im.mode == "L" else np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from None


def _npy_to_hwc(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 2:
        return arr[..., None]
    if arr.ndim == 3:
        if arr.shape[2] <= MAX_CHANNELS:
            return arr
        if arr.shape[0] <= MAX_CHANNELS:
            return np.moveaxis(arr, 0, 2)
    raise DataError(f"{path}: expected an image array H,W or H,W,C or C,H,W (C <= {MAX_CHANNELS}); "
                    f"got shape {arr.shape}")


def _read_class_folders(root: Path) -> tuple[list[np.ndarray], list[int], list[str], list[Path]]:
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    dirs = _class_dirs(root)
    if not dirs:
        raise DataError(f"{root}: no class sub-folders (expected {root}/<class>/<image files>)")
    if len(dirs) < 2:
        raise DataError(f"{root}: only one class ({dirs[0].name!r}); training needs at least two class "
                        "sub-folders")
    images, labels, paths = [], [], []
    for label, d in enumerate(dirs):
        files = [p for p in _listing(d) if p.is_file() and not p.name.startswith(".")
                 and p.suffix.lower() in (*IMAGE_SUFFIXES, ".npy")]
        if not files:
            raise DataError(f"{d}: no image files (expected {', '.join(IMAGE_SUFFIXES)} or .npy)")
        for f in files:
            images.append(_read_image(f))
            labels.append(label)
            paths.append(f)
    return images, labels, [d.name for d in dirs], paths


def _stack_same_shape(images: list[np.ndarray], paths: list[Path]) -> np.ndarray:
    first = images[0].shape
    for img, p in zip(images, paths):
        if img.shape != first:
            raise DataError(f"{p}: image is {_hwc(img.shape)} but {paths[0]} is {_hwc(first)}; all images must "
                            "have the same size and channels (resize them first)")
        if img.dtype != images[0].dtype:
            raise DataError(f"{p}: values are {img.dtype} but {paths[0]} has {images[0].dtype}; use one type")
    return np.moveaxis(np.stack(images), 3, 1)


def _hwc(shape) -> str:
    h, w, c = shape
    return f"{h}x{w} with {c} channel{'s' if c != 1 else ''}"


def load_folder(path: str | os.PathLike, eval_fraction: float = 0.2, seed: int = 0) -> Dataset:
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: expected a folder of class sub-folders or an .npz file")
    train_dir = root / "train"
    eval_dirs = [root / name for name in EVAL_FOLDERS if (root / name).is_dir()]
    if train_dir.is_dir() and eval_dirs:
        imgs, labels, names, paths = _read_class_folders(train_dir)
        e_imgs, e_labels, e_names, e_paths = _read_class_folders(eval_dirs[0])
        if e_names != names:
            raise DataError(f"{eval_dirs[0]}: classes {e_names} differ from {train_dir}'s {names}")
        x = _stack_same_shape(imgs + e_imgs, paths + e_paths)
        n = len(imgs)
        return finish(x[:n], np.array(labels), x[n:], np.array(e_labels), names, str(root))
    if train_dir.is_dir() and {p.name for p in _class_dirs(root)} == {"train"}:
        # train/ alone (no test/, val/ or eval/ beside it): its classes, with a held-out share
        root = train_dir
    imgs, labels, names, paths = _read_class_folders(root)
    x = _stack_same_shape(imgs, paths)
    return finish(*_split(x, np.array(labels), eval_fraction, seed, str(root)), names, str(root))


# ---------------------------------------------------------------- npz


def _npz_images(x: np.ndarray, where: str) -> np.ndarray:
    """N,H,W / N,H,W,C / N,C,H,W -> N,C,H,W."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise DataError(f"{where}: expected images shaped N,H,W,C or N,C,H,W (or N,H,W); got shape {x.shape}")
    c_first, c_last = x.shape[1] <= MAX_CHANNELS, x.shape[3] <= MAX_CHANNELS
    if c_first and not c_last:
        return x
    if c_last and not c_first:
        return np.moveaxis(x, 3, 1)
    raise DataError(f"{where}: cannot tell the channel axis of shape {x.shape} (expected N,H,W,C or N,C,H,W "
                    f"with C <= {MAX_CHANNELS} and H, W larger)")


def _npz_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    if y.ndim != 1:
        raise DataError(f"{where}: expected labels shaped (N,); got shape {y.shape}")
    if len(y) != n:
        raise DataError(f"{where}: {len(y)} labels for {n} images")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{where}: labels must be integers (got {y.dtype})")
    return y.astype(np.int64)


def load_npz(path: str | os.PathLike, eval_fraction: float = 0.2, seed: int = 0) -> Dataset:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{p}: not a readable .npz file ({exc})") from None
    expected = "expected x (N,H,W,C or N,C,H,W) and y (N integer labels)"
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{p}: missing key {key!r} (found: {', '.join(sorted(arrays)) or 'none'}); {expected}")
    x = _npz_images(arrays["x"], f"{p}: x")
    y = _npz_labels(arrays["y"], len(x), f"{p}: y")
    eval_keys = next(((kx, ky) for kx, ky in (("x_eval", "y_eval"), ("x_test", "y_test")) if kx in arrays), None)
    if eval_keys is not None:
        kx, ky = eval_keys
        if ky not in arrays:
            raise DataError(f"{p}: has {kx!r} but no {ky!r}")
        xe = _npz_images(arrays[kx], f"{p}: {kx}")
        ye = _npz_labels(arrays[ky], len(xe), f"{p}: {ky}")
        if xe.shape[1:] != x.shape[1:]:
            raise DataError(f"{p}: {kx} images are {xe.shape[1:]} (C,H,W) but x images are {x.shape[1:]}")
        split = (x, y, xe, ye)
    else:
        split = _split(x, y, eval_fraction, seed, str(p))
    labels = np.unique(np.concatenate([split[1], split[3]]))
    if len(labels) < 2:
        raise DataError(f"{p}: y has only one class ({labels.tolist()}); training needs at least two")
    # Labels need not be 0..K-1: map the values present onto that range.
    remap = {int(v): i for i, v in enumerate(labels)}
    ys = [np.array([remap[int(v)] for v in part], dtype=np.int64) for part in (split[1], split[3])]
    return finish(split[0], ys[0], split[2], ys[1], [str(v) for v in labels.tolist()], str(p))


# ---------------------------------------------------------------- common


def _split(x: np.ndarray, y: np.ndarray, eval_fraction: float, seed: int, where: str):
    if not 0.0 <= eval_fraction < 1.0:
        raise DataError(f"eval fraction must be in [0, 1) (got {eval_fraction})")
    n_eval = int(round(len(y) * eval_fraction))
    if len(y) - n_eval < 1:
        raise DataError(f"{where}: {len(y)} samples leave none for training at eval fraction {eval_fraction}")
    order = np.random.default_rng([seed, 3]).permutation(len(y))
    ev, tr = order[:n_eval], order[n_eval:]
    return x[tr], y[tr], x[ev], y[ev]


def finish(x_train, y_train, x_eval, y_eval, class_names: list[str], source: str) -> Dataset:
    """Scale to [0, 1], standardise per channel with the training split's statistics, check sizes."""
    where = source
    if x_train.dtype == np.uint8:
        scale = 1.0 / 255.0
    elif np.issubdtype(x_train.dtype, np.floating):
        scale = 1.0
    else:
        raise DataError(f"{where}: images must be uint8 or float (got {x_train.dtype})")
    h, w = x_train.shape[2:]
    if min(h, w) < MIN_IMAGE_SIZE:
        raise DataError(f"{where}: images are {h}x{w}; the models need at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}")
    xt = x_train.astype(np.float32) * np.float32(scale)
    xe = x_eval.astype(np.float32) * np.float32(scale)
    if not np.all(np.isfinite(xt)) or not np.all(np.isfinite(xe)):
        raise DataError(f"{where}: images contain NaN or infinite values")
    mean = xt.mean(axis=(0, 2, 3), keepdims=True)
    std = xt.std(axis=(0, 2, 3), keepdims=True)
    std[std == 0] = 1.0
    xt = (xt - mean) / std
    xe = (xe - mean) / std
    return Dataset(xt, np.asarray(y_train, dtype=np.int64), xe, np.asarray(y_eval, dtype=np.int64),
                   list(class_names), source)


def load_dataset(spec: str, *, eval_fraction: float = 0.2, seed: int = 0, train_samples: int = 2048,
                 eval_samples: int = 512, classes: int = 10, image_size: int = 32) -> Dataset:
    """``synthetic``, a class-per-folder directory or an ``.npz`` file."""
    if spec == "synthetic":
        return synthetic(train_samples, eval_samples, classes, image_size, seed=seed)
    p = Path(spec)
    if p.suffix.lower() == ".npz":
        return load_npz(p, eval_fraction, seed)
    if not p.exists():
        raise DataError(f"{p}: no such folder or file (expected 'synthetic', a folder of class sub-folders "
                        "or an .npz file)")
    if p.is_dir():
        return load_folder(p, eval_fraction, seed)
    raise DataError(f"{p}: expected 'synthetic', a folder of class sub-folders or an .npz file")
