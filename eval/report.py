"""The evaluation report: metadata as a dataclass written to JSON, Markdown in the paper's layout, a plot.

Files are written atomically (a temporary file, then a rename) so a killed run never leaves a torn report.
"""
from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

__all__ = ['REPORT_VERSION', 'EvalReport', 'package_versions', 'render_markdown', 'plot_eps', 'write_atomic',
           'write_outputs']

REPORT_VERSION = '1.0'


@dataclass
class EvalReport:
    """Everything a reviewer needs to trust (or redo) an evaluation.

    Attributes:
        version: Schema version of this report.
        model: The model spec as typed (registered name, ``hf-hub:``, ``local-dir:``).
        checkpoint: Checkpoint path, if one was given.
        checkpoint_sha256: SHA-256 of the weights file that was loaded (None if none could be identified).
        pretrained: Whether registered pretrained weights were asked for.
        head: ``mm`` (distance logits) or ``linear``.
        dataset: Data set as given; ``dataset_source`` what was loaded (split, columns, fingerprint).
        split: Split name.
        indices: Indices of the evaluated examples in the split, in evaluation order.
        n: Number of evaluated examples.
        suite: Suite name.
        seed: Base seed (targets, random starts, noise, rotations all derive from it).
        options: Every suite option.
        clean_accuracy: Accuracy on the clean images.
        attacks: Per attack: config, n, accuracy (C&W: success rate and distances), time.
        columns: Table columns (per-sample worst case over the objectives of each).
        worst_case: Per eps, the per-sample worst case over every Linf attack with eps <= it ("robust accuracy under
            the suite").
        diagnostics: Gradient-masking checks.
        warnings: Every warning (ours and AutoAttack's).
        timings: Wall time, per attack and in total.
        versions: Package versions.
        device: Hardware.
        num_processes: Processes the examples were sharded over.
        transfer_from: Source model of the transfer attacks.
        command: The command line.
    """
    model: str
    dataset: str
    split: str
    n: int
    suite: str
    seed: int
    version: str = REPORT_VERSION
    checkpoint: Optional[str] = None
    checkpoint_sha256: Optional[str] = None
    pretrained: bool = False
    head: str = 'linear'
    dataset_source: str = ''
    indices: List[int] = field(default_factory=list)
    options: Dict[str, Any] = field(default_factory=dict)
    clean_accuracy: float = math.nan
    attacks: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    columns: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    worst_case: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    worst_case_slice: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    diagnostics: Dict[str, Any] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)
    versions: Dict[str, str] = field(default_factory=dict)
    device: str = ''
    num_processes: int = 1
    transfer_from: Optional[str] = None
    command: str = ''

    def to_json(self) -> str:
        return json.dumps(_clean_json(asdict(self)), indent=2, allow_nan=False)


