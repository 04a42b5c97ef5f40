"""Every configuration keeps its store key and its run folder.

`tests/data/config_hashes.json` holds, as the library computed them before the configuration became typed, the run
folders (readable label and configuration hash) and level targets that every figure notebook trains under its defaults
and under every preset, and the configurations, hashes and folders of a catalogue of `imp_config` calls. The tests recompute them with today's code: a changed hash would orphan
stored results. `python tests/test_config_hashes.py --write` rewrites the file (only for a deliberate change of keys).
"""
import functools
import importlib
import json
import sys
import tempfile
from pathlib import Path

import pytest

from lottery_nb.store import canonical, config_hash, run_name

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / 'tests' / 'data' / 'config_hashes.json'

# imp_config calls covering every dataset, architecture and option of a configuration
RECIPES = [
    dict(dataset='linear', width=4),
    dict(dataset='xor', width=64, replicate=3, data=dict(nu=0.4, n_train=400, n_test=200), train=dict(epochs=5)),
    dict(dataset='linear', width=1, prune_output=False, data=dict(n_train=200, n_test=100), train=dict(epochs=1)),
    dict(dataset='xor', width=5, data=dict(n_train=256, n_test=100), train=dict(epochs=2, batch_size=64), rewind_step=3),
    dict(dataset='linear', width=8, data=dict(sigma=0.2, dim=50, noise=0.1, noise_mode='flip', seed=3, direction_seed=2),
         prune_fraction=0.3, prune_rule='exact', bias_init='default', seed=7),
    dict(dataset='mnist', width=10, data=dict(n_train=2000, n_test=500), train=dict(epochs=5)),
    dict(dataset='mnist', width=100, arch='fcn2'),
    dict(dataset='mnist', width=8, arch='resnet6', train=dict(epochs=40)),
    dict(dataset='mnist', width=8, arch='resnet6', train=dict(epochs=40, momentum=0.5, milestones=[5])),
    dict(dataset='fashion', width=4, arch='resnet6', data=dict(n_train=256, n_test=128), train=dict(epochs=2)),
    dict(dataset='cifar10', width=80),
    dict(dataset='cifar10', width=2, data=dict(n_train=64), train=dict(epochs=16, batch_size=16)),
    dict(dataset='cifar10', width=8, data=dict(n_train=1000, removed=[9], augment=False), train=dict(epochs=32)),
    dict(dataset='cifar10', width=64, arch='vgg16'),
    dict(dataset='cifar10', width=4, arch='densenet121', replicate=1),
    dict(dataset='cifar10', width=4, replicate=3, fuse=2),
    dict(dataset='cifar10', width=2, train=dict(precision='bf16')),
    dict(dataset='cifar10', width=2, train=dict(compile='reduce-overhead')),
    dict(dataset='cifar10', width=2, train=dict(precision='fp32', compile='off'), fuse=1),
    dict(dataset='cifar10', width=2, train=dict(memory_format='channels_last')),
    dict(dataset='cifar10', width=2, train=dict(memory_format='contiguous')),
]


def _as_json(config):
    "The stored JSON form of a configuration, typed or not."
    return json.loads(canonical(config.to_dict() if hasattr(config, 'to_dict') else config))


def _folder(config):
    "The run folder's name of a configuration, typed or not: its readable label, then its hash."
    label = config.label if hasattr(config, 'label') else importlib.import_module('lottery_nb.imp').config_label(config)
    return run_name(_as_json(config), label)


def notebook_trains(path, params):
    "The `[run folder, target]` pairs a figure notebook would train with `params`: `runner.asked`, cells run until then."
    from lottery_nb.runner import asked
    got = asked(path, params)
    assert got, f"{path.name} trained nothing"
    configs, levels, _ = got
    targets = list(levels) if isinstance(levels, (list, tuple)) else [levels] * len(configs)
    return sorted([_folder(c), t] for c, t in zip(configs, targets))


@functools.cache
def figure_cases():
    "`(case name, notebook, parameters)` of every figure under its defaults and every preset and grid point."
    from lottery_nb.runner import expand_grid, figures, load_preset, presets
    out = []
    for name, nb in figures(ROOT).items():
        out.append((f"{name}/defaults", nb, {}))
        for preset in presets():
            spec = load_preset(preset)['figures'].get(name)
            if spec is None: continue
            for point in expand_grid(spec.get('grid')):
                tag = ','.join(f"{k}={v}" for k, v in point.items())
                out.append((f"{name}/{preset}" + (f"[{tag}]" if tag else ''), nb, {**(spec.get('params') or {}), **point}))
    return out


def _fixed(params, tmp):
    "Parameters with the folders pointed into `tmp`."
    return {**params, 'out_dir': str(tmp / 'out'), 'store_dir': str(tmp / 'store')}


def recipe_configs():
    "The stored JSON of every catalogue recipe."
    from lottery_nb.imp import imp_config
    return [_as_json(imp_config(**r)) for r in RECIPES]


@functools.cache
def golden(): return json.loads(GOLDEN.read_text())


def test_recipes_keep_their_hashes():
    want = golden()['recipes']
    assert [r['call'] for r in want] == json.loads(json.dumps(RECIPES))
    from lottery_nb.imp import imp_config
    for r, got in zip(want, recipe_configs()):
        assert got == r['config'], r['call']
        assert config_hash(got) == r['hash'], r['call']
        assert _folder(imp_config(**r['call'])) == r['folder'], r['call']


def test_stored_configurations_read_back_to_their_typed_form():
    from lottery_nb.core import ConfigError
    from lottery_nb.imp import IMPConfig
    for r in golden()['recipes']:
        c = IMPConfig.from_dict(r['config'])
        assert c.to_dict() == r['config'] and config_hash(c.to_dict()) == r['hash'], r['call']
    stored = golden()['recipes'][0]['config']
    with pytest.raises(ConfigError, match=r"unknown configuration parameter\(s\) \['widht'\]"):
        IMPConfig.from_dict({**stored, 'widht': 3})
    with pytest.raises(ConfigError, match="unknown data parameter"):
        IMPConfig.from_dict({**stored, 'data': {**stored['data'], 'removed': []}})  # a mixture removes no classes


@pytest.mark.parametrize('case', [c[0] for c in figure_cases()])
def test_figure_notebooks_train_the_same_configurations(case, tmp_path):
    _, nb, params = next(c for c in figure_cases() if c[0] == case)
    assert notebook_trains(nb, _fixed(params, tmp_path)) == golden()['figures'][case]


def _write():
    "Recompute the golden file with the library as it is now."
    figs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case, nb, params in figure_cases():
            figs[case] = notebook_trains(nb, _fixed(params, Path(tmp)))
    from lottery_nb.imp import imp_config
    recipes = [dict(call=r, config=c, hash=config_hash(c), folder=_folder(imp_config(**r)))
               for r, c in zip(json.loads(json.dumps(RECIPES)), recipe_configs())]
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(dict(recipes=recipes, figures=figs), indent=0, sort_keys=True) + '\n')
    print(f"{GOLDEN}: {len(recipes)} recipes, {len(figs)} figure cases, "
          f"{sum(map(len, figs.values()))} trained configurations")


if __name__ == '__main__' and '--write' in sys.argv: _write()
