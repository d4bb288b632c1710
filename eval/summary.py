"""Summarising a suite's records into the report's typed pieces: accuracies, columns, the worst case, diagnostics.

:func:`summarise` fills what a suite measured into a :class:`timm_mmc.report.EvalReport` (attacks, columns and worst
cases as the :mod:`timm_mmc.report` dataclasses): the report is the one place those fields are declared.
"""
from __future__ import annotations

import math
import dataclasses
from typing import Any, Dict, List, Sequence, Tuple

import torch

from timm_mmc import AttackResult, CheckError, Column, EvalReport, WorstCase, eps_key

from .runner import Records
from .specs import AttackSpec
from .threat import AttackFamily, ThreatModel

__all__ = ['summarise']

_TOL = 1e-12  # float tolerance of eps and accuracy comparisons


def _share(mask: torch.Tensor, of: torch.Tensor) -> float:
    """``mask`` among the points of ``of`` (0 when there are none)."""
    k = int(of.sum())
    return (mask & of).double().sum().item() / max(k, 1)


def _still_robust(rec: Records, specs: Sequence[AttackSpec], start: torch.Tensor, own: bool = False) -> torch.Tensor:
    """Per sample: ``start`` and broken by none of ``specs`` (each counted where it ran, its ``in_slice``).

    With ``own``, an attack counts only the points it attacked itself: a point it skipped because an earlier attack
    broke it (``skip_after``) is that attack's break, not its own.
    """
    robust = start.clone()
    for s in specs:
        a = rec.attacks[s.name]
        robust &= a['robust'] | ~(a['attacked'] if own else a['in_slice'])
    return robust


def _cw_stats(a: Dict[str, torch.Tensor], sl: torch.Tensor) -> Dict[str, float]:
    """C&W: success rate over the attacked points, mean / median L2 over the successes, the paper's mean."""
    succ = a['success'] & sl
    l2 = a['l2'][succ]
    n_att, n_sl = int(a['attacked'].sum()), int(sl.sum())
    return dict(success_rate=(int(succ.sum()) / n_att) if n_att else math.nan,
                l2_mean=l2.mean().item() if l2.numel() else math.nan,
                l2_median=l2.median().item() if l2.numel() else math.nan,
                l2_paper=(l2.sum().item() / n_sl) if n_sl else math.nan)


def _attack_result(spec: AttackSpec, rec: Records) -> AttackResult:
    a = rec.attacks[spec.name]
    sl = a['in_slice']
    clean_sl = _share(rec.clean, sl)
    acc = _share(a['robust'], sl)
    if spec.threat == ThreatModel.LINF and acc > clean_sl + _TOL:
        raise CheckError(f'{spec.name}: robust accuracy {acc:.4f} exceeds clean accuracy {clean_sl:.4f}.')
    extra = dict(rec.extra.get(spec.name, {}))
    if 'attacks' in extra:
        extra['components'] = extra.pop('attacks')
    if spec.family == AttackFamily.CW:
        extra.update(_cw_stats(a, sl))
    n_attacked = extra.pop('n_attacked', int(a['attacked'].sum()))  # AutoAttack counts its own (summed over processes)
    if 'gradient_steps' in extra:
        extra['gradient_steps_per_point'] = extra['gradient_steps'] / max(n_attacked, 1)
    return AttackResult(
        name=spec.name, family=spec.family.value, threat=spec.threat.value, eps=spec.eps, targeted=spec.targeted,
        n=int(sl.sum()), n_attacked=n_attacked, accuracy=acc, clean_accuracy=clean_sl, steps=spec.steps,
        objective=spec.objective, version=spec.version, method=spec.method, config=spec.config_dict(),
        n_limit=spec.n_limit, skip_after=list(spec.skip_after), column=spec.column,
        time_s=rec.times.get(spec.name, 0.0), **extra)


