"""The card's evaluation section: the tables (every number from the report, the paper's labelled) and the notes."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ..report import AttackResult, Column, EvalReport, WorstCase, fmt_eps, percent
from .common import md
from .modelindex import WORST_CASE, WORST_CASE_SLICE, metric_name
from .paper import paper_value

__all__ = ['pct', 'subset_text', 'worst_label', 'eval_tables']


def pct(value: Optional[float]) -> str:
    """A report accuracy (fraction) as a percentage with two decimals: the only way the card prints one."""
    return percent(value, 2)


def _n(n: Optional[int]) -> str:
    return '-' if n is None else str(n)


def subset_text(rep: EvalReport) -> str:
    """Which images were evaluated, from the report's ``n`` and ``indices``."""
    idx = rep.indices
    if not rep.n:
        return f'the {rep.split} split'
    if idx and idx != list(range(len(idx))):
        if idx == list(range(idx[0], idx[0] + len(idx))):
            return f'{rep.n} images of the {rep.split} split (indices {idx[0]} to {idx[-1]})'
        return f'{rep.n} images of the {rep.split} split (indices listed in results/eval.json)'
    return f'the first {rep.n} images of the {rep.split} split'


def worst_label(w: WorstCase, on_slice: bool) -> str:
    """A worst-case row: the vocabulary's name, the budget, the points and the attacks it covers."""
    fewer = f'; {", ".join(w.partial)} on fewer points' if w.partial else ''
    where = f', first {w.n} points' if on_slice else ''
    name = WORST_CASE_SLICE if on_slice else WORST_CASE
    return f'{name}, Linf eps={fmt_eps(w.eps)}{where} (per image, over {len(w.attacks)} attacks with eps <= it{fewer})'


def _row(rep: EvalReport, c: Column, first: AttackResult, paper: str) -> str:
    corruption = c.family in ('noise', 'rotation')
    name = metric_name(c, rep)
    if corruption:
        name += ' (' + ', '.join(f'{k} {v}' for k, v in sorted(first.config.items())) + ')'
    tgt = '-' if corruption or c.family == 'autoattack' else ('yes' if c.targeted else 'no')
    return (f'| {md(name)} | {md(first.threat)} | {fmt_eps(c.eps)} | {c.steps if c.steps is not None else "-"} '
            f'| {tgt} | {md("/".join(c.objectives) or "-")} | {_n(c.n)} | {pct(c.accuracy)} | {paper} |')


def _cw_table(rep: EvalReport, pgd_row: Optional[Dict[str, Any]]) -> List[str]:
    cw = rep.find_attacks(family='cw')
    if not cw:
        return []
    lines = ['', 'C&W L2 (minimal distortion, no budget; from the report as is):', '',
             '| attack | n | success rate (%) | mean L2 (successes) | median L2 (successes) | paper-style mean L2 '
             '| Paper mean L2 |', '| --- | --- | --- | --- | --- | --- | --- |']
    num = (lambda v: '-' if v is None else f'{v:.4f}')
    for a in cw:
        paper_l2 = '-'
        if pgd_row is not None and pgd_row.get('cw'):
            paper_l2 = f'{pgd_row["cw"][0 if a.targeted else 1]} ({pgd_row["table_b"]})'
        lines.append(f'| {md(a.name)} | {_n(a.n)} | {pct(a.success_rate)} | {num(a.l2_mean)} | {num(a.l2_median)} '
                     f'| {num(a.l2_paper)} | {paper_l2} |')
    return lines


def _paper_notes(pgd_row, aa_row, sources, arch_caveat) -> List[str]:
    if pgd_row is None and aa_row is None:
        return ['"Paper" column: the MMC paper reports no figure for this model configuration, so none is shown.']
    used = []
    if pgd_row is not None:
        used.append(f'{sources.get(pgd_row["source"], {}).get("cite", pgd_row["source"])}, {pgd_row["table"]}, '
                    f'row "{pgd_row["label"]}"')
    if aa_row is not None:
        used.append(f'{sources.get(aa_row["source"], {}).get("cite", aa_row["source"])}: {aa_row["label"]}, '
                    f'clean {aa_row["clean"]}, reported {aa_row["reported"]}, AutoAttack {aa_row["autoattack"]}')
    notes = ['"Paper" column: published figures, not ours: ' + '; '.join(used) + '. They were measured on the '
             'original PNG CIFAR data with the authors\' adaptive white-box attacks and are matched to our rows by '
             'attack, steps, targeting and eps only: context, not a reproduction.']
    return notes + ([f'Architecture: {arch_caveat}.'] if arch_caveat else [])


