"""The card's model-index: a small fixed vocabulary of metric names and types, the same in every card.

Names say *what* was measured; the budget, targeting and the number of points go in the fields the model-index has
for them (``metric_config``; ``metric_args.eps``, ``metric_args.n``; ``dataset_args.n``), never in the name, so that
the same measurement has the same name in every release:

==================  =====================  ===================================================================
metric_type         metric_name            what it is
==================  =====================  ===================================================================
accuracy            Clean accuracy         accuracy on the unperturbed images
robust_accuracy     PGD-k                  a PGD column: per point, the worst case over its objectives
robust_accuracy     AutoAttack <version>   AutoAttack, alone or on the survivors of the cheaper attacks (below)
robust_accuracy     SPSA-k                 gradient-free SPSA on the logit margin
robust_accuracy     Transfer PGD-k, ...    adversarial examples of a source model, judged on this one
accuracy            Gaussian noise         a random corruption, not an attack (``Random rotation`` likewise)
robust_accuracy     Worst case             per point, the worst case over every Linf attack of the suite
==================  =====================  ===================================================================

Composites are named in ``metric_args.composite``: without ``--standalone`` an attack skips points a cheaper one of
its family already broke, and AutoAttack runs only on the points every cheaper Linf attack left standing, so its
figure is "AutoAttack on the survivors of the cheaper attacks" (the worst case of those and AutoAttack). Values are
the report's fractions, unchanged.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..report import Column, EvalReport, WorstCase, fmt_eps
from .common import dataset_info

__all__ = ['CLEAN', 'WORST_CASE', 'WORST_CASE_SLICE', 'ROBUST', 'ACCURACY', 'metric_name', 'eval_results']

ACCURACY, ROBUST = 'accuracy', 'robust_accuracy'
CLEAN = 'Clean accuracy'
WORST_CASE = 'Worst case over the suite'
WORST_CASE_SLICE = 'Worst case over the suite, on the first points where every attack ran'
SURVIVORS = ' on the survivors of the cheaper attacks'
_TYPED = ('steps', 'objective', 'version', 'method')  # settings the entry names by attribute


def metric_name(c: Column, rep: EvalReport) -> str:
    """The vocabulary's name of a column of ``rep`` (see the module's table)."""
    if c.family == 'pgd':
        return f'PGD-{c.steps}'
    if c.family == 'autoattack':
        return f'AutoAttack {c.version}' + (SURVIVORS if rep.attacks[c.attacks[0]].skip_after else '')
    if c.family == 'spsa':
        return f'SPSA-{c.steps}'
    if c.family == 'transfer':
        return f'Transfer {str(c.method).upper()}-{c.steps}'
    return {'noise': 'Gaussian noise', 'rotation': 'Random rotation'}[c.family]


def _composite(c: Column, rep: EvalReport) -> Optional[str]:
    """What a column's figure is when it is more than one attack alone on every point."""
    parts = []
    if len(c.objectives) > 1:
        parts.append(f'per point, the worst case over the objectives {"/".join(c.objectives)}')
    if any(rep.attacks[a].skip_after for a in c.attacks):
        if c.family == 'autoattack':
            parts.append('AutoAttack ran only on the points every cheaper Linf attack at its eps left standing '
                         '(metric_args.skipped_after), so this is the worst case over those attacks and AutoAttack')
        else:
            parts.append('each attack ran only on the points its smaller budgets (same family, objective and '
                         'targeting; metric_args.skipped_after) left standing, so this is the accuracy under that '
                         'sequence')
    return '; '.join(parts) or None


def _settings(eps: Optional[float], targeted: Optional[bool], threat: str, config: Dict[str, Any]) -> str:
    """``metric_config``: the threat model and budget (a corruption: its settings), and the targeting if it applies."""
    if eps is None:
        return ', '.join([threat] + [f'{k}={v}' for k, v in sorted(config.items())])
    return f'{threat}, eps={fmt_eps(eps)}' + ('' if targeted is None else (', targeted' if targeted
                                                                          else ', untargeted'))


def eval_results(rep: EvalReport, dataset: str) -> List[Any]:
    """The model-index entries (``huggingface_hub.EvalResult``) of a report, in the vocabulary above.

    Entries: clean accuracy, one per table column except C&W (a distortion, not an accuracy at a budget: in the card's
    body only), one per worst case. ``dataset_args.n`` is the number of evaluated points (the Hub keeps one per data
    set), ``metric_args.n`` the points each figure was measured on (AutoAttack or SPSA may cover a prefix only).
    """
    from huggingface_hub import EvalResult

    info = dataset_info(dataset)
    caveat = ' (JPEG q75 re-encoded copy)' if info['caveat'] == 'jpeg' else ''

    def result(metric_type: str, name: str, value: float, config: str, n: int,
               args: Optional[Dict[str, Any]] = None) -> Any:
        return EvalResult(task_type='image-classification', task_name='Image Classification',
                          dataset_type=info['hf_id'], dataset_name=f'{info["pretty"]}{caveat}',
                          dataset_config=info['config'], dataset_split=rep.split, dataset_args={'n': rep.n},
                          metric_type=metric_type, metric_name=name, metric_value=value, metric_config=config,
                          metric_args={k: v for k, v in dict(args or {}, n=n).items() if v is not None})

    out = [result(ACCURACY, CLEAN, rep.clean_accuracy, 'clean', rep.n)]
    for c in rep.columns.values():
        if c.family == 'cw':
            continue
        corruption = c.family in ('noise', 'rotation')
        member = rep.attacks[c.attacks[0]]
        skipped = sorted({b for a in c.attacks for b in rep.attacks[a].skip_after})
        args = dict(threat=member.threat, eps=c.eps, steps=c.steps, targeted=None if corruption else c.targeted,
                    version=c.version, method=c.method, objectives=c.objectives or None, attacks=c.attacks,
                    composite=_composite(c, rep), skipped_after=skipped or None,
                    source_model=rep.transfer_from if c.family == 'transfer' else None,
                    package=(f'pyautoattack {rep.versions.get("pyautoattack")}' if c.family == 'autoattack'
                             and rep.versions.get('pyautoattack') else None))
        args.update({k: v for k, v in member.config.items() if k not in _TYPED})  # the other settings, as run
        if corruption:
            args.update(steps=None, version=None, method=None)
        config = _settings(c.eps, None if corruption or c.family == 'autoattack' else c.targeted, member.threat,
                           member.config)
        out.append(result(ACCURACY if corruption else ROBUST, metric_name(c, rep), c.accuracy, config, c.n,
                          args))
    for on_slice, name in ((False, WORST_CASE), (True, WORST_CASE_SLICE)):
        for w in (rep.worst_case_slice if on_slice else rep.worst_case).values():
            out.append(result(ROBUST, name, w.accuracy, _settings(w.eps, None, 'Linf', {}), w.n, _worst_args(w)))
    return out


def _worst_args(w: WorstCase) -> Dict[str, Any]:
    return dict(threat='Linf', eps=w.eps, attacks=w.attacks, on_fewer_points=w.partial or None,
                composite='per point, the worst case over every Linf attack of the suite with eps <= this one')
