"""Data sets for the training workload: the synthetic set, image folders, .npy and .npz files,
and a one-line error naming the path for every bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from hwval.workloads.data import DataError, load_dataset, load_folder, load_npz, synthetic

PIL = pytest.importorskip("PIL.Image", reason="image folders are read with Pillow")


def write_png(path, shape=(12, 12, 3), value=0, mode="RGB"):
    arr = np.full(shape, value, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.fromarray(arr if mode == "RGB" else arr[..., 0], mode=mode).save(path)


def image_folder(root, classes=("cat", "dog"), per_class=3, shape=(12, 12, 3)):
    for k, name in enumerate(classes):
        for i in range(per_class):
            write_png(root / name / f"{i}.png", shape, value=40 * k + i)
    return root


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_cifar_shaped_and_seeded():
    a, b, c = synthetic(seed=3), synthetic(seed=3), synthetic(seed=4)
    assert a.x_train.shape == (2048, 3, 32, 32) and a.x_eval.shape == (512, 3, 32, 32)
    assert a.x_train.dtype == np.float32 and a.classes == 10
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_eval, b.y_eval)
    assert not np.array_equal(a.x_train, c.x_train)
    assert set(np.unique(a.y_train)) == set(range(10))
    # standardised with the training split's statistics
    assert np.allclose(a.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    assert np.allclose(a.x_train.std(axis=(0, 2, 3)), 1, atol=1e-3)


def test_synthetic_labels_are_learnable_from_the_images_alone():
    # A nearest-class-mean classifier (no training loop, no torch) beats chance (10 %) clearly on
    # the held-out split: the label is carried by the image, not by luck.
    d = synthetic(train_samples=1000, eval_samples=400, seed=0)
    means = np.stack([d.x_train[d.y_train == k].mean(axis=0).ravel() for k in range(10)])
    flat = d.x_eval.reshape(len(d.x_eval), -1)
    pred = np.argmin(((flat[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    accuracy = float((pred == d.y_eval).mean())
    assert accuracy > 0.3, accuracy
    # ...and it is not trivial either: noise keeps a simple classifier well short of perfect
    assert accuracy < 0.95, accuracy


def test_synthetic_size_options():
    d = synthetic(train_samples=20, eval_samples=0, classes=3, image_size=16, seed=1)
    assert d.x_train.shape == (20, 3, 16, 16) and len(d.y_eval) == 0 and d.classes == 3


# ---------------------------------------------------------------- folders


def test_image_folder_loads_with_a_seeded_split(tmp_path):
    root = image_folder(tmp_path / "pets", per_class=5)
    d = load_folder(root, eval_fraction=0.2, seed=0)
    assert d.class_names == ["cat", "dog"]
    assert len(d.y_train) == 8 and len(d.y_eval) == 2
    assert d.sample_shape == (3, 12, 12)
    again = load_folder(root, eval_fraction=0.2, seed=0)
    assert np.array_equal(d.y_eval, again.y_eval)


def test_train_and_test_sub_folders_are_used_as_given(tmp_path):
    image_folder(tmp_path / "set" / "train", per_class=3)
    image_folder(tmp_path / "set" / "test", per_class=1)
    d = load_dataset(str(tmp_path / "set"))
    assert len(d.y_train) == 6 and len(d.y_eval) == 2 and d.class_names == ["cat", "dog"]


def test_a_train_folder_alone_is_split_not_taken_for_one_class(tmp_path):
    image_folder(tmp_path / "set" / "train", per_class=5)
    d = load_dataset(str(tmp_path / "set"), eval_fraction=0.2)
    assert d.class_names == ["cat", "dog"] and len(d.y_train) == 8 and len(d.y_eval) == 2


def test_a_folder_that_cannot_be_listed_is_one_line(tmp_path):
    from hwval.workloads.data import _listing

    # (the tests run as root, where permissions cannot make iterdir fail; a file can)
    f = tmp_path / "plain.txt"
    f.write_text("x")
    message = one_line_error(_listing, f)
    assert message.startswith(f"{f}: cannot list the folder (")


def test_grayscale_images_and_npy_files(tmp_path):
    for k in range(2):
        write_png(tmp_path / "g" / f"c{k}" / "a.png", (10, 10, 1), value=k * 100, mode="L")
        np.save(tmp_path / "g" / f"c{k}" / "b.npy", np.full((10, 10), k * 100, dtype=np.uint8))
    d = load_folder(tmp_path / "g", eval_fraction=0.0)
    assert d.sample_shape == (1, 10, 10) and len(d.y_train) == 4
    # .npy files in C,H,W order are accepted too
    for k in range(2):
        np.save(_mk(tmp_path / "chw" / f"c{k}") / "x.npy", np.full((3, 9, 9), k, dtype=np.float32))
    assert load_folder(tmp_path / "chw", eval_fraction=0.0).sample_shape == (3, 9, 9)


def _mk(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_bad_folders_are_one_line_errors_naming_the_path(tmp_path):
    missing = tmp_path / "nope"
    assert one_line_error(load_dataset, str(missing)) == (
        f"{missing}: no such folder or file (expected 'synthetic', a folder of class sub-folders or an .npz file)")

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert "expected 'synthetic', a folder of class sub-folders or an .npz file" in one_line_error(
        load_dataset, str(a_file))

    empty = _mk(tmp_path / "empty")
    assert one_line_error(load_folder, empty) == (
        f"{empty}: no class sub-folders (expected {empty}/<class>/<image files>)")

    one = image_folder(tmp_path / "one", classes=("only",))
    assert one_line_error(load_folder, one) == (
        f"{one}: only one class ('only'); training needs at least two class sub-folders")

    hollow = image_folder(tmp_path / "hollow", classes=("a",))
    _mk(hollow / "b")
    (hollow / "b" / "notes.txt").write_text("not an image")
    message = one_line_error(load_folder, hollow)
    assert message.startswith(f"{hollow / 'b'}: no image files (expected .png, .jpg")


def test_unreadable_image_names_the_file(tmp_path):
    root = image_folder(tmp_path / "broken")
    bad = root / "dog" / "9.png"
    bad.write_bytes(b"this is not a png")
    message = one_line_error(load_folder, root)
    assert message.startswith(f"{bad}: unreadable image (")


def test_mismatched_shapes_name_both_files(tmp_path):
    root = image_folder(tmp_path / "mixed", shape=(12, 12, 3))
    odd = root / "dog" / "big.png"
    write_png(odd, (16, 12, 3))
    message = one_line_error(load_folder, root)
    assert message == (f"{odd}: image is 16x12 with 3 channels but {root / 'cat' / '0.png'} is 12x12 with 3 "
                       "channels; all images must have the same size and channels (resize them first)")


def test_bad_npy_files(tmp_path):
    root = tmp_path / "npy"
    np.save(_mk(root / "a") / "x.npy", np.zeros((9, 9), dtype=np.uint8))
    np.save(_mk(root / "b") / "x.npy", np.zeros((2, 9, 9, 3), dtype=np.uint8))
    assert one_line_error(load_folder, root) == (
        f"{root / 'b' / 'x.npy'}: expected an image array H,W or H,W,C or C,H,W (C <= 4); got shape (2, 9, 9, 3)")
    (root / "b" / "x.npy").write_bytes(b"garbage")
    assert one_line_error(load_folder, root).startswith(f"{root / 'b' / 'x.npy'}: unreadable .npy file (")


def test_train_and_test_folders_must_share_classes(tmp_path):
    image_folder(tmp_path / "s" / "train", classes=("a", "b"))
    image_folder(tmp_path / "s" / "val", classes=("a", "c"))
    assert one_line_error(load_folder, tmp_path / "s") == (
        f"{tmp_path / 's' / 'val'}: classes ['a', 'c'] differ from {tmp_path / 's' / 'train'}'s ['a', 'b']")


def test_tiny_images_are_refused(tmp_path):
    root = image_folder(tmp_path / "tiny", shape=(4, 4, 3))
    assert one_line_error(load_folder, root) == f"{root}: images are 4x4; the models need at least 8x8"


def test_missing_pillow_is_a_clear_error(tmp_path):
    root = image_folder(tmp_path / "pets")
    # a real interpreter in which PIL cannot be imported
    code = ("import sys; sys.modules['PIL'] = None\n"
            "from hwval.workloads.data import load_folder, DataError\n"
            f"try:\n    load_folder({str(root)!r})\nexcept DataError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == (f"{root / 'cat' / '0.png'}: reading images needs Pillow: pip install "
                                  "'hwval[workloads]' (or pip install pillow); .npy files need nothing extra")


# ---------------------------------------------------------------- npz


def test_npz_nhwc_uint8_with_its_own_test_split(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x=rng.integers(0, 255, (30, 16, 16, 3), dtype=np.uint8), y=np.arange(30) % 3,
             x_test=rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8), y_test=np.arange(6) % 3)
    d = load_npz(path)
    assert d.sample_shape == (3, 16, 16) and len(d.y_train) == 30 and len(d.y_eval) == 6 and d.classes == 3


def test_npz_nchw_float_and_nhw_and_label_remapping(tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, x=np.random.default_rng(1).random((10, 1, 12, 12)).astype(np.float32),
             y=np.array([5, 9] * 5))
    d = load_npz(path, eval_fraction=0.2)
    assert d.sample_shape == (1, 12, 12) and d.class_names == ["5", "9"]
    assert set(np.concatenate([d.y_train, d.y_eval]).tolist()) == {0, 1}
    np.savez(tmp_path / "g.npz", x=np.zeros((4, 10, 10), dtype=np.uint8), y=np.array([0, 1, 0, 1]))
    assert load_npz(tmp_path / "g.npz", eval_fraction=0.0).sample_shape == (1, 10, 10)


@pytest.mark.parametrize("arrays,expected", [
    ({"images": np.zeros((4, 8, 8, 3))},
     "missing key 'x' (found: images); expected x (N,H,W,C or N,C,H,W) and y (N integer labels)"),
    ({"x": np.zeros((4, 8, 8, 3))},
     "missing key 'y' (found: x); expected x (N,H,W,C or N,C,H,W) and y (N integer labels)"),
    ({"x": np.zeros((4, 8, 8, 3)), "y": np.array([0, 1, 0])}, "y: 3 labels for 4 images"),
    ({"x": np.zeros((4, 8, 8, 3)), "y": np.array([0.5, 1, 0, 1])}, "y: labels must be integers (got float64)"),
    ({"x": np.zeros((4, 8, 8, 3)), "y": np.zeros((4, 2), dtype=int)}, "y: expected labels shaped (N,); got shape (4, 2)"),
    ({"x": np.zeros((4, 64)), "y": np.array([0, 1, 0, 1])},
     "x: expected images shaped N,H,W,C or N,C,H,W (or N,H,W); got shape (4, 64)"),
    ({"x": np.zeros((4, 3, 9, 3)), "y": np.array([0, 1, 0, 1])},
     "x: cannot tell the channel axis of shape (4, 3, 9, 3) (expected N,H,W,C or N,C,H,W with C <= 4 and H, W larger)"),
    ({"x": np.zeros((4, 8, 8, 3)), "y": np.array([2, 2, 2, 2])},
     "y has only one class ([2]); training needs at least two"),
    ({"x": np.zeros((4, 8, 8, 3)), "y": np.array([0, 1, 0, 1]), "x_test": np.zeros((2, 8, 8, 3))},
     "has 'x_test' but no 'y_test'"),
    ({"x": np.zeros((4, 8, 8, 3)), "y": np.array([0, 1, 0, 1]), "x_eval": np.zeros((2, 9, 9, 3)),
      "y_eval": np.array([0, 1])}, "x_eval images are (3, 9, 9) (C,H,W) but x images are (3, 8, 8)"),
    ({"x": np.zeros((4, 8, 8, 3), dtype=np.int32), "y": np.array([0, 1, 0, 1])},
     "images must be uint8 or float (got int32)"),
])
def test_bad_npz_files_name_the_key_and_the_expected_form(tmp_path, arrays, expected):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    assert one_line_error(load_npz, path, eval_fraction=0.0) == f"{path}: {expected}"


def test_corrupt_npz(tmp_path):
    path = tmp_path / "c.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    assert one_line_error(load_dataset, str(path)).startswith(f"{path}: not a readable .npz file (")


def test_cli_reports_a_bad_folder_in_one_line_with_exit_2(tmp_path):
    empty = _mk(tmp_path / "empty")
    env = {**os.environ}
    env.pop("HWVAL_MARK_SOCKET", None)
    res = subprocess.run([sys.executable, "-m", "hwval.cli", "workload", "train", "--data", str(empty)],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 2
    assert res.stderr == f"hwval: error: {empty}: no class sub-folders (expected {empty}/<class>/<image files>)\n"
    assert res.stdout == ""
