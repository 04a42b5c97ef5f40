"""The claims ledger: verdicts on small metrics made here, reading runs, the Markdown, the committed outputs."""
import json

import pytest

from conftest import ROOT
from lottery_nb.claims import (CLAIMS, NO_DATA, NOT_REPRODUCED, PARTLY, REPRODUCED, VERDICTS, check_beats_full,
                               check_closer_full, check_closer_small, check_dense_dd, check_ece, check_minima,
                               check_nu, check_range, check_sparse_dd, check_twice, claims_markdown, ledger, read_runs,
                               write_claims)
from lottery_nb.claims.controls import (CONTROLS_FIGURE, check_initialisation, check_magnitude, check_random_sparse_dd,
                                        check_sparser)

F2, F3, F5, FS1 = 'fig2_double_descent', 'fig3a_effective_params', 'fig5_calibration', 'figS1_error_vs_nu'
T1, F6, F7 = 'table1_full_vs_pruned', 'fig6_calibration_real', 'fig7_calibration_levels'


# --- metrics shaped like the figures' metrics.json ----------------------------------------------

def panel(task, nu, dense, sparse=(0.3, 0.3), summary=((0.3, 0.2, 150), (0.3, 0.2, 200), (0.3, 0.2, 250))):
    """A Fig. 2 panel: full-model errors for widths 2, 4, ...; one trajectory from the largest width; and one
    summary row (full error, pruned error, pruned count) per start 16/100/500."""
    widths = [2 * (i + 1) for i in range(len(dense))]
    rows = [dict(width=w, level=0, counted=102.0 * w, n=2, train_error=0.0, test_error=e)
            for w, e in zip(widths, dense)]
    traj = [dict(width=widths[-1], level=l, counted=float(round(102 * widths[-1] * 0.8**l)), n=2, test_error=e)
            for l, e in enumerate(sparse)]
    summ = [dict(width=w, full_params=102.0 * w, pruned_params=float(c), best_level=5, levels=10, full_test_error=f,
                 pruned_test_error=p, pruned_train_error=0.1, rule='paper', fallback=False)
            for w, (f, p, c) in zip((16, 100, 500), summary)]
    return dict(task=task, nu=nu, dense=rows, sparse={str(widths[-1]): traj}, summary=summ)


def fig2(*panels):
    return dict(figure='fig2', scale_notes=[], best_pruned_rule='paper', tau=0.5, results=list(panels),
                parameters=dict(n_test=5000, replicates=2))


UNLEARNED = panel('xor', 0.2, [0.45, 0.43, 0.44, 0.45], sparse=(0.45, 0.46, 0.47))
DD = [0.16, 0.22, 0.29, 0.26]  # rises from the smallest width to a peak, falls by the largest
MONOTONE = [0.10, 0.08, 0.06, 0.05]  # only falls


def effective_row(task, nu, counts, err=0.1):
    starts = ('16', '100', '500')
    return dict(task=task, nu=nu, mean=sum(counts) / len(counts), min=min(counts), max=max(counts),
                per_start=dict(zip(starts, map(float, counts))), test_error=dict.fromkeys(starts, err))


def fig3a(*rows):
    return dict(figure='fig3a', effective_params=list(rows), parameters=dict(n_test=5000))


def fig5(gaps=((0.22, 0.13, 0.10), (0.14, 0.19, 0.13)), eces=((0.19, 0.03, 0.07), (0.08, 0.07, 0.07)), std=0.005):
    names, widths = ('full', 'best pruned', 'best small full'), (500, 500, 2)
    rows = [dict(task=t, model=k, width=w, level=0, gap_mean=g, gap_std=std, noisy_gap_mean=g, ece_fresh=e,
                 error_fresh=0.2)
            for t, gs, es in zip(('linear', 'xor'), gaps, eces) for k, w, g, e in zip(names, widths, gs, es)]
    return dict(figure='fig5', rows=rows, parameters=dict(n_fresh=100_000, linear_nu=0.2, xor_nu=0.6))


def figS1(*series):
    rows = [dict(task=t, nu=nu, bayes_error=0.1, width=w, full_params=102.0 * w, pruned_params=100.0,
                 full_test_error=f, pruned_test_error=p)
            for t, w, full, pruned in series for nu, f, p in zip((0.2, 0.4, 0.6), full, pruned)]
    return dict(figure='figS1', rows=rows, parameters=dict(n_test=5000))


