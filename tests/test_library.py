"""Unit tests of the exported library, on small data the tests make."""
import math
import shutil

import numpy as np
import pytest
import torch
from torch.nn.utils import prune as torch_prune

from lottery_nb.analysis import (best_pruned, calibration_marks, dense_curve, effective_noise, level_probs, mean_rows,
                                 model_probs, pooled_reliability, summarise, three_models)
from lottery_nb.calibration import classwise_reliability, ece, posterior_gap, reliability_curve
from lottery_nb.core import ConfigError, make_generator
from lottery_nb.data import Mixture, bayes_error, label_noise, make_dataset, mixture_dataset, noisy_posterior, posterior, sample
from lottery_nb.imp import Sweep, build_dataset, grid_configs, imp_config, run_imp
from lottery_nb.models import count_params, make_model, output_layer, prunable
from lottery_nb.results import trajectories
from lottery_nb.pruning import count_remaining, count_schedule, ones_masks, prune_masks
from lottery_nb.store import RunStore
from lottery_nb.training import TrainConfig, predict, train_models

SMALL = dict(data=dict(n_train=300, n_test=150), train=dict(epochs=2))


# --- data ------------------------------------------------------------------------------------

@pytest.mark.parametrize("task,nu", [("linear", 0.2), ("xor", 0.4), ("xor", 0.6)])
def test_posterior_matches_monte_carlo(task, nu):
    mix = Mixture(task, nu)
    x, y = sample(mix, 300_000, seed=11)
    p = posterior(mix, x)[:, 1]
    bins = torch.bucketize(p.contiguous(), torch.linspace(0, 1, 9)[1:-1].contiguous())
    checked = 0
    for b in range(8):
        sel = bins == b
        if sel.sum() > 2000:
            assert abs(y[sel].double().mean() - p[sel].mean()) < 0.015
            checked += 1
    assert checked >= 2


def test_bayes_error_linear_closed_form_matches_sampling():
    mix = Mixture("linear", 0.2)
    x, y = sample(mix, 200_000, seed=5)
    bayes_pred = posterior(mix, x).argmax(1)
    assert abs((bayes_pred != y).double().mean() - bayes_error(mix)) < 0.005
    assert abs(bayes_error(mix) - 0.5 * math.erfc(1 / math.sqrt(2))) < 1e-12


def test_noise_rates_and_determinism():
    y = torch.randint(2, (50_000,), generator=make_generator(1))
    yn = label_noise(y, 0.2, 2, seed=3)
    assert abs((yn != y).float().mean().item() - 0.1) < 0.006
    assert torch.equal(yn, label_noise(y, 0.2, 2, seed=3))
    assert not torch.equal(yn, label_noise(y, 0.2, 2, seed=4))
    assert abs((label_noise(y, 0.2, 2, seed=3, mode="flip") != y).float().mean().item() - 0.2) < 1e-4
    p = torch.tensor([[0.9, 0.1]])
    assert torch.allclose(noisy_posterior(p, 0.2), torch.tensor([[0.82, 0.18]]))


def test_mixture_dataset_is_deterministic_and_test_noise_is_separate():
    a, b = mixture_dataset("xor", 0.6, n_train=500, n_test=300), mixture_dataset("xor", 0.6, n_train=500, n_test=300)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.y_test, a.y_test_noisy)
    assert int(a.y_test.sum()) == 150


# --- models and pruning ----------------------------------------------------------------------

def test_counts_match_the_paper():
    assert count_params(make_model("fcn3", 50, 784, 10)) == 45_200
    assert count_params(make_model("fcn3", 10_000, 784, 10)) == 8_841_000
    assert count_params(make_model("fcn2", 7, 784, 10)) == 794 * 7
    assert count_schedule(45_200, 9) == [45_200, 36_159, 28_926, 23_139, 18_510, 14_807, 11_844, 9_474, 7_578, 6_061]


def test_pruning_recurrence_on_the_paper_net():
    net = make_model("fcn3", 50, 784, 10, seed=0)
    w, masks = prunable(net), ones_masks(prunable(net))
    got = [count_remaining(masks)]
    for _ in range(9):
        masks = prune_masks(w, masks, 0.2, ignored=[output_layer(net)])
        got.append(count_remaining(masks))
    assert got == count_schedule(45_200, 9)
    assert int(masks["layers.2.weight"].sum()) == 1000