def _clean_json(obj: Any) -> Any:
    """NaN / inf become None (strict JSON); tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_json(v) for v in obj]
    return obj


def package_versions() -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {'python': platform.python_version()}
    for pkg in ('torch', 'timm', 'timm-mmc', 'pyautoattack', 'datasets', 'accelerate', 'numpy'):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = 'not installed'
    return out


def _pct(v: Optional[float]) -> str:
    return '-' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{100 * v:.1f}'


def _num(v: Optional[float], digits: int = 3) -> str:
    return '-' if v is None or (isinstance(v, float) and not math.isfinite(v)) else f'{v:.{digits}f}'


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    lines = ['| ' + ' | '.join(header) + ' |', '| ' + ' | '.join('---' for _ in header) + ' |']
    lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return lines


def render_markdown(rep: EvalReport) -> str:
    """The report as Markdown: Table A (PGD) and Table B (C&W, SPSA, corruptions) in the paper's layout, then
    AutoAttack, transfer, the worst case, per-objective detail, diagnostics and warnings."""
    name = rep.model + (f' + {Path(rep.checkpoint).name}' if rep.checkpoint else '')
    out = [f'# Robustness of `{name}`', '',
           f'Data set `{rep.dataset}` split `{rep.split}`, n = {rep.n}, suite `{rep.suite}`, seed {rep.seed}, '
           f'head `{rep.head}`, device {rep.device}, {rep.num_processes} process(es).  ',
           f'Checkpoint sha256: `{rep.checkpoint_sha256 or "n/a"}`. Report version {rep.version}.', '',
           'Accuracies in %; eps in /255 units. Within one objective an attack skips points that a smaller budget '
           'already broke (its adversarial example is valid for the larger one)'
           + (' (standalone: off, every attack on every point).' if rep.options.get('standalone') else '.'), '']
    cols = rep.columns
    pgd_cols = [k for k, c in cols.items() if c['family'] == 'pgd']
    if pgd_cols:
        def key(k: str):
            c = cols[k]
            steps = int(k.split()[0][3:])
            return (c['eps'], steps, not c['targeted'])
        pgd_cols.sort(key=key)
        out += ['## Table A: white-box PGD (per-sample worst case over the objectives)', '']
        out += _table(['method', 'clean'] + pgd_cols,
                      [[name, _pct(rep.clean_accuracy)] + [_pct(cols[k]['accuracy']) for k in pgd_cols]])
        out.append('')
    cw = {k: v for k, v in rep.attacks.items() if v['family'] == 'cw'}
    spsa_cols = sorted([k for k, c in cols.items() if c['family'] == 'spsa'],
                       key=lambda k: (cols[k]['eps'], not cols[k]['targeted']))
    corr = [k for k, c in cols.items() if c['family'] in ('noise', 'rotation')]
    if cw or spsa_cols or corr:
        header, row = ['method'], [name]
        for k in ('cw-tar', 'cw-un'):
            if k in cw:
                header.append(f'C&W {k[3:]} (paper figure)')
                row.append(_num(cw[k].get('l2_paper')))
        header += spsa_cols + corr
        row += [_pct(cols[k]['accuracy']) for k in spsa_cols + corr]
        out += ['## Table B: C&W L2, SPSA, general-purpose', '']
        out += _table(header, [row])
        out += ['', 'C&W "paper figure": mean minimal L2 over all evaluated points with failures (and points '
                'misclassified clean) counted as 0, as the authors\' code averaged; the honest figures follow.', '']
    if cw:
        out += _table(['attack', 'n', 'attacked', 'success rate', 'mean L2 (successes)', 'median L2 (successes)',
                       'paper figure', 'time s'],
                      [[k, str(v['n']), str(v['n_attacked']), _pct(v.get('success_rate')), _num(v.get('l2_mean')),
                        _num(v.get('l2_median')), _num(v.get('l2_paper')), f'{v["time_s"]:.0f}']
                       for k, v in cw.items()])
        out.append('')
    aa = {k: v for k, v in rep.attacks.items() if v['family'] == 'autoattack'}
    if aa:
        out += ['## AutoAttack', '']
        out += _table(['attack', 'eps', 'n', 'attacked', 'accuracy', 'logit scale', 'max clean margin', 'time s'],
                      [[k, f"{v['eps'] * 255:.3g}", str(v['n']), str(v['n_attacked']), _pct(v['accuracy']),
                        _num(v.get('logit_scale'), 4), _num(v.get('max_clean_margin'), 1), f'{v["time_s"]:.0f}']
                       for k, v in aa.items()])
        out += ['', 'AutoAttack sees the logits times the scale (same predictions and DLR; cross-entropy no longer '
                'saturates).' + ('' if rep.options.get('standalone') else ' It attacks only the points that survived '
                                 'the cheaper Linf attacks at its eps, so its figure is the worst case of those and '
                                 'AutoAttack.'), '']
    tr = [k for k, c in cols.items() if c['family'] == 'transfer']
    if tr:
        out += [f'## Black-box transfer from `{rep.transfer_from}`', '']
        out += _table(['attack', 'accuracy'], [[k, _pct(cols[k]['accuracy'])] for k in tr])
        out.append('')
    if rep.worst_case:
        out += ['## Robust accuracy under the suite (per-sample worst case over every Linf attack)', '']
        out += _table(['eps', 'n', 'robust accuracy', 'attacks'],
                      [[k, str(v['n']), _pct(v['accuracy']), str(len(v['attacks']))]
                       for k, v in rep.worst_case.items()])
        out.append('')
    if rep.worst_case_slice:
        out += ['Some attacks ran on the first points only (AutoAttack with `aa_n`, SPSA with `spsa_n`); the worst '
                'case on the largest such prefix (attacks on fewer points count there only):', '']
        out += _table(['eps', 'n (first points)', 'robust accuracy', 'attacks', 'on fewer points'],
                      [[k, str(v['n']), _pct(v['accuracy']), str(len(v['attacks'])), ', '.join(v['partial']) or '-']
                       for k, v in rep.worst_case_slice.items()])
        out.append('')
    out += ['## Every attack', '']
    out += _table(['attack', 'n', 'attacked', 'accuracy', 'time s'],
                  [[k, str(v['n']), str(v['n_attacked']), _pct(v.get('accuracy')), f'{v["time_s"]:.1f}']
                   for k, v in rep.attacks.items()])
    out += ['', '## Diagnostics', '']
    zg = rep.diagnostics.get('zero_input_gradient_fraction', {})
    if zg:
        out.append('Zero input gradient at the clean points: ' + ', '.join(f'{k} {100 * v:.1f}%'
                                                                          for k, v in zg.items()) + '.')
    beat = rep.diagnostics.get('blackbox_beats_whitebox', {})
    if beat:
        out.append('Points broken by gradient-free / transfer attacks but by no white-box attack: '
                   + ', '.join(f'{k} {v}' for k, v in beat.items()) + '.')
    out += ['', '## Warnings', '']
    out += [f'- {w}' for w in rep.warnings] or ['- none']
    out += ['', '## Run', '', f'- command: `{rep.command}`', f'- wall time: {rep.timings.get("total_s", 0):.0f} s',
            '- versions: ' + ', '.join(f'{k} {v}' for k, v in rep.versions.items()), '']
    return '\n'.join(out)


def plot_eps(rep: EvalReport, path: Path) -> None:
    """Robust accuracy against eps (clean at eps 0): each PGD column family and the suite's worst case."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    series: Dict[str, List] = {}
    for k, c in rep.columns.items():
        if c.get('eps') is None:
            continue
        label = ' '.join(k.split()[:-1])  # drop the eps
        series.setdefault(label, []).append((c['eps'] * 255, 100 * c['accuracy']))
    for label, pts in sorted(series.items()):
        pts = [(0.0, 100 * rep.clean_accuracy)] + sorted(pts)
        ax.plot(*zip(*pts), marker='o', label=label, alpha=0.8)
    if rep.worst_case:
        pts = [(0.0, 100 * rep.clean_accuracy)] + sorted((v['eps'] * 255, 100 * v['accuracy'])
                                                       for v in rep.worst_case.values())
        ax.plot(*zip(*pts), marker='s', color='black', linewidth=2.5, label='worst case (suite)')
    ax.set_xlabel('eps (/255, Linf)')
    ax.set_ylabel('accuracy (%)')
    ax.set_ylim(0, 100)
    ax.set_title(f'{rep.model} on {Path(rep.dataset).name}:{rep.split}, n={rep.n}', fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.name + '.tmp.png')
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f'.tmp{os.getpid()}')
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def write_outputs(rep: EvalReport, out_dir: Path, stem: str) -> Dict[str, Path]:
    """Write ``stem.json``, ``stem.md`` and ``stem.png`` into ``out_dir`` (each atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {'json': out_dir / f'{stem}.json', 'md': out_dir / f'{stem}.md', 'png': out_dir / f'{stem}.png'}
    text_json = rep.to_json()
    text_md = render_markdown(rep)
    plot_eps(rep, paths['png'])
    write_atomic(paths['md'], text_md)
    write_atomic(paths['json'], text_json)
    return paths
