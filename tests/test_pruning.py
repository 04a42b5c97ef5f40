"""The pruning stop: a level is taken only while more than k + 1 prunable weights are left."""
import math

import pytest
import torch

from lottery_nb.imp import imp_config, run_imp
from lottery_nb.models import make_model, output_layer
from lottery_nb.pruning import count_remaining, ones_masks, prune_masks
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
