"""The evaluation's files: the JSON report (schema :mod:`timm_mmc.report`), Markdown in the paper's layout, the plot.

The report itself is the dataclass :class:`timm_mmc.report.EvalReport`; this module renders it, names the files
(:func:`default_name`) and checks before any work that they can be written without replacing another report or an
unfinished evaluation's state by mistake (:func:`check_outputs`). Each file is written atomically
(:mod:`timm_mmc.fileio`), so a killed run never leaves a torn one.

    python -m eval.report results/NAME.json [...]

re-renders ``NAME.md`` and ``NAME.png`` beside each report from its JSON (left as it is), so that a report made by an
older timm-mmc shows what this one says of it (its warnings: a rule that changed since, an attack that was cut short).
Exit status 0; 2 for a file that is not a report (nothing is written then); 1 when a file cannot be written.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from timm_mmc import (AttackResult, EvalReport, ExitStatus, ReportError, atomic_write_set, eps_key, load_report,
                      percent, robustness_png)

from .partial import partial_dir

__all__ = ['render_markdown', 'output_paths', 'write_outputs', 'rerender', 'default_name', 'check_outputs',
           'OutputError']


class OutputError(ValueError):
    """The report cannot go where it was asked to (before any work); the message names the fix."""


def _pct(v: Optional[float]) -> str:
    return percent(v, 1)


def _num(v: Optional[float], digits: int = 3) -> str:
    return '-' if v is None or (isinstance(v, float) and not math.isfinite(v)) else f'{v:.{digits}f}'


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    lines = ['| ' + ' | '.join(header) + ' |', '| ' + ' | '.join('---' for _ in header) + ' |']
    lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return lines


def _table_a(rep: EvalReport, name: str) -> List[str]:
    pgd = sorted(rep.find_columns(family='pgd'), key=lambda c: (c.eps, c.steps, not c.targeted))
    if not pgd:
        return []
    out = ['## Table A: white-box PGD (per-sample worst case over the objectives)', '']
    out += _table(['method', 'clean'] + [c.name for c in pgd],
                  [[name, _pct(rep.clean_accuracy)] + [_pct(c.accuracy) for c in pgd]])
    return out + ['']


def _table_b(rep: EvalReport, name: str) -> List[str]:
    cw = rep.find_attacks(family='cw')
    spsa = sorted(rep.find_columns(family='spsa'), key=lambda c: (c.eps, not c.targeted))
    corr = rep.find_columns(family='noise') + rep.find_columns(family='rotation')
    if not (cw or spsa or corr):
        return []
    header, row = ['method'], [name]
    for a in sorted(cw, key=lambda a: not a.targeted):
        header.append(f'C&W {"tar" if a.targeted else "un"} (paper figure)')
        row.append(_num(a.l2_paper))
    header += [c.name for c in spsa + corr]
    row += [_pct(c.accuracy) for c in spsa + corr]
    out = ['## Table B: C&W L2, SPSA, general-purpose', ''] + _table(header, [row])
    out += ['', 'C&W "paper figure": mean minimal L2 over all evaluated points with failures (and points '
            'misclassified clean) counted as 0, as the authors\' code averaged; the honest figures follow.', '']
    if cw:
        out += _table(['attack', 'n', 'attacked', 'success rate', 'mean L2 (successes)', 'median L2 (successes)',
                       'paper figure', 'time s'],
                      [[a.name, str(a.n), str(a.n_attacked), _pct(a.success_rate), _num(a.l2_mean),
                        _num(a.l2_median), _num(a.l2_paper), f'{a.time_s:.0f}'] for a in cw])
        out.append('')
    return out


def _autoattack(rep: EvalReport) -> List[str]:
    aa = rep.find_attacks(family='autoattack')
    if not aa:
        return []
    out = ['## AutoAttack', '']
    out += _table(['attack', 'eps', 'n', 'attacked', 'accuracy', 'logit scale', 'max clean margin', 'time s'],
                  [[a.name, eps_key(a.eps), str(a.n), str(a.n_attacked), _pct(a.accuracy), _num(a.logit_scale, 4),
                    _num(a.max_clean_margin, 1), f'{a.time_s:.0f}'] for a in aa])
    out += ['', 'AutoAttack sees the logits times the scale (same predictions and DLR; cross-entropy no longer '
            'saturates).' + ('' if rep.options.get('standalone') else ' It attacks only the points that survived '
                             'the cheaper Linf attacks at its eps, so its figure is the worst case of those and '
                             'AutoAttack.'), '']
    return out


def _worst(rep: EvalReport) -> List[str]:
    out = []
    tr = rep.find_columns(family='transfer')
    if tr:
        weights = f' (its weights: sha256 {rep.transfer_sha256[:16]})' if rep.transfer_sha256 else ''
        out += [f'## Black-box transfer from `{rep.transfer_from}`{weights}', '']
        out += _table(['attack', 'accuracy'], [[c.name, _pct(c.accuracy)] for c in tr]) + ['']
    if rep.worst_case:
        out += ['## Robust accuracy under the suite (per-sample worst case over every Linf attack)', '']
        out += _table(['eps', 'n', 'robust accuracy', 'attacks'],
                      [[k, str(w.n), _pct(w.accuracy), str(len(w.attacks))] for k, w in rep.worst_case.items()])
        out.append('')
    if rep.worst_case_slice:
        out += ['Some attacks ran on the first points only (AutoAttack with `aa_n`, SPSA with `spsa_n`); the worst '
                'case on the largest such prefix (attacks on fewer points count there only):', '']
        out += _table(['eps', 'n (first points)', 'robust accuracy', 'attacks', 'on fewer points'],
                      [[k, str(w.n), _pct(w.accuracy), str(len(w.attacks)), ', '.join(w.partial) or '-']
                       for k, w in rep.worst_case_slice.items()])
        out.append('')
    return out


def _diagnostics(rep: EvalReport) -> List[str]:
    out = ['## Diagnostics', '']
    zg = rep.diagnostics.get('zero_input_gradient_fraction', {})
    if zg:
        out.append('Zero input gradient at the clean points: ' + ', '.join(f'{k} {100 * v:.1f}%'
                                                                          for k, v in zg.items()) + '.')
    beat = rep.diagnostics.get('blackbox_beats_whitebox', {})
    if beat:
        out.append('Points broken by gradient-free / transfer attacks but by no white-box attack: '
                   + ', '.join(f'{k} {v}' for k, v in beat.items()) + '.')
    out += ['', '## Warnings', '']
    out += [f'- {w}' for w in rep.all_warnings()] or ['- none']
    out += ['', '## Run', '', f'- command: `{rep.command}`', f'- wall time: {rep.timings.get("total_s", 0):.0f} s',
            '- versions: ' + ', '.join(f'{k} {v if v is not None else "not importable"}'
                                       for k, v in rep.versions.items()), '']
    return out


def _accuracy_cell(a: AttackResult) -> str:
    """C&W has no budget: its "accuracy" is the share it did not fool (targeted: that it did not bring to the target,
    although the model may misclassify them), not a robust accuracy."""
    if a.family != 'cw':
        return _pct(a.accuracy)
    return f'{_pct(a.accuracy)} (not fooled{" to the target" if a.targeted else ""}; no budget)'


def render_markdown(rep: EvalReport) -> str:
    """The report as Markdown: Table A (PGD) and Table B (C&W, SPSA, corruptions) in the paper's layout, then
    AutoAttack, transfer, the worst case, every attack, diagnostics and warnings."""
    name = rep.model + (f' + {Path(rep.checkpoint).name}' if rep.checkpoint else '')
    out = [f'# Robustness of `{name}`', '',
           f'Data set `{rep.dataset}` split `{rep.split}`, n = {rep.n}, suite `{rep.suite}`, seed {rep.seed}, '
           f'{rep.logits} logits, device {rep.device}, {rep.num_processes} process(es).  ',
           f'Checkpoint sha256: `{rep.checkpoint_sha256 or "n/a"}`. Report version {rep.version}.', '',
           'Accuracies in %; eps in /255 units. Within one objective an attack skips points that a smaller budget '
           'already broke (its adversarial example is valid for the larger one)'
           + (' (standalone: off, every attack on every point).' if rep.options.get('standalone') else '.'), '']
    out += _table_a(rep, name) + _table_b(rep, name) + _autoattack(rep) + _worst(rep)
    out += ['## Every attack', '']
    out += _table(['attack', 'n', 'attacked', 'accuracy', 'time s'],
                  [[a.name, str(a.n), str(a.n_attacked), _accuracy_cell(a), f'{a.time_s:.1f}']
                   for a in rep.attacks.values()])
    out += [''] + _diagnostics(rep)
    return '\n'.join(out)


def output_paths(out_dir: Path, stem: str) -> Dict[str, Path]:
    """Where :func:`write_outputs` writes: ``stem.json``, ``stem.md`` and ``stem.png`` in ``out_dir``."""
    return {'json': out_dir / f'{stem}.json', 'md': out_dir / f'{stem}.md', 'png': out_dir / f'{stem}.png'}


def _slug(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', text).strip('_.')[:120] or 'model'


def default_name(model: str, checkpoint: Optional[str], suite: str) -> str:
    """The report's file stem: the model, the checkpoint's folder and file (so two checkpoints of one model never
    share a report), and the suite."""
    parts = [Path(model.split(':', 1)[-1]).name]
    if checkpoint:
        ck = Path(checkpoint)
        parts += [ck.parent.name, ck.stem] if ck.stem not in ('model', 'pytorch_model') else [ck.parent.name]
    return _slug('_'.join(p for p in parts + [suite] if p))


def check_outputs(out: str, name: str, overwrite: bool, resume: bool = False) -> None:
    """Before any work: the report can be written where asked, does not silently replace another, and an unfinished
    evaluation of the same name is either resumed or dropped on purpose.

    Raises:
        OutputError: The message names the problem and the fix.
    """
    if not name or name in ('.', '..') or Path(name).name != name or '/' in name or '\\' in name:
        raise OutputError(f'--name {name!r} must be a plain file name without folders (the report goes to --out); '
                          f'e.g. --name resnet32_mmc_full.')
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f'--out {out!r} is a file; name a folder for the report.')
    probe = out_dir if out_dir.is_dir() else next((p for p in out_dir.absolute().parents if p.exists()), None)
    if probe is None or not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f'--out {out!r} cannot be written ({str(probe)!r} is not a writable folder); choose a folder '
                          f'you can write to.')
    existing = [str(p) for p in output_paths(out_dir, name).values() if p.exists()]
    if existing and not overwrite:
        raise OutputError(f'a report named {name!r} already exists ({", ".join(existing)}); pass --overwrite to '
                          f'replace it or choose another --name.')
    unfinished = partial_dir(out_dir, name)
    if resume and not unfinished.is_dir():
        raise OutputError(f'--resume: there is no unfinished evaluation named {name!r} (no {unfinished}); run without '
                          f'--resume, or give the --out and --name it had.')
    if unfinished.is_dir() and not (resume or overwrite):
        raise OutputError(f'an unfinished evaluation named {name!r} is in {unfinished}; pass --resume to continue it '
                          f'(with the same options) or --overwrite to start over.')


def write_outputs(rep: EvalReport, out_dir: Path, stem: str) -> Dict[str, Path]:
    """Write ``stem.json``, ``stem.md`` and ``stem.png`` into ``out_dir``, whole or not at all.

    All three are rendered in memory first (where anything can fail), then written together by
    :func:`timm_mmc.fileio.atomic_write_set`: a failure leaves none of the new files behind.
    """
    paths = output_paths(out_dir, stem)
    files = {paths['json']: (rep.to_json() + '\n').encode(), paths['md']: render_markdown(rep).encode(),
             paths['png']: robustness_png(rep)}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_set(files)
    return paths


def rerender(path: Path, rep: Optional[EvalReport] = None) -> Dict[str, Path]:
    """Rewrite the Markdown and the plot beside the report ``path`` (``NAME.json``), from ``rep`` or the file; the
    JSON stays as it is."""
    rep = load_report(path) if rep is None else rep
    paths = output_paths(path.parent, path.stem)
    atomic_write_set({paths['md']: render_markdown(rep).encode(), paths['png']: robustness_png(rep)})
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m eval.report NAME.json ...``; returns the exit status (0; 2 for a file that is not a report, with
    nothing written; 1 when a file cannot be written)."""
    p = argparse.ArgumentParser(prog='python -m eval.report', description='re-render the Markdown and plot beside '
                                'evaluation reports from their JSON')
    p.add_argument('reports', nargs='+', type=Path, help='NAME.json files written by python -m eval.robustness')
    args = p.parse_args(argv)
    try:
        reports = {path: load_report(path) for path in args.reports}  # every one read before anything is written
    except ReportError as e:
        print(f'error: {e}', file=sys.stderr)
        return ExitStatus.BAD_INPUT
    for path, rep in reports.items():
        try:
            written = rerender(path, rep)
        except OSError as e:
            print(f'error: cannot write beside {str(path)!r} ({e}); make the folder writable and run it again.',
                  file=sys.stderr)
            return ExitStatus.FAILED
        warns = len(rep.all_warnings())
        print(f'wrote {written["md"]} and {written["png"]}' + (f' ({warns} warning(s) in it)' if warns else ''))
    return ExitStatus.OK


if __name__ == '__main__':
    sys.exit(main())
