"""The pruning stop: a level is taken only while more than k + 1 prunable weights are left; what pruning leaves to compute."""
import math

import pytest
import torch

from lottery_nb.imp import imp_config, run_imp
from lottery_nb.models import make_model, output_layer, prunable
from lottery_nb.pruning import alive_macs, count_remaining, ones_masks, prune_masks
from lottery_nb.store import RunStore


def _case(left, protected):
    """Weights with `left` prunable weights alive (and a few dead ones), plus `protected` output weights."""
    w = {"hidden": torch.arange(1.0, left + 4.0), "out": torch.full((max(protected, 1),), 0.01)}
    m = {"hidden": torch.cat([torch.ones(left), torch.zeros(3)]), "out": torch.ones(max(protected, 1))}
    if not protected:
        w, m = {"hidden": w["hidden"]}, {"hidden": m["hidden"]}
    return w, m, (["out"] if protected else [])


def _k(left, protected):
    return math.ceil(0.2 * (left + protected))


@pytest.mark.parametrize("protected", [0, 10])
@pytest.mark.parametrize("extra", [0, 1, 2])
def test_stop_with_k_k1_k2_prunable_weights_left(protected, extra):
    # find the number of prunable weights `left` with left == k + extra
    left = next(n for n in range(1, 200) if n == _k(n, protected) + extra)
    w, m, ignored = _case(left, protected)
    new = prune_masks(w, m, 0.2, ignored=ignored)
    if extra < 2:  # k or k + 1 left: a level would take every prunable weight
        assert new is None
    else:  # k + 2 left: k + 1 go, one stays, the smallest ones first
        assert int(new["hidden"].sum()) == 1 and new["hidden"][left - 1] == 1
        if protected:
            assert torch.equal(new["out"], m["out"])


def test_ties_that_would_take_every_weight_stop_too():
    w = {"a": torch.ones(10)}
    assert prune_masks(w, ones_masks(w), 0.2) is None


@pytest.mark.parametrize("prune_output", [False, True])
def test_imp_never_records_a_level_without_prunable_weights(tmp_path, prune_output):
    cfg = imp_config("linear", 1, data=dict(n_train=200, n_test=100), train=dict(epochs=1), prune_output=prune_output)
    store = RunStore(tmp_path)
    (run,) = run_imp([cfg], 60, store, progress=False)
    levels = store.levels(run)
    assert store.stopped(run) and 3 < levels[-1] < 60
    net = make_model("fcn2", 1, 100, 2)
    ignored = [] if prune_output else [output_layer(net)]
    last = store.state(run, levels[-1])["masks"]
    assert sum(int(v.sum()) for k, v in last.items() if k not in ignored) >= 1
    assert store.level_metrics(run, levels[-1])["counted"] == count_remaining({k: v.float() for k, v in last.items()})


def test_alive_macs_of_linear_layers_count_fed_units_and_read_inputs():
    net = make_model("fcn2", 6, 10, 2, seed=0)  # 10 -> 6 -> 2
    mk = ones_masks(prunable(net))
    first, out = list(mk)
    mk[first][:, 5:] = 0  # inputs 5..9 read by nobody
    mk[first][4:] = 0     # hidden units 4, 5 fed by nothing
    got = alive_macs(net, mk, torch.zeros(1, 10))
    assert got[first] == dict(dense=60, compact=4 * 5, sparse=int(mk[first].sum()))
    assert got[out] == dict(dense=12, compact=12, sparse=12)


def test_alive_macs_of_a_dead_convolution_is_zero_and_positions_follow_strides():
    net = make_model("resnet20", 2, 3072, 10, seed=0)
    mk = ones_masks(prunable(net))
    mk["blocks.0.conv1.weight"].zero_()
    got = alive_macs(net, mk, torch.zeros(1, 3072))
    assert got["blocks.0.conv1.weight"]["compact"] == got["blocks.0.conv1.weight"]["sparse"] == 0
    # 32x32 positions in the first stage, 16x16 after the first stride, 8x8 after the second
    assert got["stem.weight"]["dense"] == 2 * 3 * 9 * 32 * 32
    assert got["blocks.3.conv1.weight"]["dense"] == 4 * 2 * 9 * 16 * 16
    assert got["blocks.6.short.0.weight"]["dense"] == 8 * 4 * 1 * 8 * 8
    assert net.training  # the count leaves the model's mode as it was
