"""Shared fixtures: every test writes its runs and outputs into a temporary folder."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Point the run store and the outputs at a fresh temporary folder."""
    monkeypatch.setenv("LOTTERY_NB_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("LOTTERY_NB_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


def mnist_root():
    """The data root holding MNIST, or None (tests needing it skip)."""
    root = os.environ.get("LOTTERY_NB_DATA")
    if root and (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        return root
    return None