def test_mask_rule_matches_torch_global_unstructured():
    def tie_free(seed):
        net = make_model("fcn3", 20, 60, 5, seed=seed)
        return len(torch.cat([v.detach().abs().flatten() for v in prunable(net).values()]).unique()) == count_params(net)
    seed = next(s for s in range(50) if tie_free(s))  # the rules differ only on tied magnitudes
    net, ref = make_model("fcn3", 20, 60, 5, seed=seed), make_model("fcn3", 20, 60, 5, seed=seed)
    w = prunable(net)
    ours = prune_masks(w, ones_masks(w), 0.2)
    torch_prune.global_unstructured([(l, "weight") for l in ref.layers], pruning_method=torch_prune.L1Unstructured,
                                    amount=math.ceil(0.2 * count_params(net)) + 1)
    for i, l in enumerate(ref.layers):
        assert torch.equal(ours[f"layers.{i}.weight"], l.weight_mask)


def test_exact_rule_prunes_twenty_percent():
    net = make_model("fcn2", 10, 100, 2, seed=0)
    w = prunable(net)
    m = prune_masks(w, ones_masks(w), 0.2, rule="exact")
    assert count_remaining(m) == 1020 - 204


def test_pruning_stops_when_only_protected_layer_remains():
    net = make_model("fcn2", 1, 3, 10, seed=0)
    w, masks = prunable(net), ones_masks(prunable(net))
    for _ in range(20):
        new = prune_masks(w, masks, 0.2, ignored=[output_layer(net)])
        if new is None:
            break
        masks = new
    assert new is None and int(masks["layers.1.weight"].sum()) == 10


# --- training --------------------------------------------------------------------------------

def _bank(seed_offset=0):
    models = [make_model("fcn3", w, 20, 3, seed=w + r) for r in range(2) for w in (2, 5, 9)]
    masks = [prune_masks(prunable(m), ones_masks(prunable(m)), 0.3) for m in models]
    return models, masks, [r for r in range(2) for _ in (2, 5, 9)]


@pytest.mark.parametrize("momentum,weight_decay", [(0.9, 5e-4), (0.0, 5e-4), (0.0, 0.0), (0.9, 0.0)])
def test_bank_and_per_model_training_agree(momentum, weight_decay):
    g = make_generator(0)
    x, y = torch.randn(256, 20, generator=g), torch.randint(3, (256,), generator=g)
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.05, momentum=momentum, weight_decay=weight_decay, milestones=(2,))
    (a, ma, s), (b, mb, _) = _bank(), _bank()
    info = train_models(a, ma, x, y, cfg, s, engine="bank")
    train_models(b, mb, x, y, cfg, s, engine="loop")
    assert info["banks"] == 1
    worst = max((p.state_dict()[k] - q.state_dict()[k]).abs().max().item() for p, q in zip(a, b) for k in p.state_dict())
    assert worst < 1e-5, worst
    for m, mk in zip(a, ma):
        for k, v in prunable(m).items():
            assert (v[mk[k] == 0] == 0).all()
    assert torch.allclose(predict(a, x), torch.stack([m(x) for m in b]), atol=1e-4)


def test_training_is_deterministic():
    g = make_generator(1)
    x, y = torch.randn(200, 20, generator=g), torch.randint(3, (200,), generator=g)
    cfg = TrainConfig(epochs=2, batch_size=50)
    (a, ma, s), (b, mb, _) = _bank(), _bank()
    train_models(a, ma, x, y, cfg, s)
    train_models(b, mb, x, y, cfg, s)
    assert all(torch.equal(p.layers[0].weight, q.layers[0].weight) for p, q in zip(a, b))


# --- calibration -----------------------------------------------------------------------------

def test_ece_against_an_independent_computation():
    g = make_generator(2)
    probs = (3 * torch.randn(4000, 4, generator=g)).softmax(1)
    labels = torch.randint(4, (4000,), generator=g)
    conf, pred = probs.max(1)
    edges = np.linspace(0, 1, 16)
    ref = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = ((conf > lo) & (conf <= hi)).numpy()
        if sel.any():
            ref += sel.mean() * abs((pred.numpy()[sel] == labels.numpy()[sel]).mean() - conf.numpy()[sel].astype(float).mean())
    assert abs(ece(probs, labels) - ref) < 1e-6
    tm = pytest.importorskip("torchmetrics.functional.classification")
    assert abs(ece(probs, labels) - tm.multiclass_calibration_error(probs, labels, 4, n_bins=15).item()) < 1e-5


def test_reliability_against_posterior_and_classwise():
    p = torch.linspace(0.01, 0.99, 1000)
    rc = reliability_curve(p, p, n_bins=10)
    assert np.allclose(rc["pred"], rc["target"]) and rc["count"].sum() == 1000
    cr = classwise_reliability(torch.stack([1 - p, p], 1), (p > 0.5).long(), n_bins=10)
    assert np.isfinite(cr["freq"]).all() and (cr["spread"] >= 0).all()
    assert posterior_gap(torch.tensor([[0.7, 0.3]]), torch.tensor([[0.5, 0.5]])) == pytest.approx(0.2)