# --- verdicts -----------------------------------------------------------------------------------

CASES = [
    ('dense reproduced', check_dense_dd, fig2(panel('linear', 0.2, DD), UNLEARNED), REPRODUCED),
    ('dense partly', check_dense_dd, fig2(panel('linear', 0.2, DD), panel('linear', 0.6, MONOTONE)), PARTLY),
    ('dense not', check_dense_dd, fig2(panel('linear', 0.6, MONOTONE)), NOT_REPRODUCED),
    ('dense only unlearned', check_dense_dd, fig2(UNLEARNED), NO_DATA),
    ('sparse reproduced', check_sparse_dd, fig2(panel('xor', 0.6, DD, sparse=(0.14, 0.18, 0.11, 0.15))), REPRODUCED),
    ('sparse no rise', check_sparse_dd, fig2(panel('xor', 0.6, DD, sparse=(0.25, 0.24, 0.20))), NOT_REPRODUCED),
    ('sparse within noise', check_sparse_dd, fig2(panel('xor', 0.6, DD, sparse=(0.266, 0.30, 0.255))),
     NOT_REPRODUCED),
    ('minima reproduced', check_minima, fig2(panel('linear', 0.4, DD)), REPRODUCED),
    ('minima partly', check_minima,
     fig2(panel('linear', 0.4, DD), panel('linear', 0.2, DD, summary=((0.3, 0.2, 100), (0.3, 0.2, 200),
                                                                       (0.3, 0.2, 300)))), PARTLY),
    ('minima xor looser', check_minima, fig2(panel('xor', 0.4, DD, summary=((0.3, 0.2, 100), (0.3, 0.2, 200),
                                                                             (0.3, 0.2, 300)))), REPRODUCED),
    ('beats full reproduced', check_beats_full, fig2(panel('xor', 0.6, DD)), REPRODUCED),
    ('beats full within noise', check_beats_full,
     fig2(panel('xor', 0.4, DD, summary=((0.266, 0.255, 300),) * 3)), NOT_REPRODUCED),
    ('range reproduced', check_range, fig3a(effective_row('linear', 0.4, [210, 300, 480])), REPRODUCED),
    ('range partly', check_range, fig3a(effective_row('linear', 0.4, [134, 300, 480])), PARTLY),
    ('range not', check_range, fig3a(effective_row('xor', 0.4, [100, 120, 200])), NOT_REPRODUCED),
    ('range unlearned', check_range, fig3a(effective_row('xor', 0.2, [1632, 2669, 5470], err=0.44)), NO_DATA),
    ('twice reproduced', check_twice,
     fig3a(effective_row('linear', 0.6, [100, 150, 200]), effective_row('xor', 0.6, [200, 300, 400])), REPRODUCED),
    ('twice too many', check_twice,
     fig3a(effective_row('linear', 0.6, [100, 150, 200]), effective_row('xor', 0.6, [500, 600, 700])), PARTLY),
    ('twice not larger', check_twice,
     fig3a(effective_row('linear', 0.6, [100, 150, 200]), effective_row('xor', 0.6, [100, 100, 100])),
     NOT_REPRODUCED),
    ('twice unlearned xor', check_twice,
     fig3a(effective_row('linear', 0.2, [100, 150, 200]), effective_row('xor', 0.2, [900, 900, 900], err=0.45)),
     NO_DATA),
    ('closer than full partly', check_closer_full, fig5(), PARTLY),
    ('closer than full reproduced', check_closer_full, fig5(gaps=((0.22, 0.13, 0.10), (0.20, 0.13, 0.10))),
     REPRODUCED),
    ('closer than small not', check_closer_small, fig5(), NOT_REPRODUCED),
    ('ece reproduced', check_ece, fig5(), REPRODUCED),
    ('ece within noise', check_ece, fig5(eces=((0.080, 0.079, 0.07), (0.080, 0.0795, 0.07))), NOT_REPRODUCED),
    ('nu reproduced', check_nu, figS1(('linear', 500, (0.26, 0.11, 0.07), (0.20, 0.05, 0.01))), REPRODUCED),
    ('nu partly', check_nu, figS1(('linear', 500, (0.26, 0.11, 0.07), (0.20, 0.05, 0.01)),
                                  ('xor', 500, (0.45, 0.45, 0.14), (0.46, 0.25, 0.11))), PARTLY),
]