def _columns(rec: Records, specs: Sequence[AttackSpec]) -> Dict[str, Column]:
    """Per table column, the per-sample worst case over the attacks (objectives) that share it."""
    groups: Dict[str, List[AttackSpec]] = {}
    for spec in specs:
        if spec.column is not None and spec.family != AttackFamily.CW:
            groups.setdefault(spec.column, []).append(spec)
    out = {}
    for name, members in groups.items():
        robust = _still_robust(rec, members, torch.ones_like(rec.clean))
        in_slice = torch.ones_like(rec.clean)
        for s in members:
            in_slice &= rec.attacks[s.name]['in_slice']
        first = members[0]
        objectives = list(dict.fromkeys(s.objective for s in members if s.objective is not None))
        out[name] = Column(name=name, family=first.family.value, eps=first.eps, targeted=first.targeted,
                           n=int(in_slice.sum()), accuracy=_share(robust, in_slice), attacks=[s.name for s in members],
                           steps=first.steps, version=first.version, method=first.method, objectives=objectives)
    return out


Masks = Dict[float, Tuple[torch.Tensor, torch.Tensor]]  # per eps: (robust, covered) per sample


def _worst_cases(rec: Records, linf: Sequence[AttackSpec]) -> Tuple[Dict[str, WorstCase], Masks]:
    """Per eps, the per-sample worst case over every Linf attack with eps <= it, and its masks.

    The worst case at eps counts only the points some attack at that eps ran on: a point no attack of that budget
    reached (outside every prefix of ``--aa-n``, ``--spsa-n``) is left out of its ``n`` rather than counted robust.
    """
    worst: Dict[str, WorstCase] = {}
    masks: Masks = {}
    for eps in sorted({s.eps for s in linf}):
        within = [s for s in linf if s.eps <= eps + _TOL]
        covered = torch.zeros_like(rec.clean)
        for s in within:
            if abs(s.eps - eps) <= _TOL:
                covered |= rec.attacks[s.name]['in_slice']
        if not covered.any():  # no attack of this budget reached a point: no figure (a NaN would not load back)
            continue
        robust = _still_robust(rec, within, rec.clean) & covered
        masks[eps] = robust, covered
        worst[eps_key(eps)] = WorstCase(eps=eps, accuracy=_share(robust, covered), n=int(covered.sum()),
                                        attacks=[s.name for s in within])
    return worst, masks


def _worst_slices(rec: Records, linf: Sequence[AttackSpec], worst: Dict[str, WorstCase],
                  masks: Masks) -> Dict[str, WorstCase]:
    """Where some Linf attack ran on the first k < n points only (AutoAttack with aa_n, SPSA with spsa_n), the worst
    case counts it there only; so also the worst case on that prefix: AutoAttack's if it was limited, else the
    largest one, naming the attacks that covered fewer points still. None where that prefix is all the worst case
    counted already."""
    n = rec.clean.numel()
    out: Dict[str, WorstCase] = {}
    for eps, (robust, counted) in masks.items():
        within = [s for s in linf if s.eps <= eps + _TOL]
        limited = [(s.family == AttackFamily.AUTOATTACK, int(rec.attacks[s.name]['in_slice'].sum()),
                    rec.attacks[s.name]['in_slice']) for s in within if int(rec.attacks[s.name]['in_slice'].sum()) < n]
        if not limited:
            continue
        covered = max(limited, key=lambda t: t[:2])[2] & counted
        k = int(covered.sum())
        if 0 < k < int(counted.sum()):
            partial = [s.name for s in within if bool((covered & ~rec.attacks[s.name]['in_slice']).any())]
            out[eps_key(eps)] = WorstCase(eps=eps, accuracy=_share(robust, covered), n=k,
                                          attacks=list(worst[eps_key(eps)].attacks), partial=partial)
    return out


def summarise(rec: Records, specs: Sequence[AttackSpec], report: EvalReport) -> EvalReport:
    """``report`` with what the suite measured: the example count, clean accuracy, per-attack results (with C&W
    statistics), the per-sample worst case per eps, gradient-masking diagnostics and every warning.

    Args:
        rec: The suite's records (merged over processes).
        specs: The attacks that were run, in suite order.
        report: The report's description of the run (model, data, options, ...); its measured fields are replaced.

    Raises:
        CheckError: A Linf attack's robust accuracy above the clean accuracy (a broken run-time invariant).
    """
    n = rec.clean.numel()
    results = {spec.name: _attack_result(spec, rec) for spec in specs}
    columns = _columns(rec, specs)
    linf = [s for s in specs if s.threat == ThreatModel.LINF and s.eps is not None]
    worst, masks = _worst_cases(rec, linf)
    worst_slice = _worst_slices(rec, linf, worst, masks)
    diags = _diagnostics(rec, specs, results, columns, masks)
    warns = list(rec.warnings) + diags.pop('warnings')
    return dataclasses.replace(report, n=n, clean_accuracy=rec.clean.double().mean().item() if n else math.nan,
                               attacks=results, columns=columns, worst_case=worst, worst_case_slice=worst_slice,
                               diagnostics=diags, warnings=warns)