# --- store and IMP driver --------------------------------------------------------------------

def test_pooled_reliability_tiles_the_labels_replicate_by_replicate():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 50, 4, generator=g).softmax(-1)  # 3 replicates, 50 points, 4 classes
    y = torch.randint(0, 4, (50,), generator=g)
    fp = dict(probs={"full": probs, "best pruned": probs.flip(-1)})
    rel = pooled_reliability(fp, y, n_bins=6)
    assert set(rel) == {"full", "best pruned"}
    by_hand = classwise_reliability(torch.cat(list(probs)), torch.cat([y, y, y]), 6)
    for k in ("pred", "freq", "classes"):
        assert np.allclose(np.nan_to_num(rel["full"][k]), np.nan_to_num(by_hand[k]))
    wrong = classwise_reliability(torch.cat(list(probs)), y.repeat_interleave(3), 6)  # labels not aligned
    assert not np.allclose(np.nan_to_num(rel["full"]["freq"]), np.nan_to_num(wrong["freq"]))


def test_calibration_marks_pick_their_levels():
    curve = [dict(level=l, counted=100 - 10 * l, test_error=e, train_error=t, ece=c, ece_noisy=n)
             for l, (e, t, c, n) in enumerate([(0.30, 0.00, 0.20, 0.10), (0.20, 0.05, 0.05, 0.12),
                                               (0.10, 0.20, 0.15, 0.02), (0.40, 0.50, 0.30, 0.30)])]
    m = calibration_marks(curve, "argmin")
    assert (m["best pruned"]["level"], m["lowest ECE, clean"]["level"], m["lowest ECE, noisy"]["level"]) == (2, 1, 2)
    # the paper's rule skips levels whose training error is below tau × the noise rate (here 0.5 × 0.3)
    assert calibration_marks(curve, "paper", 0.3, 0.5)["best pruned"]["level"] == 2
    assert calibration_marks(curve, "paper", 0.9, 0.5)["best pruned"]["level"] == 3


def test_three_models_and_their_probabilities(tmp_path):
    cfgs = grid_configs("linear", [3, 6], 2, **SMALL)
    run_imp(cfgs, 2, store=tmp_path, progress=False)
    rows = mean_rows(trajectories(tmp_path, cfgs))
    chosen = three_models(rows, 6, "argmin")
    best = min(r["test_error"] for r in rows if r["width"] == 6)
    assert chosen["full"] == (6, 0)
    assert [r["test_error"] for r in rows if r["width"] == 6 and r["level"] == chosen["best pruned"][1]] == [best]
    assert chosen["best small full"] == (min(dense_curve(rows), key=lambda r: r["test_error"])["width"], 0)
    six = [c for c in cfgs if c.width == 6]
    ds = build_dataset(six[0])
    p = model_probs(tmp_path, six, chosen["best pruned"][1], ds, ds.x_test)
    assert p.shape == (2, 150, 2)
    assert torch.allclose(p, level_probs(tmp_path, six, chosen["best pruned"][1]).double(), atol=1e-5)


def test_store_resumes_an_interrupted_trajectory(tmp_path):
    cfgs = grid_configs("xor", [6], 2, **SMALL)
    runs = run_imp(cfgs, 3, store=tmp_path, progress=False)
    st = RunStore(tmp_path)
    full = [st.metrics(r) for r in runs]
    # simulate a run killed while writing level 2 and before level 3
    shutil.rmtree(runs[0] / "level_003")
    shutil.rmtree(runs[0] / "level_002")
    (runs[0] / "level_002.abc.tmp").mkdir()
    st.drop_state(runs[1], 3)  # untouched run: its finished levels are not retrained
    mtime = (runs[1] / "level_003" / "metrics.json").stat().st_mtime_ns
    run_imp(cfgs, 3, store=tmp_path, progress=False)
    assert st.levels(runs[0]) == [0, 1, 2, 3]
    # retrained in a smaller bank: equal up to float rounding (summation order)
    assert [m["test_loss"] for m in st.metrics(runs[0])] == pytest.approx([m["test_loss"] for m in full[0]], rel=1e-5)
    assert [m["counted"] for m in st.metrics(runs[0])] == [m["counted"] for m in full[0]]
    assert (runs[1] / "level_003" / "metrics.json").stat().st_mtime_ns == mtime


