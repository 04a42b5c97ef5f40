"""MNIST-side models and data: count formulas and sequences, the image loaders on data the tests make, ResNet-6 IMP."""
import pytest
import torch

from conftest import stand_in_data, stand_in_images
from lottery_nb.core import ConfigError
from lottery_nb.data import fashion_dataset, file_problem, make_dataset, mnist_dataset, write_idx
from lottery_nb.imp import (Grid, arch_sweeps, imp_config, next_count, plan_trajectory, run_imp, sweep_notes,
                            train_defaults)
from lottery_nb.models import arch_counts, count_params, make_model
from lottery_nb.pruning import count_schedule
from lottery_nb.store import RunStore


@pytest.mark.parametrize("arch,width,formula", [
    ("fcn2", w, 794 * w) for w in (1, 3, 100, 10_000)] + [
    ("fcn3", w, 884 * w + 1000) for w in (3, 50, 300, 10_000)] + [
    ("resnet6", w, 72 * w * w + 29 * w) for w in (1, 4, 16, 64)])
def test_counted_weights_follow_the_formulas(arch, width, formula):
    assert arch_counts(arch, width, 784, 10)["counted"] == formula
    if width <= 300: assert count_params(make_model(arch, width, 784, 10)) == formula


def test_count_sequences_and_where_a_protected_output_stops_them():
    assert count_schedule(45_200, 9)[:3] == [45_200, 36_159, 28_926] and count_schedule(45_200, 9)[-1] == 6_061
    mnist = lambda arch, w, **kw: imp_config("mnist", w, arch=arch, **kw)
    shapes = type("Shapes", (), dict(input_dim=784, num_classes=10))
    # fcn3 w=3: 3,652 weights of which 1,000 protected; the paper ran 5 levels, exactly the last one before
    # only the protected layer would remain
    counts, stops = plan_trajectory(mnist("fcn3", 3), shapes, 40)
    assert counts == [3652, 2920, 2335, 1867, 1492, 1192] and stops
    assert next_count(1192, 1000) is None
    counts, stops = plan_trajectory(mnist("fcn3", 5), shapes, 40)
    assert len(counts) - 1 == 7 and stops  # the paper's 7 levels for width 5
    counts, _ = plan_trajectory(mnist("fcn2", 100), shapes, 3)
    assert counts == count_schedule(79_400, 3)
    counts, _ = plan_trajectory(mnist("resnet6", 8, prune_output=True), shapes, 2)
    assert counts == count_schedule(72 * 64 + 29 * 8, 2)


@pytest.mark.parametrize("name,load", [("mnist", mnist_dataset), ("fashion", fashion_dataset)])
def test_image_loaders_on_data_the_test_makes(tmp_path, name, load):
    (xtr, ytr), (xte, yte) = stand_in_images(300, 0), stand_in_images(100, 1)
    write_idx(tmp_path, name, xtr, ytr, xte, yte)
    ds = load(tmp_path, noise=0.2, n_train=200)
    assert ds.name == name and ds.x_train.shape == (200, 784) and ds.x_test.shape == (100, 784)
    assert torch.equal(ds.y_train_clean, torch.as_tensor(ytr[:200]))
    changed = (ds.y_train != ds.y_train_clean).float().mean().item()
    assert 0.1 < changed < 0.26  # 20 % resampled, nine in ten of them to another class
    again = make_dataset(name, root=tmp_path, noise=0.2, n_train=200)
    assert torch.equal(again.y_train, ds.y_train) and torch.equal(again.y_test_noisy, ds.y_test_noisy)
    assert not torch.equal(ds.y_test_noisy, ds.y_test)  # the noisy test copy


@pytest.mark.parametrize("load,folder", [(mnist_dataset, "MNIST"), (fashion_dataset, "FashionMNIST")])
def test_missing_data_names_the_files_and_folder(tmp_path, load, folder):
    with pytest.raises(ConfigError) as e: load(tmp_path)
    msg = str(e.value)
    assert f"{folder} not found under {tmp_path}" in msg and str(tmp_path / folder / "raw") in msg
    assert "train-images-idx3-ubyte" in msg and "LOTTERY_NB_DATA" in msg