@pytest.mark.parametrize("check,metrics,verdict", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_verdicts(check, metrics, verdict):
    ours, got = check(metrics)
    assert got == verdict, ours
    assert isinstance(ours, str) and ours


def test_unlearned_panel_is_named_with_its_error():
    ours, _ = check_dense_dd(fig2(panel('linear', 0.2, DD), UNLEARNED))
    assert 'xor ν=0.2: not learned, best error 0.430' in ours
    assert ours.startswith('1/1 pass')


def test_failures_show_their_numbers():
    ours, _ = check_beats_full(fig2(panel('xor', 0.4, DD, summary=((0.266, 0.255, 300),) * 3)))
    assert '0.266 → 0.255' in ours and '✗' in ours


# --- the ledger ---------------------------------------------------------------------------------

def test_claims_are_well_formed():
    assert len({c.key for c in CLAIMS}) == len(CLAIMS) >= 6
    for c in CLAIMS:
        assert c.claim and c.paper and c.rule and callable(c.check)
        assert c.figure in (F2, F3, F5, FS1, T1, F6, F7, CONTROLS_FIGURE)


def test_figure_without_runs_gives_one_no_data_row():
    rows = ledger({(F2, 'cpu'): fig2(panel('linear', 0.2, DD))})
    f5 = [r for r in rows if r['figure'] == F5]
    assert len(f5) == sum(c.figure == F5 for c in CLAIMS)
    assert all(r['verdict'] == NO_DATA and r['run'] == '—' for r in f5)
    assert set(rows[0]) == {'key', 'claim', 'figure', 'paper', 'run', 'ours', 'verdict', 'replicates', 'fragile',
                            'rule'}


def test_missing_keys_give_no_data_with_the_reason():
    broken = fig2(panel('linear', 0.2, DD))
    del broken['parameters']
    no_summary = fig2(panel('linear', 0.2, DD))
    del no_summary['results'][0]['summary']
    runs = {(F2, 'a'): broken, (F2, 'b'): no_summary, (F3, 'a'): {}, (F5, 'a'): dict(rows=[{}]), (FS1, 'a'): []}
    rows = ledger(runs)
    assert all(r['verdict'] in VERDICTS for r in rows)
    dense = {r['run']: r for r in rows if r['key'] == 'dense_dd'}
    assert dense['a']['verdict'] == NO_DATA and "KeyError 'parameters'" in dense['a']['ours']
    minima = {r['run']: r for r in rows if r['key'] == 'minima_coincide'}
    assert minima['b']['verdict'] == NO_DATA and "'summary'" in minima['b']['ours']
    for r in rows:
        if r['figure'] in (F3, F5, FS1): assert r['verdict'] == NO_DATA and r['ours'].startswith('cannot read the metrics')
        if r['figure'] in (T1, F6, F7): assert r['verdict'] == NO_DATA and r['ours'] == 'no run of this figure'


def test_runs_are_listed_in_order_and_every_run_gets_a_row():
    m = fig2(panel('linear', 0.2, DD))
    rows = ledger({(F2, 'paper'): m, (F2, 'cpu'): m, (F2, 'cpu-noise=0.1'): m})
    assert [r['run'] for r in rows if r['key'] == 'dense_dd'] == ['cpu', 'cpu-noise=0.1', 'paper']


def test_markdown_layout_and_order_independence():
    rows = ledger({(F2, 'cpu'): fig2(panel('linear', 0.2, DD)), (F5, 'cpu'): fig5()})
    text = claims_markdown(rows)
    assert text == claims_markdown(list(reversed(rows)))
    lines = text.splitlines()
    assert lines[0] == '# Claims ledger'
    assert 'lottery-nb claims' in text and 'do not edit by hand' in text
    assert '| claim | figure | run | paper | ours | verdict | per replicate |' in lines
    assert sum(l.startswith('| ') for l in lines) == len(rows) + 1
    assert '## Rules' in lines
    assert all(f"(`{c.key}`" in text for c in CLAIMS)
    assert '\\|p−p\\*\\|' in text  # pipes and stars in cells are escaped


def test_per_replicate_verdicts_and_fragile_count():
    def m2(*summaries, per=None):
        m = fig2(panel('linear', 0.2, DD, summary=summaries[0]))
        if per is not None: m['per_replicate'] = [dict(results=[panel('linear', 0.2, DD, summary=s)]) for s in per]
        return m
    good, bad = ((0.3, 0.2, 150),) * 3, ((0.3, 0.3, 150),) * 3  # pruned below full in every start, in none
    rows = {r['run']: r for r in ledger({(F2, 'a'): m2(good), (F2, 'b'): m2(good, per=[good]),
                                          (F2, 'c'): m2(good, per=[good, good]), (F2, 'd'): m2(good, per=[good, bad])})
            if r['key'] == 'pruned_beats_full'}
    assert {k: r['verdict'] for k, r in rows.items()} == dict.fromkeys('abcd', REPRODUCED)
    assert [rows[k]['replicates'] for k in 'abcd'] == ['not recorded', 'one replicate', '2/2',
                                                       '1/2 fragile: reproduced, not reproduced']
    assert [rows[k]['fragile'] for k in 'abcd'] == [False, False, False, True]
    text = claims_markdown(list(rows.values()))
    assert '- `d`: 1 reproduced; 1 fragile across replicates' in text and '- `c`: 1 reproduced\n' in text



def test_fig5_records_each_replicate_and_the_ledger_judges_each(isolated):
    from lottery_nb.cli import main
    out = isolated / 'out'
    assert main(['run', 'fig5', '--preset', 'smoke', '--set', 'replicates=2', '--out', str(out),
                 '--store', str(isolated / 'st'), '--no-progress']) == 0
    m = json.loads(next(out.glob(f'{F5}/*/metrics.json')).read_text())
    parts = m['per_replicate']
    assert len(parts) == 2 and all(len(p['rows']) == len(m['rows']) == 6 for p in parts)
    run = {(r['task'], r['model']): r for r in m['rows']}
    for p in parts:  # each replicate keeps the run's spread
        assert all(r['gap_std'] == run[r['task'], r['model']]['gap_std'] for r in p['rows'])
    for t in ('linear', 'xor'):  # the full model is the same in every replicate: its mean is the run's
        alone = [next(r for r in p['rows'] if (r['task'], r['model']) == (t, 'full')) for p in parts]
        assert sum(r['gap_mean'] for r in alone) / 2 == pytest.approx(run[t, 'full']['gap_mean'], abs=1e-9)
    reps = [r['replicates'] for r in ledger({(F5, 'smoke'): m}) if r['figure'] == F5]
    assert len(reps) == 3 and all(r.split()[0] in ('0/2', '1/2', '2/2') for r in reps)


@pytest.mark.parametrize('fig', ['fig6', 'fig7'])
def test_mnist_calibration_figures_record_each_replicate(isolated, fig):
    from lottery_nb.cli import main
    out = isolated / 'out'
    assert main(['run', fig, '--preset', 'smoke', '--set', 'replicates=2', '--set', 'datasets=[mnist]', '--out', str(out),
                 '--store', str(isolated / 'st'), '--no-progress']) == 0
    name = F6 if fig == 'fig6' else F7
    m = json.loads(next(out.glob(f'{name}/*/metrics.json')).read_text())
    parts = m['per_replicate']
    assert len(parts) == 2 and all(set(p['results']) == {'mnist'} for p in parts)
    key = 'above_diagonal' if fig == 'fig6' else 'marks'
    assert all(set(p['results']['mnist'][key]) == set(m['results']['mnist'][key]) for p in parts)
    reps = [r['replicates'] for r in ledger({(name, 'smoke'): m}) if r['figure'] == name]
    assert reps and all(r.split()[0] in ('0/2', '1/2', '2/2') for r in reps)

# --- reading and writing ------------------------------------------------------------------------

def _snapshot(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob('*'))}