def _autoattack_notes(rep: EvalReport) -> List[str]:
    aa = rep.find_attacks(family='autoattack')
    if not aa:
        return ['No AutoAttack result is in the report; PGD-only numbers can overstate robustness (Croce & Hein, '
                'ICML 2020, lowered the MMC paper\'s adversarially trained model from 55.0% to 43.48% at eps 8/255).']
    pkg = rep.versions.get('pyautoattack')
    pkg = f' (package pyautoattack {pkg})' if pkg else ' (package version not recorded)'
    notes = []
    for a in aa:
        if a.version != 'standard':
            notes.append(f'{a.name}: AutoAttack version "{a.version}"{pkg}, not the standard AutoAttack of '
                         f'RobustBench (APGD-CE, APGD-T, FAB-T, Square); a standard run can only lower the figure.')
        else:
            notes.append(f'{a.name}: AutoAttack version "{a.version}"{pkg}.')
    notes.append('AutoAttack saw the logits times a positive constant that brings the largest clean margin to 10 '
                 '(same predictions and DLR loss): Max-Mahalanobis logits saturate cross-entropy, so APGD-CE on the '
                 'raw logits of such a model has exactly zero gradients and overstates robustness. Evaluating these '
                 'weights with AutoAttack or RobustBench directly needs the same scaling (eval/aa.py, ScaledLogits).')
    return notes


def eval_tables(rep: EvalReport, pgd_row: Optional[Dict[str, Any]], aa_row: Optional[Dict[str, Any]],
                sources: Dict[str, Any], arch_caveat: Optional[str], caveat: str) -> Tuple[str, str]:
    """The card's evaluation tables and the notes under them (Markdown)."""
    standalone = bool(rep.options.get('standalone'))
    paper_clean = '-'
    if pgd_row is not None:
        paper_clean = f'{pgd_row["clean"]} ({pgd_row["table"]})'
    elif aa_row is not None:
        paper_clean = f'{aa_row["clean"]} (AutoAttack study)'
    lines = ['| Evaluation | Threat | eps | Steps | Targeted | Objectives | n | This model (%) | Paper (%) |',
             '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
             f'| clean | - | - | - | - | - | {_n(rep.n)} | {pct(rep.clean_accuracy)} | {paper_clean} |']
    for c in rep.columns.values():
        if c.family != 'cw':
            first = rep.attacks[c.attacks[0]]
            lines.append(_row(rep, c, first, paper_value(c, first.config, pgd_row, aa_row)))
    worst = [(w, False) for w in rep.worst_case.values()] + [(w, True) for w in rep.worst_case_slice.values()]
    if worst:
        lines += ['', '| Robust accuracy under the whole suite | n | This model (%) |', '| --- | --- | --- |']
        lines += [f'| {md(worst_label(w, s))} | {_n(w.n)} | {pct(w.accuracy)} |' for w, s in worst]
    lines += _cw_table(rep, pgd_row)
    if any(len(c.attacks) > 1 for c in rep.columns.values()):
        lines += ['', '<details><summary>Every attack, one objective each</summary>', '',
                  '| attack | n | accuracy (%) |', '| --- | --- | --- |']
        lines += [f'| {md(a.name)} | {_n(a.n)} | {pct(a.accuracy)} |' for a in rep.attacks.values()
                  if a.family != 'cw']
        lines += ['', '</details>']
    notes = _paper_notes(pgd_row, aa_row, sources, arch_caveat) + [f'Data caveat: {caveat}']
    notes += _autoattack_notes(rep)
    if not standalone:
        notes.append('The evaluation ran cheapest first (option standalone = false): an attack skips points that a '
                     'smaller budget of the same attack already broke, and AutoAttack runs only on points that '
                     'survived every cheaper Linf attack at its eps, so each figure is the accuracy under that '
                     'composite attack (never higher than the attack alone would give).')
    notes += [f'Evaluation warning (from the report): {md(w)}' for w in rep.warnings]
    return '\n'.join(lines), '\n'.join(f'- {n}' for n in notes)
