"""The lottery-ticket controls: random pruning keeps IMP's counts with other survivors, random re-initialisation keeps
IMP's first mask with other starting weights; both are stored trajectories like any other."""
import json

import torch

from conftest import assert_same_results, stored_results
from lottery_nb.imp import imp_config, run_imp
from lottery_nb.store import RunStore

KW = dict(data=dict(n_train=300, n_test=100), train=dict(epochs=2))


def _levels(root, cfg):
    store = RunStore(root)
    run = store.find(cfg)
    return [(store.level_metrics(run, l), store.state(run, l)) for l in store.levels(run)]


def test_random_pruning_keeps_the_counts_and_draws_other_survivors(tmp_path):
    imp, rnd = (imp_config("xor", 24, control=c, **KW) for c in ("none", "random_pruning"))
    run_imp([imp, rnd], 3, tmp_path, progress=False)
    a, b = _levels(tmp_path, imp), _levels(tmp_path, rnd)
    assert [m["counted"] for m, _ in a] == [m["counted"] for m, _ in b]
    assert a[0][0]["test_error"] == b[0][0]["test_error"]  # the same dense level 0
    assert all(torch.equal(a[0][1]["model"][k], b[0][1]["model"][k]) for k in a[0][1]["model"])
    for (_, sa), (_, sb) in zip(a[1:], b[1:]):
        assert any(not torch.equal(sa["masks"][k], sb["masks"][k]) for k in sa["masks"])


def test_random_reinit_keeps_imps_first_mask_and_trains_from_other_weights(tmp_path):
    imp, ri = (imp_config("xor", 24, control=c, **KW) for c in ("none", "random_reinit"))
    run_imp([imp, ri], 2, tmp_path, progress=False)
    a, b = _levels(tmp_path, imp), _levels(tmp_path, ri)
    assert all(torch.equal(a[1][1]["masks"][k], b[1][1]["masks"][k]) for k in a[1][1]["masks"])
    assert not torch.equal(a[1][1]["model"]["layers.0.weight"], b[1][1]["model"]["layers.0.weight"])
    assert [m["counted"] for m, _ in a] == [m["counted"] for m, _ in b]


def test_a_control_trajectory_resumed_between_levels_gives_the_same_bits(tmp_path):
    cfgs = [imp_config("xor", 24, control=c, **KW) for c in ("random_pruning", "random_reinit")]
    run_imp(cfgs, 3, tmp_path / "once", progress=False)
    run_imp(cfgs, 1, tmp_path / "twice", progress=False)
    run_imp(cfgs, 3, tmp_path / "twice", progress=False)
    assert_same_results(stored_results(tmp_path / "once"), stored_results(tmp_path / "twice"))


def test_the_figure_records_each_replicate_and_a_panel_with_fewer_keeps_its_mean(isolated):
    from lottery_nb.claims import ledger
    from lottery_nb.cli import main
    out = isolated / 'out'
    assert main(['run', 'controls', '--preset', 'smoke', '--set', 'replicates=2', '--set', 'mnist_replicates=1',
                 '--out', str(out), '--store', str(isolated / 'st'), '--no-progress']) == 0
    m = json.loads(next(out.glob('controls_lottery_tickets/*/metrics.json')).read_text())
    parts = m['per_replicate']
    assert len(parts) == 2 and all(len(p['results']) == len(m['results']) for p in parts)
    of = lambda rs, panel: [r for r in rs if r['panel'] == panel]
    for p in parts:  # one MNIST replicate: every part keeps it, the same as the mean
        assert of(p['results'], 'mnist') == of(m['results'], 'mnist')
    mix = [[r for r in p['results'] if r['panel'] != 'mnist'] for p in parts]
    assert mix[0] != mix[1]  # the mixtures' replicates differ
    reps = [r['replicates'] for r in ledger({('controls_lottery_tickets', 'smoke'): m})
            if r['figure'] == 'controls_lottery_tickets']
    assert reps and all(r.split()[0] in ('0/2', '1/2', '2/2') for r in reps)