def test_read_runs_skips_failed_and_dot_folders_and_writes_nothing(tmp_path):
    for fig, run in [(F2, 'cpu'), (F2, 'cpu.failed'), (F2, '.tmp'), ('.cache', 'cpu'), (F3, 'paper')]:
        (tmp_path / fig / run).mkdir(parents=True)
        (tmp_path / fig / run / 'metrics.json').write_text(json.dumps(dict(figure=fig, run=run)))
    (tmp_path / F5 / 'cpu').mkdir(parents=True)  # a run folder without metrics
    before = _snapshot(tmp_path)
    runs = read_runs(tmp_path)
    assert sorted(runs) == [(F2, 'cpu'), (F3, 'paper')]
    assert runs[F3, 'paper'] == dict(figure=F3, run='paper')
    assert _snapshot(tmp_path) == before


def test_write_claims_is_stable(tmp_path):
    (tmp_path / F2 / 'cpu').mkdir(parents=True)
    (tmp_path / F2 / 'cpu' / 'metrics.json').write_text(json.dumps(fig2(panel('linear', 0.2, DD), UNLEARNED)))
    path = write_claims(tmp_path)
    assert path == tmp_path / 'CLAIMS.md'
    first = path.read_text(encoding='utf-8')
    assert write_claims(tmp_path) == path and path.read_text(encoding='utf-8') == first
    other = write_claims(tmp_path, tmp_path / 'elsewhere.md')
    assert other.read_text(encoding='utf-8') == first


