"""A trajectory's stored numbers are a function of its configuration alone: the same bits whether its models trained
alone, in any bank, in any order of requests, or resumed after a stop between levels."""
import pytest
import torch

from conftest import assert_same_results, stored_results
from lottery_nb.core import make_generator
from lottery_nb.imp import grid_configs, imp_config, run_imp
from lottery_nb.models import make_model, prunable
from lottery_nb.pruning import ones_masks, prune_masks
from lottery_nb.store import RunStore
from lottery_nb.training import TrainConfig, predict, train_models


def test_batched_products_do_not_depend_on_the_batch():
    "What the bank relies on: a product in a batch of two or more equals the single-threaded product."
    g = make_generator(0)
    threads = torch.get_num_threads()
    for B, K, N in [(128, 784, 100), (128, 100, 784), (128, 1000, 1000), (64, 16, 2), (8192, 784, 16)]:
        x, w = torch.randn(1, B, K, generator=g), torch.randn(1, K, N, generator=g)
        torch.set_num_threads(1)
        try: ref = torch.bmm(x, w)[0]
        finally: torch.set_num_threads(threads)
        for G in (2, 3, 8):
            X, W = torch.randn(G, B, K, generator=g), torch.randn(G, K, N, generator=g)
            X[G // 2], W[G // 2] = x[0], w[0]
            assert torch.equal(torch.bmm(X, W)[G // 2], ref), (B, K, N, G)
        assert torch.equal(torch.bmm(x.expand(2, B, K), torch.cat([w, w]))[1], ref), (B, K, N)


def _model(arch, width, seed, levels):
    m = make_model(arch, width, 40, 3, seed=seed)
    mk = ones_masks(prunable(m))
    for _ in range(levels): mk = prune_masks(prunable(m), mk, 0.2)
    return m, mk


CFGS = [TrainConfig(epochs=2, batch_size=48, lr=0.05),
        TrainConfig(epochs=2, batch_size=48, lr=0.05, momentum=0.9, weight_decay=1e-4, milestones=(1,))]


@pytest.mark.parametrize("cfg", CFGS, ids=["plain", "momentum+decay"])
@pytest.mark.parametrize("arch,width,levels", [("fcn2", 300, 0), ("fcn2", 300, 7), ("fcn3", 60, 5), ("fcn2", 9, 2)])
def test_a_model_trains_to_the_same_bits_alone_and_in_any_bank(cfg, arch, width, levels):
    g = make_generator(1)
    xs = [torch.randn(500, 40, generator=g) for _ in range(2)]
    ys = [torch.randint(3, (500,), generator=g) for _ in range(2)]
    alone, mk = _model(arch, width, 1, levels)
    train_models([alone], [mk], xs, ys, cfg, [7], data_ids=[0])
    crowds = [  # (other models as (arch, width, seed, levels), their data ids and order seeds, where ours goes)
        ([("fcn2", width, 2, levels), ("fcn3", 30, 3, 1)], [1, 0], [7, 8], 0),
        ([("fcn2", width + 1, 4, levels), (arch, width, 5, levels), ("fcn2", 2 * width, 6, 0)], [0, 0, 1], [7, 7, 7], 3),
        ([(arch, width, 8, levels + 1)] * 5, [0, 1, 0, 1, 0], [1, 2, 3, 4, 5], 2),
    ]
    for others, ids, seeds, at in crowds:
        models = [_model(*o) for o in others]
        models.insert(at, _model(arch, width, 1, levels))
        ids, seeds = ids[:at] + [0] + ids[at:], seeds[:at] + [7] + seeds[at:]
        train_models([m for m, _ in models], [k for _, k in models], xs, ys, cfg, seeds, data_ids=ids)
        ours = models[at][0]
        for k, v in alone.state_dict().items(): assert torch.equal(ours.state_dict()[k], v), (k, at)
        logits = predict([m for m, _ in models], xs[1])
        assert torch.equal(logits[at], predict([alone], xs[1])[0])


def test_stored_results_do_not_depend_on_what_else_was_requested(tmp_path):
    kw = dict(data=dict(n_train=600, n_test=200), train=dict(epochs=4))
    mine = imp_config("xor", 48, 1, **kw)
    others = grid_configs("xor", [8, 48, 200], 2, **kw) + grid_configs("linear", [48], 1, **kw)
    others = [c for c in others if c != mine]
    alone = RunStore(tmp_path / "alone")
    run_imp([mine], 6, alone.root, progress=False)
    crowd = RunStore(tmp_path / "crowd")
    run_imp(others + [mine], 6, crowd.root, progress=False)
    staged = RunStore(tmp_path / "staged")  # other trajectories first, ours joins late, stops twice and resumes
    run_imp(others[:3], 4, staged.root, progress=False)
    run_imp([mine] + others[3:], 2, staged.root, progress=False)
    run_imp(others + [mine], [6] * len(others) + [4], staged.root, progress=False)
    run_imp([mine], 6, staged.root, progress=False)
    a = stored_results(alone.root)
    assert {level for _, level in a} == set(range(7))
    for store in (crowd, staged): assert_same_results(a, stored_results(store.root))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("batch", [33, 7])
def test_ten_classes_and_odd_batches_train_to_the_same_bits_in_any_place_of_a_stack(momentum, batch):
    "A member whose outputs start off a 64-byte boundary (10 classes, batches of 33) is rounded as when alone."
    g = make_generator(2)
    x, y = torch.randn(300, 784, generator=g), torch.randint(10, (300,), generator=g)
    cfg = TrainConfig(epochs=2, batch_size=batch, lr=0.1, momentum=momentum)
    def model(w, seed): return make_model('fcn3', w, 784, 10, seed=seed)
    alone = model(5, 1)
    train_models([alone], [None], x, y, cfg, [7])
    for widths in ([3, 5], [3, 4, 5], [5, 3]):
        models = [model(w, 1 if w == 5 else w) for w in widths]
        train_models(models, [None] * len(models), x, y, cfg, [7] * len(models))
        ours = models[widths.index(5)]
        for k, v in alone.state_dict().items(): assert torch.equal(ours.state_dict()[k], v), (widths, k)
        assert torch.equal(predict([ours], x)[0], predict([alone], x)[0]), widths
