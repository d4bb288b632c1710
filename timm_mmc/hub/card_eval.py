"""The card's evaluation section: the tables (every number from the report, the paper's labelled) and the notes."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ..report import AttackResult, Column, EvalReport, WorstCase, fmt_eps, percent
from .common import md, prose
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


def _paper_notes(pgd_row: Optional[Dict[str, Any]], aa_row: Optional[Dict[str, Any]], sources: Dict[str, Any],
                 arch_caveat: Optional[str]) -> List[str]:
    notes = prose()['notes']
    if pgd_row is None and aa_row is None:
        return [notes['no_paper_row']]
    used = []
    if pgd_row is not None:
        used.append(f'{sources.get(pgd_row["source"], {}).get("cite", pgd_row["source"])}, {pgd_row["table"]}, '
                    f'row "{pgd_row["label"]}"')
    if aa_row is not None:
        used.append(f'{sources.get(aa_row["source"], {}).get("cite", aa_row["source"])}: {aa_row["label"]}, '
                    f'clean {aa_row["clean"]}, reported {aa_row["reported"]}, AutoAttack {aa_row["autoattack"]}')
    return [notes['paper_context'].format(used='; '.join(used))] + ([f'Architecture: {arch_caveat}.'] if arch_caveat
                                                                     else [])


def _autoattack_notes(rep: EvalReport) -> List[str]:
    text = prose()['notes']
    aa = rep.find_attacks(family='autoattack')
    if not aa:
        return [text['no_autoattack']]
    pkg = rep.versions.get('pyautoattack')
    pkg = f' (package pyautoattack {pkg})' if pkg else ' (package version not recorded)'
    notes = [text['autoattack_standard' if a.version == 'standard' else 'autoattack_not_standard'].format(
        name=a.name, version=a.version, package=pkg) for a in aa]
    head = 'autoattack_scaling_distance' if rep.logits == 'distance' else 'autoattack_scaling_linear'
    return notes + [text['autoattack_scaling'] + ' ' + text[head]]


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
        notes.append(prose()['notes']['cheapest_first'])
    notes += [f'Evaluation warning (from the report): {md(w)}' for w in rep.all_warnings()]
    return '\n'.join(lines), '\n'.join(f'- {n}' for n in notes)