def test_committed_outputs_give_every_claim_a_verdict():
    runs = read_runs(ROOT / 'outputs')
    assert {(F2, 'cpu'), (F2, 'paper')} <= set(runs)
    rows = ledger(runs)
    for c in CLAIMS:
        got = [r['verdict'] for r in rows if r['key'] == c.key]
        assert any(v != NO_DATA for v in got), (c.key, [r['ours'] for r in rows if r['key'] == c.key])


def test_mnist_claims_read_their_figures():
    t1 = dict(parameters=dict(n_test=None), rows=dict(mnist=dict(paper=[
        dict(width=w, full_params=884 * w + 1000, pruned_params=c, full_test_error=f, pruned_test_error=p)
        for w, c, f, p in ((50, 6061, 0.105, 0.048), (100, 4908, 0.176, 0.059), (10000, 17094, 0.091, 0.097))])))
    rows = {r['key']: r for r in ledger({(T1, 'paper'): t1})}
    assert rows['mnist_minima']['verdict'] == REPRODUCED and '(3.48×)' in rows['mnist_minima']['ours']
    assert rows['mnist_beats_full']['verdict'] == PARTLY and 'w=10000 ✗ 0.091 → 0.097' in rows['mnist_beats_full']['ours']
    assert rows['underconfident']['verdict'] == NO_DATA
    cifar_only = dict(parameters=dict(n_test=None), rows=dict(cifar10=dict(paper=[])))
    assert {r['key']: r['verdict'] for r in ledger({(T1, 'paper'): cifar_only})}['mnist_minima'] == NO_DATA


# --- the controls ---------------------------------------------------------------------------------

def _controls(best, mnist=False):
    """A controls run with one panel: control → (best pruned weights, best error); curves rise then fall."""
    panel = 'mnist' if mnist else ['linear', 0.4]
    res = [dict(panel=panel, control=c, start=100, summary=[dict(width=100, pruned_params=k, pruned_test_error=e)],
                curve=[dict(level=0, counted=9000, test_error=0.20), dict(level=1, counted=5000, test_error=0.30),
                       dict(level=2, counted=k, test_error=e)]) for c, (k, e) in best.items()]
    return dict(parameters=dict(n_test=5000, mnist_n_test=None), results=res)


def test_control_claims_compute_their_verdicts_from_the_numbers():
    run = _controls({'none': (100, 0.10), 'random_pruning': (300, 0.15), 'random_reinit': (150, 0.10)})
    assert check_magnitude(run)[1] == REPRODUCED and check_initialisation(run)[1] == NOT_REPRODUCED
    assert check_random_sparse_dd(run)[1] == REPRODUCED
    assert check_sparser(run)[1] == NOT_REPRODUCED and 'random_reinit 1.5×' in check_sparser(run)[0]
    mnist = _controls({'none': (100, 0.10), 'random_pruning': (300, 0.108)}, mnist=True)
    assert check_magnitude(mnist)[1] == REPRODUCED  # 10,000 MNIST test images: 0.008 is beyond 2σ (0.0062)
    assert check_magnitude(_controls({'none': (100, 0.10), 'random_pruning': (300, 0.108)}))[1] == NOT_REPRODUCED