def _diagnostics(rec: Records, specs: Sequence[AttackSpec], results: Dict[str, AttackResult],
                 columns: Dict[str, Column], masks: Masks) -> Dict[str, Any]:
    warns: List[str] = []
    out: Dict[str, Any] = {}
    n_clean = int(rec.clean.sum())
    zg = {obj: (f & rec.clean).double().sum().item() / max(n_clean, 1) for obj, f in rec.zero_grad.items()}
    out['zero_input_gradient_fraction'] = zg
    used = {s.objective for s in specs if s.family == AttackFamily.PGD}
    for obj, frac in zg.items():
        if frac > 0.01:
            if obj in used:
                warns.append(f'gradient masking: the {obj!r} objective has an exactly zero input gradient on '
                             f'{frac:.1%} of the clean-correct points; attacks with it are unreliable on this model.')
            else:
                warns.append(f'the {obj!r} objective (not used by the suite) has a zero input gradient on {frac:.1%} '
                             f'of the clean-correct points (saturation): an evaluation with it alone would '
                             f'overstate robustness.')
    # black-box / gradient-free beating white-box
    whitebox = [s for s in specs if s.family in (AttackFamily.PGD, AttackFamily.AUTOATTACK)]
    beat = {}
    for s in specs:
        if s.family not in (AttackFamily.SPSA, AttackFamily.TRANSFER):
            continue
        wb = [w for w in whitebox if w.eps <= s.eps + _TOL]
        if not wb:
            continue
        wb_robust = _still_robust(rec, wb, rec.clean, own=True)  # AutoAttack skips what black-box attacks broke
        a = rec.attacks[s.name]
        k = int((wb_robust & ~a['robust'] & a['in_slice'] & rec.clean).sum())
        beat[s.name] = k
        if k > 0:
            warns.append(f'gradient masking: {s.name} ({s.family.value}, no model gradients) broke {k} points that '
                         f'every white-box attack at eps <= {eps_key(s.eps)}/255 left standing.')
    out['blackbox_beats_whitebox'] = beat
    # robust accuracy must fall with eps and with steps
    flat = []
    min_left = 10
    for s in specs:
        if s.family not in (AttackFamily.PGD, AttackFamily.SPSA):
            continue
        for t in specs:
            if t.family != s.family or t.targeted != s.targeted or t is s:
                continue
            if t.objective != s.objective:
                continue
            bigger_eps = t.eps > s.eps + _TOL and t.steps == s.steps
            more_steps = (t.steps or 0) > (s.steps or 0) and abs(t.eps - s.eps) < _TOL
            if not (bigger_eps or more_steps):
                continue
            a_s, a_t = results[s.name].accuracy, results[t.name].accuracy
            left = a_s * results[s.name].n
            if a_t >= a_s - _TOL and left >= min_left:
                what = 'eps' if bigger_eps else 'steps'
                flat.append(f'{s.name} -> {t.name}')
                warns.append(f'gradient masking?: robust accuracy does not fall with {what}: {s.name} {a_s:.2%} -> '
                             f'{t.name} {a_t:.2%}.')
    out['not_falling'] = flat
    # the suite's worst case must fall with eps too (on the points both budgets counted)
    keys = sorted(masks)
    for lo, hi in zip(keys, keys[1:]):
        both = masks[lo][1] & masks[hi][1]
        a_lo, a_hi = _share(masks[lo][0], both), _share(masks[hi][0], both)
        if a_hi >= a_lo - _TOL and (masks[lo][0] & both).sum() >= min_left:
            warns.append(f'gradient masking?: the worst case does not fall from eps {eps_key(lo)}/255 ({a_lo:.2%}) to '
                         f'{eps_key(hi)}/255 ({a_hi:.2%}).')
    out['warnings'] = warns
    return out
