"""Tests on real MNIST; they read the data root from LOTTERY_NB_DATA and skip when it is absent."""
import pytest

from conftest import mnist_root
from lottery_nb.data import mnist_dataset
from lottery_nb.imp import imp_config, run_imp
from lottery_nb.pruning import count_schedule
from lottery_nb.store import RunStore

pytestmark = pytest.mark.skipif(mnist_root() is None, reason="set LOTTERY_NB_DATA to a folder holding MNIST/raw")


def test_mnist_loads_with_the_official_sizes():
    ds = mnist_dataset(mnist_root(), n_train=None, n_test=None)
    assert ds.x_train.shape == (60_000, 784) and ds.x_test.shape == (10_000, 784)
    assert abs(ds.x_train.mean().item()) < 0.01 and abs(ds.x_train.std().item() - 1) < 0.02
    assert abs((ds.y_train != ds.y_train_clean).float().mean().item() - 0.18) < 0.01


def test_imp_on_mnist_protects_the_output_layer(tmp_path):
    cfg = imp_config("mnist", 10, data=dict(n_train=2000, n_test=500), train=dict(epochs=5))
    run, = run_imp([cfg], 2, store=tmp_path, data_root=mnist_root(), progress=False)
    m = RunStore(tmp_path).metrics(run)
    assert [r["counted"] for r in m] == count_schedule(9840, 2)
    assert m[0]["test_error"] < 0.4  # it learns despite 18 % wrong training labels
    st = RunStore(tmp_path).state(run, 2)
    assert int(st["masks"]["layers.2.weight"].sum()) == 1000
