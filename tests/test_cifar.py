"""CIFAR-side pieces: architecture counts and the published count sequences, the CIFAR-10 loader on data the tests
write (and on the real subset when `LOTTERY_NB_DATA` holds it), class removal, on-device augmentation."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_same_results, stored_results
from lottery_nb.core import ConfigError
from lottery_nb.data import CIFAR_BLACK, crop_flip, cifar_dataset, make_dataset, read_cifar, write_cifar
from lottery_nb.imp import build_dataset, build_model, imp_config, next_count, order_seed, run_imp
from lottery_nb.models import arch_counts, make_model, output_layer, prunable
from lottery_nb.pruning import count_schedule, ones_masks, prune_masks
from lottery_nb.store import RunStore
from lottery_nb.training import TrainConfig, train_model, train_models
from lottery_nb.training.fused import train_fused

RESNET = lambda w: 1054 * w * w + 67 * w
CIFAR_LEVELS = {2: 2, 5: 7, 8: 10, 11: 12, 15: 16, 20: 18, 40: 24, 60: 27, 80: 30, 100: 31, 120: 35, 150: 38}


@pytest.mark.parametrize("arch,width,counted", [
    ("resnet20", w, RESNET(w)) for w in CIFAR_LEVELS] + [
    ("vgg16", 64, 14_715_584), ("vgg16", 8, 3591 * 64 + 107 * 8), ("densenet121", 24, 3_868_176)])
def test_counted_weights_of_the_cifar_architectures(arch, width, counted):
    assert arch_counts(arch, width, 3072, 10)["counted"] == counted


def test_published_counts_and_count_sequences():
    assert [RESNET(w) for w in (11, 15, 40, 60, 100, 150)] == [128_271, 238_155, 1_689_080, 3_798_420, 10_546_700,
                                                               23_725_050]
    assert count_schedule(RESNET(80), 23)[-1] == 39_843  # Fig. 4b's ResNet
    assert count_schedule(3_868_176, 20)[-1] == 44_590  # Fig. 4b's DenseNet: growth rate 24, level 20
    assert count_schedule(RESNET(40), 20)[-1] == 19_467  # Table 1 prints 19,647
    assert count_schedule(RESNET(20), 18)[:1] + count_schedule(RESNET(20), 18)[-1:] == [422_940, 7_612]
    vgg, out = 14_715_584, arch_counts("vgg16", 64, 3072, 10)["output"]
    for _ in range(26): vgg = next_count(vgg, out)  # VGG's output layer is protected
    assert (out, vgg) == (5_120, 44_468)


def test_class_removal_renumbers_labels_and_sizes_the_output(tmp_path):
    g = np.random.default_rng(0)
    x = g.integers(0, 256, (200, 3, 32, 32), dtype=np.uint8)
    y = np.arange(200) % 10
    write_cifar(tmp_path, x, y, x[:50], y[:50])
    ds = cifar_dataset(tmp_path, noise=0.0, removed=[9, 0, 4])
    assert ds.num_classes == 7 and ds.info["classes"] == [1, 2, 3, 5, 6, 7, 8]
    assert sorted(set(ds.y_train.tolist())) == list(range(7)) and len(ds.y_train) == 140
    assert (ds.y_train == ds.y_train_clean).all()
    first = torch.from_numpy(x[1]).float() / 255  # image 0 is of class 0, removed
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(ds.x_train[0], (first - mean[:, None, None]) / std[:, None, None])
    model = make_model("resnet20", 2, ds.input_dim, ds.num_classes)
    assert model(ds.x_train[:3]).shape == (3, 7)
    for bad in ([10], [1, 1], list(range(9)), ["a"]):
        with pytest.raises(ConfigError, match="removed"): cifar_dataset(tmp_path, removed=bad)


def test_missing_cifar_names_the_files_and_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"expected data_batch_1, .*test_batch in .*cifar-10-batches-py"):
        make_dataset("cifar10", root=tmp_path)


def test_real_cifar_subset_loads_through_the_files_it_becomes(tmp_path):
    root = os.environ.get("LOTTERY_NB_DATA")
    sub = Path(root or "/nonexistent") / "cifar10_subset"
    if not (sub / "cifar10_train_first4000.npz").exists(): pytest.skip("no CIFAR-10 subset under LOTTERY_NB_DATA")
    tr, te = (np.load(sub / f) for f in ("cifar10_train_first4000.npz", "cifar10_test_first20.npz"))
    chw = lambda a: a.transpose(0, 3, 1, 2)  # the subset stores (n, 32, 32, 3)
    write_cifar(tmp_path, chw(tr["x"]), tr["y"], chw(te["x"]), te["y"])
    xtr, ytr, xte, _ = read_cifar(tmp_path)
    assert xtr.shape == (4000, 3, 32, 32) and xte.shape == (20, 3, 32, 32)
    assert np.bincount(ytr).tolist() == np.bincount(tr["y"]).tolist()
    ds = cifar_dataset(tmp_path)
    # ImageNet normalisation of natural images: channel means near 0, spreads near 1
    assert ds.x_train.mean((0, 2, 3)).abs().max() < 0.5 and (ds.x_train.std((0, 2, 3)) - 1).abs().max() < 0.3
    assert abs(float((ds.y_train != ds.y_train_clean).float().mean()) - 0.18) < 0.03


def test_augmentation_crops_flips_and_pads_black_per_image_from_its_seed():
    n = 256
    x = torch.arange(n * 3 * 32 * 32, dtype=torch.float32).reshape(n, 3, 32, 32)
    out = crop_flip(x, seed=7, fill=CIFAR_BLACK)
    assert out.shape == x.shape and torch.equal(out, crop_flip(x, seed=7, fill=CIFAR_BLACK))
    assert not torch.equal(out, crop_flip(x, seed=8, fill=CIFAR_BLACK))
    pad = torch.empty(n, 3, 40, 40)
    pad[:] = CIFAR_BLACK.view(1, 3, 1, 1)
    pad[:, :, 4:36, 4:36] = x
    seen, flips = set(), 0
    for i in range(n):  # each output is one 32×32 window of its padded image, maybe mirrored
        window = lambda dy, dx, f: pad[i, :, dy:dy + 32, dx:dx + 32].flip(2) if f else pad[i, :, dy:dy + 32, dx:dx + 32]
        hits = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (0, 1) if torch.equal(out[i], window(dy, dx, f))]
        assert len(hits) == 1
        seen.add(hits[0][:2])
        flips += hits[0][2]
    assert len(seen) > 40 and 0.35 < flips / n < 0.65  # offsets and flips differ per image
    black = (out == CIFAR_BLACK.view(1, 3, 1, 1)).all(1)  # padding is black in every channel
    assert black.any() and not (out[:, :, 4:28, 4:28] == CIFAR_BLACK.view(1, 3, 1, 1)).all(1).any()


@pytest.mark.parametrize("arch,width", [("resnet20", 2), ("vgg16", 2), ("densenet121", 2)])
def test_cifar_models_train_with_masks_holding(arch, width):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 32, 32, generator=g), torch.randint(10, (64,), generator=g)
    model = make_model(arch, width, 3072, 10, seed=1)
    masks = prune_masks(prunable(model), ones_masks(prunable(model)), 0.5)
    train_model(model, masks, x, y, TrainConfig(epochs=2, batch_size=16, weight_decay=1e-4), seed=0)
    for name, w in prunable(model).items():
        assert (w[masks[name] == 0] == 0).all(), name


def test_cifar_imp_rewinds_every_level_to_the_early_state(tmp_path):
    g = np.random.default_rng(1)
    x, y = g.integers(0, 256, (64, 3, 32, 32), dtype=np.uint8), np.arange(64) % 10
    write_cifar(tmp_path / "data", x, y, x[:20], y[:20])
    cfg = imp_config("cifar10", 2, data=dict(n_train=64), train=dict(epochs=16, batch_size=16))
    assert (cfg.prune.rewind_step, cfg.train.milestones, cfg.prune.output) == (4, (8, 12), True)
    store = RunStore(tmp_path / "store")
    (run,) = run_imp([cfg], 2, store, data_root=tmp_path / "data", progress=False)
    ds = build_dataset(cfg, tmp_path / "data")
    tc = cfg.train
    # the rewind point: the initial model trained for epoch 1 of 16 (4 steps), with crops and flips
    model = build_model(cfg, ds, torch.device("cpu"))
    train_model(model, None, ds.x_train, ds.y_train, tc, order_seed(cfg), 0, 4, ds.augment)
    init = store.load(run, "init.pt")
    assert all(torch.equal(init[k], v) for k, v in model.state_dict().items())
    # level 1: level 0's trained weights pruned globally (the output layer too), survivors reset to that state,
    # trained from step 4 to the end with a fresh optimizer
    lv0, lv1 = store.state(run, 0), store.state(run, 1)
    masks = {k: v.float() for k, v in lv1["masks"].items()}
    assert sum(int(m.sum()) for m in masks.values()) == count_schedule(RESNET(2), 1)[1]
    assert masks["fc.weight"].sum() < masks["fc.weight"].numel()
    kept = torch.cat([lv0["model"][k][masks[k] > 0].abs() for k in masks])
    gone = torch.cat([lv0["model"][k][masks[k] == 0].abs() for k in masks])
    assert gone.max() <= kept.min()
    model.load_state_dict(init)
    train_model(model, masks, ds.x_train, ds.y_train, tc, order_seed(cfg), 4, None, ds.augment)
    assert all(torch.allclose(lv1["model"][k], v) for k, v in model.state_dict().items())
    assert all((lv1["model"][k][masks[k] == 0] == 0).all() for k in masks)


def _trained_pair(arch, width, dim, dtype, steps_cfg, n=64):
    g = torch.Generator().manual_seed(3)
    shape = (n, 3, 32, 32) if dim == 3072 else (n, dim)
    xs = [torch.randn(*shape, generator=g, dtype=dtype) for _ in range(2)]
    ys = [torch.randint(10, (n,), generator=g) for _ in range(2)]
    make = lambda: [make_model(arch, width, dim, 10, seed=s).to(dtype) for s in range(3)]
    fused, alone = make(), make()
    masks = [None] + [prune_masks(prunable(m), ones_masks(prunable(m)), 0.3 * i) for i, m in enumerate(fused) if i]
    shift = lambda x, seed: x.roll(seed % 5, dims=-1)  # a seeded stand-in for crops and flips
    ids, seeds, aug = [0, 1, 1], [4, 5, 6], [shift if dim == 3072 else None, None]
    train_fused(fused, masks, xs, ys, steps_cfg, seeds, data_ids=ids, augments=aug)
    for m, mk, d, s in zip(alone, masks, ids, seeds):
        train_model(m, mk, xs[d], ys[d], steps_cfg, s, augment=aug[d])
    diff = max((a.double() - b.double()).abs().max().item() for f, l in zip(fused, alone)
               for a, b in zip(f.state_dict().values(), l.state_dict().values()))
    return fused, masks, diff


@pytest.mark.parametrize("arch,width,dim", [("resnet20", 2, 3072), ("vgg16", 2, 3072), ("densenet121", 2, 3072),
                                            ("resnet6", 3, 784)])
def test_fused_training_is_the_reference_arithmetic(arch, width, dim):
    cfg = TrainConfig(epochs=2, batch_size=16, momentum=0.9, weight_decay=1e-4, milestones=(1,))
    fused, masks, diff = _trained_pair(arch, width, dim, torch.float64, cfg)
    assert diff < 1e-9, diff  # float64: the same arithmetic in other kernels
    for m, mk in zip(fused[1:], masks[1:]):
        assert all((w[mk[k] == 0] == 0).all() for k, w in prunable(m).items())
    _, _, diff32 = _trained_pair(arch, width, dim, torch.float32, TrainConfig(epochs=1, batch_size=64))
    assert diff32 < 1e-3, diff32  # float32, one step at rate 0.1: rounding only (DenseNet-121: 2e-4)


def test_the_fused_engine_groups_models_by_shape_and_the_driver_refuses_it(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 32, 32, generator=g), torch.randint(10, (32,), generator=g)
    models = [make_model("resnet20", w, 3072, 10, seed=s) for w, s in ((2, 0), (2, 1), (3, 0), (2, 2))]
    st = train_models(models, [None] * 4, x, y, TrainConfig(epochs=1, batch_size=16), [0, 1, 0, 2], engine="fused")
    assert st["banks"] == 2  # the three of width 2 as one, the width-3 model alone
    with pytest.raises(ConfigError, match="engine .fused. does not train stored trajectories"):
        run_imp([imp_config("cifar10", 2)], 1, tmp_path, engine="fused")


def test_table1_cifar_rows_as_mended_lie_on_the_count_sequences():
    from lottery_nb.analysis import PAPER_TABLE1
    for w, (full, pruned, _, _) in PAPER_TABLE1["cifar10"].items():
        assert full == RESNET(w) and pruned in count_schedule(full, 40), w
    assert 19_647 not in count_schedule(RESNET(40), 40)  # the printed W = 40 count, mended to 19,467


def test_fused_trajectories_are_a_function_of_their_configuration(tmp_path):
    g = np.random.default_rng(2)
    x, y = g.integers(0, 256, (48, 3, 32, 32), dtype=np.uint8), np.arange(48) % 10
    write_cifar(tmp_path / "data", x, y, x[:16], y[:16])
    cfg = lambda r: imp_config("cifar10", 2, replicate=r, data=dict(n_train=48), train=dict(epochs=16, batch_size=16),
                               fuse=2)
    go = lambda store, rs, levels: run_imp([cfg(r) for r in rs], levels, tmp_path / store, data_root=tmp_path / "data",
                                           progress=False)
    assert len(go("a", [0], 2)) == 1  # the runs asked for come back; the group's other member is stored too
    go("b", [1], 2)
    go("c", [0, 1], 1)
    go("c", [1], 2)
    a, b, c = (stored_results(tmp_path / s) for s in "abc")
    assert len(a) == len(b) == len(c) == 6  # two replicates × levels 0–2, whoever was asked for, in whatever steps
    assert_same_results(a, b)
    assert_same_results(a, c)
    assert "fuse" not in imp_config("cifar10", 2).to_dict()
    # a member whose records went missing puts the group out of step, and the driver says so
    store = RunStore(tmp_path / "a")
    run1 = store.find(cfg(1))
    shutil.rmtree(store.level_dir(run1, 2))
    with pytest.raises(ConfigError, match="incomplete or out of step"):
        go("a", [0], 3)


def test_bf16_is_an_option_of_conv_configurations_only():
    assert "precision" not in TrainConfig().to_dict()  # float32 configurations keep the form they were stored in
    assert "precision" not in imp_config("cifar10", 2).to_dict()["train"]
    bf = imp_config("cifar10", 2, train=dict(precision="bf16"))
    assert bf.to_dict()["train"]["precision"] == "bf16" and bf.train.precision == "bf16"
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        imp_config("cifar10", 2, train=dict(precision="fp16"))
    with pytest.raises(ConfigError, match="precision 'bf16': FCNs train in the bank"):
        imp_config("mnist", 10, train=dict(precision="bf16"))
    fcn = make_model("fcn2", 4, 8, 2)
    x, y = torch.randn(16, 8), torch.arange(16) % 2
    with pytest.raises(ConfigError, match="the bank trains FCNs in float32 only"):
        train_models([fcn], [None], x, y, TrainConfig(epochs=1, precision="bf16"), [0])


def _stand_in(n=64):
    "`n` random images with cycling labels."
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(n) % 10


def _one_step_then_on(batch_size, **kernels):
    "A half-pruned ResNet-20 of width 2 on stand-in images: masks and weights after one step; the masks hold for two epochs."
    x, y = _stand_in()
    m = make_model("resnet20", 2, 3072, 10, seed=0)
    mk = prune_masks(prunable(m), ones_masks(prunable(m)), 0.5)
    cfg = TrainConfig(epochs=2, batch_size=batch_size, momentum=0.9, weight_decay=1e-4, **kernels)
    train_models([m], [mk], x, y, cfg, [0], engine="loop", stop_step=1)
    first = {k: w.detach().clone() for k, w in prunable(m).items()}
    train_models([m], [mk], x, y, cfg, [0], engine="loop", start_step=1)
    assert all(bool((w[~mk[k].bool()] == 0).all()) for k, w in prunable(m).items())
    assert all(bool(torch.isfinite(w).all()) for w in m.parameters())
    return m, mk, first


def test_bf16_training_keeps_masks_and_rounds_near_float32_where_it_can():
    start = prunable(make_model("resnet20", 2, 3072, 10, seed=0))
    moved = {}
    for p in ("fp32", "bf16"):
        m, mk, first = _one_step_then_on(16, precision=p)
        out = output_layer(m)
        moved[p] = first[out] - start[out].detach() * mk[out]
    # after one step the output layer, whose gradient involves no long sums, agrees to bf16's rounding
    assert 0 < float((moved["fp32"] - moved["bf16"]).norm() / moved["fp32"].norm()) < 0.05
    # torch.func.vmap leaves convolutions in float32 under autocast: the fused trainer refuses bf16 before any compute
    x, y = _stand_in()
    models = [make_model("resnet20", 2, 3072, 10, seed=s) for s in (0, 1)]
    bf = TrainConfig(epochs=1, batch_size=16, precision="bf16")
    with pytest.raises(ConfigError, match="fused training is float32 only"):
        train_models(models, [None, None], x, y, bf, [0, 1], engine="fused")
    with pytest.raises(ConfigError, match=r"fused training \(fuse 2\) is float32 only"):
        imp_config("cifar10", 2, train=dict(precision="bf16"), fuse=2)


def test_conv_round_costs_follow_activations_as_well_as_macs():
    from lottery_nb.imp import round_work
    def level(arch, width):
        ac = arch_counts(arch, width, 3072, 10)
        return round_work([dict(sizes=None, macs=ac["macs"], acts=ac["acts"], steps=100, batch=128, examples=1000)])
    dense, resnet = arch_counts("densenet121", 4, 3072, 10), arch_counts("resnet20", 16, 3072, 10)
    assert resnet["macs"] > 2.5 * dense["macs"]  # ResNet-20 W=16 multiplies more...
    assert level("densenet121", 4) > 1.5 * level("resnet20", 16)  # ...but DenseNet's memory traffic costs more
    assert level("resnet20", 2) < level("resnet20", 8) < level("resnet20", 32)
    # a 2-core CPU measured 0.24 s per step at W=16 (batch 128) and 1.0 ms per evaluated example
    assert 20 < level("resnet20", 16) < 40


def test_compile_is_a_kernel_option_of_conv_configurations_only():
    assert "compile" not in imp_config("cifar10", 2).to_dict()["train"]  # eager configurations keep their stored form
    c = imp_config("cifar10", 2, train=dict(compile="reduce-overhead"))
    assert c.to_dict()["train"]["compile"] == "reduce-overhead" and c.train.kernels() == {"compile": "reduce-overhead"}
    assert c.label == imp_config("cifar10", 2).label  # the label names the model; the store key differs
    with pytest.raises(ConfigError, match="unknown compile 'max'"):
        imp_config("cifar10", 2, train=dict(compile="max"))
    with pytest.raises(ConfigError, match="compile 'default': FCNs train in the bank"):
        imp_config("mnist", 10, train=dict(compile="default"))
    with pytest.raises(ConfigError, match=r"precision 'bf16', compile 'default': fused training \(fuse 2\)"):
        imp_config("cifar10", 2, train=dict(precision="bf16", compile="default"), fuse=2)
    x, y = torch.randn(16, 8), torch.arange(16) % 2
    with pytest.raises(ConfigError, match="the bank trains FCNs in float32 only, uncompiled"):
        train_models([make_model("fcn2", 4, 8, 2)], [None], x, y, TrainConfig(epochs=1, compile="default"), [0])


@pytest.mark.slow  # about a minute on a 2-core CPU, most of it compiling ResNet-20's passes once
def test_compiled_training_is_eager_arithmetic_with_masks_holding(tmp_path):
    after = {}
    for mode in ("off", "default"):
        _, _, first = _one_step_then_on(32, compile=mode)
        after[mode] = torch.cat([w.flatten() for w in first.values()])
    # one step: the same arithmetic in fused kernels, so float32 rounding only
    assert float((after["default"] - after["off"]).norm() / after["off"].norm()) < 1e-5
    # the bench's row (6) compares modes against eager in whole batches of 128 (the 64 left over are dropped)
    from lottery_nb.bench.conv import _compile_row
    x, y = _stand_in(320)
    lines = []
    row = _compile_row(2, x, y, x[:32], y[:32], 1, torch.device("cpu"), ("off", "default"), lines.append)
    assert row["off"]["from_eager"] == 0 and 0 < row["default"]["from_eager"] < 1e-5
    assert len(lines) == 2 and lines[1].lstrip().startswith("default") and all(0 <= r["error"] <= 1 for r in row.values())
    # the IMP driver trains a compiled configuration under its own store key; evaluation stays eager
    xs, ys = np.random.default_rng(4).integers(0, 256, (64, 3, 32, 32), dtype=np.uint8), np.arange(64) % 10
    write_cifar(tmp_path / "data", xs, ys, xs[:16], ys[:16])
    cfgs = [imp_config("cifar10", 2, data=dict(n_train=64), train=dict(epochs=2, batch_size=32, compile=k))
            for k in ("off", "default")]
    runs = run_imp(cfgs, 1, tmp_path / "store", data_root=tmp_path / "data", progress=False)
    assert runs[0] != runs[1]
    store = RunStore(tmp_path / "store")
    errs = [[store.level_metrics(r, k)["test_error"] for k in (0, 1)] for r in runs]
    assert all(0 <= e <= 1 for es in errs for e in es)


def test_a_rewind_point_past_the_end_of_training_is_refused_before_training(tmp_path):
    # CIFAR-10's default rewind point (epoch 1 of 16 here) assumes its 50,000 images: 391 steps
    x = np.zeros((64, 3, 32, 32), np.uint8)
    write_cifar(tmp_path / "data", x, np.arange(64) % 10, x[:16], np.arange(16) % 10)
    cfg = imp_config("cifar10", 2, train=dict(epochs=16))
    assert cfg.prune.rewind_step == 391
    with pytest.raises(ConfigError, match=r"rewind_step 391 of cifar10_resnet20_w2_r0 is not before the end .*16 steps on 64"):
        run_imp([cfg], 1, tmp_path / "store", data_root=tmp_path / "data", progress=False)
    st = RunStore(tmp_path / "store")
    assert all(st.levels(st.root / name) == [] for name, _ in st.runs())