def test_a_failed_download_names_the_missing_files(tmp_path, monkeypatch):
    import torchvision.datasets as tvd
    def offline(*a, **k): raise RuntimeError("no network")
    monkeypatch.setattr(tvd, "MNIST", offline)
    with pytest.raises(ConfigError) as e: mnist_dataset(tmp_path, download=True)
    msg = str(e.value)
    assert f"MNIST not found under {tmp_path}" in msg and "t10k-labels-idx1-ubyte" in msg and "no network" in msg
    assert file_problem("mnist", tmp_path) == str(e.value).split(" (RuntimeError")[0]  # the driver's check says the same
    monkeypatch.setenv("LOTTERY_NB_DOWNLOAD", "1")
    assert file_problem("mnist", tmp_path) == "" and file_problem("cifar10", tmp_path) == ""  # may be fetched

def test_resnet6_imp_two_levels_keeps_masks(tmp_path):
    root = stand_in_data(tmp_path / "data")
    cfg = imp_config("fashion", 4, arch="resnet6", data=dict(n_train=256, n_test=128), train=dict(epochs=2))
    run, = run_imp([cfg], 2, store=tmp_path / "store", data_root=root, progress=False)
    store = RunStore(tmp_path / "store")
    m = store.metrics(run)
    total, protected = 72 * 16 + 29 * 4, 2 * 4 * 10
    assert [r["counted"] for r in m] == [total, *(c for c in count_schedule(total, 2)[1:])]
    for level in (1, 2):
        st = store.state(run, level)
        for name, mask in st["masks"].items():
            w = st["model"][name]
            assert torch.all(w[~mask] == 0), (level, name)  # pruned weights stayed zero through training
        assert int(st["masks"]["fc.weight"].sum()) == protected  # the output layer is protected on MNIST-like data
        assert "bn.running_mean" in st["model"]
    assert m[2]["compute"]["stacks"] == 1 and 0 <= m[2]["test_error"] <= 1


def test_resnet6_schedule_follows_the_epochs_and_yields_to_given_values():
    t = imp_config("mnist", 8, arch="resnet6", train=dict(epochs=40)).train
    assert (t.momentum, t.weight_decay, t.milestones) == (0.9, 1e-4, (20, 30))
    assert imp_config("mnist", 8, arch="resnet6").train.milestones == (60, 90)
    given = imp_config("mnist", 8, arch="resnet6", train=dict(epochs=40, momentum=0.5, milestones=[5])).train
    assert (given.momentum, given.milestones) == (0.5, (5,))
    assert imp_config("mnist", 8, arch="fcn3").to_dict()["train"] == train_defaults("mnist", "fcn3")  # FCNs: the protocol's
    with pytest.raises(ConfigError, match="epochs"): imp_config("mnist", 8, arch="resnet6", train=dict(epochs="40"))


def test_arch_sweeps_give_resnet6_its_own_scale_and_say_so():
    fcn, resnet = Grid([3, 10], [10], 3, epochs=120), Grid([2, 4], [4], 3, n_train=1000, epochs=6)
    sws = arch_sweeps("mnist", ["fcn2", "fcn3", "resnet6"], fcn, resnet)
    n_train = {a: sw.config_of(sw.starts[0]).data.n_train for a, sw in sws.items()}
    assert n_train == dict(fcn2=None, fcn3=None, resnet6=1000)
    assert sws["resnet6"].config_of(4).train.milestones == (3, 4)
    assert sweep_notes(sws) == ["replicates 1 (paper 3)", "resnet6: n_train 1000 (paper all)",
                               "resnet6: epochs 6 (paper 120)"]
    assert sweep_notes({a: sws[a] for a in ("fcn2", "fcn3")}) == ["replicates 1 (paper 3)"]
