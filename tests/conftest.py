"""Shared fixtures: every test writes its runs and outputs into a temporary folder."""
import os
from pathlib import Path

# The suite runs the CPU's native arithmetic (faster); the known-answer test runs the portable default in its own process.
os.environ.setdefault("LOTTERY_NB_ARITHMETIC", "native")

import numpy as np
import pytest
import torch

from lottery_nb.data import write_cifar, write_idx
from lottery_nb.store import RunStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Point the run store, the outputs and the data at a fresh temporary folder (real MNIST linked when available)."""
    monkeypatch.setenv("LOTTERY_NB_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("LOTTERY_NB_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("LOTTERY_NB_DATA", str(stand_in_data(tmp_path / "data", real=mnist_root())))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


def stand_in_images(n, seed):
    """`n` learnable 28×28 uint8 images of 10 classes (a fixed template per class plus noise), and their labels."""
    g = np.random.default_rng(seed)
    templates = np.random.default_rng(99).integers(0, 256, (10, 28, 28))
    y = g.integers(0, 10, n)
    x = np.clip(0.6 * templates[y] + g.normal(0, 60, (n, 28, 28)), 0, 255)
    return x.astype(np.uint8), y


def stand_in_cifar(n, seed):
    """`n` learnable 3×32×32 uint8 images of 10 classes, like `stand_in_images`, and their labels."""
    g = np.random.default_rng(seed)
    templates = np.random.default_rng(98).integers(0, 256, (10, 3, 32, 32))
    y = g.integers(0, 10, n)
    return np.clip(0.6 * templates[y] + g.normal(0, 60, (n, 3, 32, 32)), 0, 255).astype(np.uint8), y


def stand_in_data(root, real=None, n_train=1200, n_test=500):
    """A data root with stand-in MNIST (a link to the real one when `real` is given), Fashion-MNIST and CIFAR-10."""
    for name in ("mnist", "fashion"):
        if name == "mnist" and real:
            root.mkdir(parents=True, exist_ok=True)
            (root / "MNIST").symlink_to(Path(real) / "MNIST")
        else:
            write_idx(root, name, *stand_in_images(n_train, 0), *stand_in_images(n_test, 1))
    write_cifar(root, *stand_in_cifar(n_train, 0), *stand_in_cifar(n_test, 1))
    return root


def mnist_root():
    """The data root holding MNIST, or None (tests needing it skip)."""
    root = os.environ.get("LOTTERY_NB_DATA")
    if root and (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        return root
    return None


RUN_FACTS = {"compute", "provenance", "checksum", "files"}  # how and when a level was computed, not what


def stored_results(root):
    """Every stored level's metrics (less the facts of the run) and weights (None where not kept), by (run, level)."""
    store, out = RunStore(root), {}
    for name, _ in store.runs():
        run = store.root / name
        for level in store.levels(run):
            m = {k: v for k, v in store.level_metrics(run, level).items() if k not in RUN_FACTS}
            state = store.state(run, level)
            out[name, level] = (m, None if state is None else state["model"])
    return out


def assert_same_results(a, b, keys=None):
    """Levels `keys` (default: all of `a`) hold the same metrics and bit-identical weights in results `a` and `b`."""
    for key in a if keys is None else keys:
        (ma, wa), (mb, wb) = a[key], b[key]
        assert ma == mb, key
        assert (wa is None) == (wb is None), key
        if wa is not None: assert all(torch.equal(wa[k], wb[k]) for k in wa), key