def test_sweep_shares_levels_across_requests(tmp_path):
    a = Sweep("linear", [3, 6], [6], 1, 2, config=SMALL)
    b = Sweep("linear", [], [6], 1, 3, config=SMALL)
    a.run(tmp_path, progress=False)
    runs = b.run(tmp_path, progress=False)
    st = RunStore(tmp_path)
    assert st.levels(runs[0]) == [0, 1, 2, 3]
    rows = mean_rows(trajectories(tmp_path, a.configs()))
    assert [r["width"] for r in dense_curve(rows)] == [3, 6]
    s = summarise(rows, [6], "paper", effective_noise(0.2, 2))
    assert s[0]["rule"] == "paper" and s[0]["full_params"] == 612


def test_rewinding_to_a_step(tmp_path):
    cfg = imp_config("xor", 5, data=dict(n_train=256, n_test=100), train=dict(epochs=2, batch_size=64), rewind_step=3)
    run, = run_imp([cfg], 1, store=tmp_path, progress=False)
    st = RunStore(tmp_path)
    assert [m["steps"] for m in st.metrics(run)] == [8 - 3, 8 - 3]
    init = st.load(run, "init.pt")
    fresh = make_model("fcn2", 5, 100, 2, seed=0)
    assert init["layers.0.weight"].shape == fresh.layers[0].weight.shape


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("call,message", [
    (lambda: imp_config("imagenet", 10), "unknown dataset 'imagenet'"),
    (lambda: imp_config("xor", 10, arch="resnet"), "unknown architecture 'resnet'"),
    (lambda: imp_config("xor", -4), "width must be an integer >= 1"),
    (lambda: imp_config("xor", 4, data=dict(noise=1.0)), "noise must be a number in [0, 1)"),
    (lambda: imp_config("xor", 4, data=dict(noise=-0.1)), "noise must be a number in [0, 1)"),
    (lambda: imp_config("xor", 4, data=dict(sigmaa=1)), "unknown data parameter(s) ['sigmaa']"),
    (lambda: imp_config("xor", 4, train=dict(lr=0)), "lr must be"),
    (lambda: make_dataset("mnist", root="/nonexistent/data"), "MNIST not found under /nonexistent/data"),
    (lambda: run_imp([imp_config("xor", 4)], -1, progress=False), "levels must be an integer >= 0"),
    (lambda: best_pruned([dict(level=0, train_error=0.1, test_error=0.2, counted=5)], "mode"), "unknown rule 'mode'"),
])
def test_bad_input_is_refused_with_a_clear_error(call, message):
    with pytest.raises(ConfigError, match=None) as e:
        call()
    assert message in str(e.value)


def test_compacted_bank_across_datasets_matches_the_loop():
    from lottery_nb.training import Bank
    g = make_generator(4)
    xs = [torch.randn(192, 30, generator=g) for _ in range(2)]
    ys = [torch.randint(2, (192,), generator=g) for _ in range(2)]

    def pruned(seed):
        m = make_model("fcn3", 16, 30, 2, seed=seed)
        mk = ones_masks(prunable(m))
        for _ in range(9):
            mk = prune_masks(prunable(m), mk, 0.2)
        return m, mk

    (a, ma), (b, mb) = [list(zip(*[pruned(s) for s in range(4)])) for _ in range(2)]
    ids, seeds = [0, 1, 0, 1], [7, 7, 8, 8]
    bank = Bank(a, ma, list(zip(ids, seeds)), compact=True)
    assert sum(len(al[1]) for al in bank.alive) < 4 * 100 / 2  # dead units dropped: most of the second layer
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.1, momentum=0.9)
    info = train_models(list(a), list(ma), xs, ys, cfg, seeds, data_ids=ids)
    train_models(list(b), list(mb), xs, ys, cfg, seeds, data_ids=ids, engine="loop")
    assert info["banks"] == 1
    worst = max((p.state_dict()[k] - q.state_dict()[k]).abs().max().item() for p, q in zip(a, b) for k in p.state_dict())
    assert worst < 1e-5, worst


def test_data_order_does_not_depend_on_bankmates():
    g = make_generator(5)
    x, y = torch.randn(128, 10, generator=g), torch.randint(2, (128,), generator=g)
    cfg = TrainConfig(epochs=2, batch_size=16)
    alone = make_model("fcn2", 4, 10, 2, seed=1)
    train_models([alone], [None], x, y, cfg, [99])
    crowd = [make_model("fcn2", 6, 10, 2, seed=2), make_model("fcn2", 4, 10, 2, seed=1), make_model("fcn2", 3, 10, 2, seed=3)]
    train_models(crowd, [None] * 3, x, y, cfg, [12345, 99, 7])
    assert torch.equal(alone.layers[0].weight, crowd[1].layers[0].weight)
