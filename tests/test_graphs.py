"""Captured and concurrent training (training.graphs) on a CPU: they fall back to the reference trainer cleanly, so
they equal it exactly; the switches that choose them; the split augmentation they need. The bitwise checks on a GPU
are `lottery-nb bench --gpu`'s. About 1 minute."""
import json
import subprocess
import sys

import torch

from conftest import ROOT
from lottery_nb.core import make_generator
from lottery_nb.data import CIFAR_BLACK, CropFlip, crop_flip
from lottery_nb.models import make_model, prunable
from lottery_nb.pruning import ones_masks, prune_masks
from lottery_nb.training import (CAPTURE, TrainConfig, capturable, capture_default, train_captured, train_concurrent,
                                 train_model, train_models)

CFG = TrainConfig(epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-4, milestones=(1,))


def _data(n=40, seed=0):
    g = make_generator(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def _net(seed=0): return make_model('resnet20', 1, 3072, 10, seed=seed)


def _masks(net):
    return prune_masks(prunable(net), ones_masks(prunable(net)), 0.5)


def _same(a, b): return all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values()))


def test_not_capturable_on_a_cpu_compiled_or_with_an_unsplit_augmentation():
    net = _net()
    assert not capturable(net, CFG, CropFlip())
    assert not capturable(net, TrainConfig(compile='default'))
    assert not capturable(net, CFG, lambda x, seed: x)  # no draw/apply: cannot be recorded


def test_captured_falls_back_to_the_reference_trainer_bit_for_bit():
    x, y = _data()
    ref, cap = _net(), _net()
    a = train_model(ref, _masks(ref), x, y, CFG, 3, augment=CropFlip(fill=CIFAR_BLACK))
    b = train_captured(cap, _masks(cap), x, y, CFG, 3, augment=CropFlip(fill=CIFAR_BLACK))
    assert a['steps'] == b['steps'] == 6 and _same(ref, cap)


def test_concurrent_equals_training_each_model_alone():
    (x0, y0), (x1, y1) = _data(40, 0), _data(24, 1)
    alone = [_net(s) for s in range(3)]
    ids, augs = [0, 1, 0], [CropFlip(fill=CIFAR_BLACK), None]
    for s, m in enumerate(alone):
        train_model(m, None, [x0, x1][ids[s]], [y0, y1][ids[s]], CFG, s, 1, None, augs[ids[s]])
    together = [_net(s) for s in range(3)]
    st = train_concurrent(together, [None] * 3, [x0, x1], [y0, y1], CFG, [0, 1, 2], 1, None, ids, augs)
    assert st['steps'] == 5 + 3 + 5 and all(_same(p, q) for p, q in zip(alone, together))


def test_train_models_capture_switch_changes_nothing_on_a_cpu(monkeypatch):
    x, y = _data()
    runs = {}
    for how in ('off', 'on', 'env'):
        monkeypatch.setenv(CAPTURE, '1' if how == 'env' else '0')
        assert capture_default() == (how == 'env')
        ms = [_net(s) for s in range(2)]
        train_models(ms, [None, None], x, y, CFG, [0, 1], capture={'off': False, 'on': True, 'env': None}[how])
        runs[how] = ms
    assert all(_same(a, b) for how in ('on', 'env') for a, b in zip(runs['off'], runs[how]))


def test_crop_flip_splits_into_draw_and_apply():
    x = torch.rand(8, 3, 32, 32)
    flips = CropFlip(fill=CIFAR_BLACK)
    dy, dx, flip = flips.draw(8, 5)
    assert dy.device.type == 'cpu' and dy.shape == dx.shape == flip.shape == (8,) and flip.dtype == torch.bool
    assert torch.equal(flips.apply(x, dy, dx, flip), crop_flip(x, seed=5, fill=CIFAR_BLACK))
    assert torch.equal(flips(x, 5), crop_flip(x, seed=5, fill=CIFAR_BLACK))


def test_bench_gpu_quick_mode_runs_every_row_and_saves_json(tmp_path):
    path = tmp_path / 'bench.json'
    code = ("from lottery_nb.cli import main; "
            f"raise SystemExit(main(['bench', '--gpu', '--quick', '--device', 'cpu', '--json', {str(path)!r}]))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(path.read_text())
    rows = ('card', 'mnist', 'resnet', 'bitwise', 'cifar', 'flops')
    assert all(res[k]['ok'] for k in rows), {k: res[k].get('error') for k in rows}
    assert res['bitwise']['all_equal'] and '(bitwise)' in r.stdout and '(cifar)' in r.stdout
