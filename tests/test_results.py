"""Reading stored results: figure metrics as tables, trajectories as rows, and nothing written on the way."""
import json
from pathlib import Path

import pandas as pd
import pytest

from lottery_nb.analysis import load_model, mean_rows
from lottery_nb.core import ConfigError
from lottery_nb.imp import Sweep, config_label, imp_config
from lottery_nb.results import (BASE_COLUMNS, figure_runs, flatten_metrics, load_figure, store_summary,
                                trajectories)
from lottery_nb.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ROOT / "outputs"
SMALL = dict(data=dict(n_train=200, n_test=100), train=dict(epochs=1))
LINEAR = Sweep("linear", [2, 4], [4], replicates=1, levels=2, config=SMALL)
XOR = Sweep("xor", [3], [3], replicates=2, levels=1, config=SMALL)
UNSEEN = imp_config("linear", 5, **SMALL)


def listing(path):
    """Every path under `path` with its size and modification time; None if `path` does not exist."""
    path = Path(path)
    if not path.exists():
        return None
    return sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small store: linear widths 2 and 4 (4 pruned to level 2), XOR width 3 (two replicates, level 1)."""
    store = tmp_path_factory.mktemp("trained") / "store"
    LINEAR.run(store, progress=False)
    XOR.run(store, progress=False)
    return store


# --- reading never writes --------------------------------------------------------------------

def test_a_store_on_a_missing_folder_creates_nothing(isolated):
    before = listing(isolated)
    st = RunStore()
    assert st.root == isolated / "store"
    assert st.find(UNSEEN, config_label(UNSEEN)) is None
    assert st.runs() == []
    assert len(trajectories()) == 0
    assert store_summary() == dict(trajectories=0, levels=0, stopped=0, bytes=0)
    with pytest.raises(ConfigError, match="linear_nu0.2_fcn2_w5_r0"):
        load_model(st, UNSEEN, 0, None)
    missing = isolated / "elsewhere" / "store"
    assert len(trajectories(missing)) == 0 and store_summary(missing)["trajectories"] == 0
    assert listing(isolated) == before
    assert not st.root.exists() and not missing.parent.exists()


def test_the_first_write_creates_the_store(isolated):
    st = RunStore()
    run = st.open(UNSEEN, config_label(UNSEEN))
    assert (run / "config.json").exists() and (st.root / "index.tsv").exists()
    assert st.find(UNSEEN, config_label(UNSEEN)) == run
    assert st.open(UNSEEN, config_label(UNSEEN)) == run
    assert len((st.root / "index.tsv").read_text().splitlines()) == 1
    st.write_level(st.root / "by-hand", 0, dict(level=0))  # a level written to a folder not opened first
    assert RunStore.levels(st.root / "by-hand") == [0]


def test_reads_of_unknown_configurations_leave_the_store_untouched(trained):
    before = listing(trained)
    st = RunStore(trained)
    assert st.find(UNSEEN, config_label(UNSEEN)) is None
    assert st.find(LINEAR.configs()[0].to_dict()) is None  # the label is part of the name: bare JSON has none
    assert len(trajectories(trained, LINEAR.configs() + [UNSEEN])) == len(trajectories(trained, LINEAR.configs()))
    assert len(trajectories(trained, configs=[UNSEEN])) == 0
    assert len(trajectories(trained, dataset="mnist")) == 0
    store_summary(trained)
    with pytest.raises(ConfigError, match="no stored run"):
        load_model(trained, UNSEEN, 0, None)
    assert listing(trained) == before


# --- trajectories ----------------------------------------------------------------------------

def test_trajectories_have_one_row_per_stored_level(trained):
    t = trajectories(trained)
    assert list(t.columns[:len(BASE_COLUMNS)]) == list(BASE_COLUMNS)
    assert len(t) == 1 + 3 + 2 * 2
    assert {"counted", "train_error", "test_error", "ece", "posterior_gap"} <= set(t.columns)
    assert t.run.str.startswith(("linear_nu0.2_fcn2_w", "xor_nu0.6_fcn2_w3_r")).all()
    assert sorted(t[t.width == 4].level) == [0, 1, 2]
    # the stored numbers, and replicate means computed from the table
    st = RunStore(trained)
    mine = trajectories(trained, configs=LINEAR.configs())
    stored = [m for c in LINEAR.configs() for m in st.metrics(st.find(c, config_label(c)))]
    assert list(mine.test_error) == [m["test_error"] for m in stored]
    assert [r["n"] for r in mean_rows(mine)] == [1] * len(stored)


@pytest.mark.parametrize("where,n", [
    (dict(dataset="xor"), 4),
    (dict(dataset="xor", nu=0.6), 4),
    (dict(nu=0.2), 4),
    (dict(dataset="linear", width=4), 3),
    (dict(width=[2, 3]), 1 + 4),
    (dict(replicate=1), 2),
    (dict(noise=0.2, n_train=200, epochs=1), 8),
    (dict(n_train=10_000), 0),
    (dict(epochs=100), 0),
])
def test_trajectories_filter_by_configuration_fields(trained, where, n):
    t = trajectories(trained, **where)
    assert len(t) == n
    for k in {"dataset", "nu", "width", "replicate", "noise"} & set(where):
        v = where[k]
        assert t[k].isin(v if isinstance(v, list) else [v]).all()


def test_trajectories_by_configurations_and_fields_together(trained):
    assert len(trajectories(trained, configs=XOR.configs())) == 4
    assert len(trajectories(trained, configs=XOR.configs(), replicate=0)) == 2
    assert len(trajectories(RunStore(trained), configs=XOR.configs()[:1] + [UNSEEN])) == 2
    with pytest.raises(ConfigError, match=r"unknown configuration field\(s\) \['nu_'\]"):
        trajectories(trained, nu_=0.6)


def test_trajectories_spread_nested_metrics_into_columns(tmp_path):
    st = RunStore(tmp_path)
    run = st.open(UNSEEN, config_label(UNSEEN))
    st.write_level(run, 0, dict(level=0, test_error=0.1, provenance=dict(torch="2.5", host=dict(cpus=2)), seen=[1, 2]))
    t = trajectories(tmp_path)
    row = t.iloc[0]
    assert (row.run, row.width, row.level, row.test_error) == (run.name, 5, 0, 0.1)
    assert (row["provenance.torch"], row["provenance.host.cpus"], row.seen) == ("2.5", 2, [1, 2])


def test_store_summary_counts_runs_levels_and_stops(trained, tmp_path):
    s = store_summary(trained)
    assert (s["trajectories"], s["levels"], s["stopped"]) == (4, 8, 0)
    assert s["bytes"] == sum(p.stat().st_size for p in trained.rglob("*") if p.is_file())
    st = RunStore(tmp_path / "store")
    run = st.open(UNSEEN, config_label(UNSEEN))
    st.write_level(run, 0, dict(level=0))
    st.stop(run, "nothing left to prune")
    assert {k: v for k, v in store_summary(st).items() if k != "bytes"} == dict(trajectories=1, levels=1, stopped=1)


# --- figure runs -----------------------------------------------------------------------------

EXPECTED = {  # table: (columns it must have, rows as a function of metrics.json)
    "fig2_double_descent": {
        "dense": ({"task", "nu", "width", "level", "counted", "test_error"}, lambda m: sum(len(r["dense"]) for r in m["results"])),
        "summary": ({"task", "nu", "width", "pruned_params", "rule"}, lambda m: sum(len(r["summary"]) for r in m["results"])),
        "sparse": ({"task", "nu", "start", "width", "level", "test_error"},
                   lambda m: sum(len(v) for r in m["results"] for v in r["sparse"].values())),
    },
    "fig3a_effective_params": {
        "effective_params": ({"task", "nu", "mean", "min", "max"}, lambda m: len(m["effective_params"])),
        "per_start": ({"task", "nu", "start", "per_start", "test_error"},
                      lambda m: sum(len(r["per_start"]) for r in m["effective_params"])),
        "xor_over_linear": ({"nu", "xor_over_linear"}, lambda m: len(m["xor_over_linear"])),
    },
    "fig5_calibration": {
        "rows": ({"task", "model", "width", "level", "gap_mean"}, lambda m: len(m["rows"])),
        "chosen": ({"task", "model", "width", "level"}, lambda m: sum(len(v) for v in m["chosen"].values())),
        "pruned_closer_than_full": ({"task", "pruned_closer_than_full"}, lambda m: len(m["pruned_closer_than_full"])),
    },
    "figS1_error_vs_nu": {
        "rows": ({"task", "nu", "bayes_error", "width", "pruned_params"}, lambda m: len(m["rows"])),
    },
}


@pytest.mark.parametrize("run", ["cpu", "paper"])
@pytest.mark.parametrize("figure", sorted(EXPECTED))
def test_every_committed_figure_flattens_to_its_tables(figure, run):
    r = load_figure(figure, run, root=OUTPUTS)
    m = json.loads((OUTPUTS / figure / run / "metrics.json").read_text())
    assert (r.figure, r.run, r.path) == (figure, run, OUTPUTS / figure / run)
    assert r.metrics == m and r.parameters == m["parameters"] and r.provenance == m.get("provenance", {})
    means = {k: t for k, t in r.tables.items() if not k.startswith("per_replicate.")}
    assert sorted(means) == sorted(EXPECTED[figure])
    parts = m.get("per_replicate", [])
    alone = {k: t for k, t in r.tables.items() if k not in means}
    assert bool(alone) == bool(parts)
    for name, t in alone.items():  # each replicate's table, stacked: as many rows per replicate as the means' table
        assert name.startswith("per_replicate.") and name.removeprefix("per_replicate.") in means, name
        assert len(t) == len(parts) * len(means[name.removeprefix("per_replicate.")]), name
        assert list(t.replicate.value_counts().sort_index().index) == list(range(len(parts))), name
    for name, (cols, rows) in EXPECTED[figure].items():
        t = r.tables[name]
        assert cols <= set(t.columns), (name, list(t.columns))
        assert len(t) == rows(m), name
        assert not any(isinstance(v, dict) for v in t.to_numpy().ravel()), name


def test_numeric_keys_become_numbers():
    r = load_figure("fig2", "cpu", root=OUTPUTS)
    assert sorted(r.tables["sparse"].start.unique()) == sorted(r.parameters["starts"])
    assert (r.tables["sparse"].start == r.tables["sparse"].width).all()
    x = load_figure("fig3a", "cpu", root=OUTPUTS).tables["xor_over_linear"]
    assert list(x.nu) == [0.2, 0.4, 0.6]


def test_flattening_made_up_documents():
    doc = dict(figure="toy", tau=0.5, notes=[], parameters=dict(epochs=2), provenance=dict(git="abc"),
               rows=[dict(task="xor", err=0.1, widths=[1, 2]), dict(task="linear", err=0.2, extra=True)],
               groups=[dict(task="xor", curve=[dict(w=1)], by={"3": [dict(w=3)]}, empty=[])],
               flags={"a": True, "b": False},
               deep=dict(x=dict(y=dict(z=dict(v=1)))))
    t = flatten_metrics(doc)
    assert sorted(t) == ["by", "curve", "deep", "flags", "rows"]
    assert t["rows"].to_dict("records")[0] == dict(task="xor", err=0.1, widths=[1, 2], extra=t["rows"].extra[0])
    assert pd.isna(t["rows"].extra[0]) and bool(t["rows"].extra[1])
    assert t["curve"].to_dict("records") == [dict(task="xor", w=1)]
    assert t["by"].to_dict("records") == [dict(task="xor", key=3, w=3)]
    assert t["flags"].to_dict("records") == [dict(key="a", flags=True), dict(key="b", flags=False)]
    assert t["deep"].to_dict("records") == [dict(key="x", key1="y", key2="z", v=1)]
    named = flatten_metrics(doc, names=dict(by="start", deep=("a", "b")))
    assert list(named["by"].columns) == ["task", "start", "w"]
    assert list(named["deep"].columns) == ["a", "b", "key2", "v"]
    assert "provenance" in flatten_metrics(doc, skip=())
    # the same key in two places: the later table is named by its path
    assert sorted(flatten_metrics(dict(w=[dict(v=1)], g=[dict(k=1, w=[dict(v=2)])]))) == ["g.w", "w"]
    assert flatten_metrics(dict(a=1, b="x", c=[1, 2], d=[], e={})) == {}


def fake_outputs(root):
    """An outputs folder with two figures sharing a prefix, a store, hidden and failed folders."""
    for fig, run in [("fig2_a", "cpu"), ("fig2_b", "cpu"), ("fig3_c", "cpu"), ("fig3_c", "paper"),
                     ("fig3_c", "cpu.failed"), ("fig3_c", ".tmp"), (".cache", "cpu"), ("fig9.failed", "cpu")]:
        (root / fig / run).mkdir(parents=True)
        (root / fig / run / "metrics.json").write_text(json.dumps(dict(rows=[dict(a=1)], parameters=dict(p=1))))
    (root / "fig3_c" / "interrupted").mkdir()
    (root / "store" / "some-run").mkdir(parents=True)
    (root / "store" / "index.tsv").write_text("")
    (root / "README.md").write_text("")
    return root


def test_figure_runs_lists_runs_and_skips_hidden_failed_and_store(tmp_path):
    fr = figure_runs(fake_outputs(tmp_path))
    assert list(fr.columns) == ["figure", "run", "path", "has_metrics"]
    assert list(zip(fr.figure, fr.run, fr.has_metrics)) == [
        ("fig2_a", "cpu", True), ("fig2_b", "cpu", True), ("fig3_c", "cpu", True),
        ("fig3_c", "interrupted", False), ("fig3_c", "paper", True)]
    assert fr.path[0] == tmp_path / "fig2_a" / "cpu"
    assert len(figure_runs(tmp_path / "missing")) == 0 and not (tmp_path / "missing").exists()


def test_load_figure_resolves_prefixes_and_names_the_choices(tmp_path, isolated):
    root = fake_outputs(tmp_path / "out")
    r = load_figure("fig3", root=root)
    assert (r.figure, r.run, r.parameters, r.provenance) == ("fig3_c", "cpu", dict(p=1), {})
    assert load_figure("fig2_b", "cpu", root=root).figure == "fig2_b"
    with pytest.raises(ConfigError, match=r"figure 'fig2' is ambiguous: .*\['fig2_a', 'fig2_b'\]"):
        load_figure("fig2", root=root)
    with pytest.raises(ConfigError, match=r"unknown figure 'fig7'; expected one of \['fig2_a', 'fig2_b', 'fig3_c'\]"):
        load_figure("fig7", root=root)
    with pytest.raises(ConfigError, match=r"fig3_c has no run 'smoke'; available runs: \['cpu', 'interrupted', 'paper'\]"):
        load_figure("fig3", "smoke", root=root)
    with pytest.raises(ConfigError, match="no metrics.json"):
        load_figure("fig3", "interrupted", root=root)
    with pytest.raises(ConfigError, match="unknown figure 'fig9"):
        load_figure("fig9", root=root)
    assert load_figure("fig2", root=OUTPUTS).figure == "fig2_double_descent"
    assert len(figure_runs()) == 0  # the isolated outputs folder is empty
