"""Reading version 1.0 evaluation reports (those of the first releases): their dict in today's layout.

Only :mod:`timm_mmc.report` calls this: it alone owns the report format, and builds and checks the typed report
from what :func:`from_v1` returns.
"""
from __future__ import annotations

from typing import Any, Dict

__all__ = ['from_v1']

_ATTACK_EXTRA = ('success_rate', 'l2_mean', 'l2_median', 'l2_paper', 'gradient_steps', 'gradient_steps_per_point',
                 'logit_scale', 'max_clean_margin', 'log', 'zero_grad_fraction_first_step', 'zero_grad_n')


def _attack(a: Dict[str, Any]) -> Dict[str, Any]:
    cfg = a.get('config') or {}
    out = {k: a[k] for k in ('name', 'family', 'threat', 'eps', 'targeted', 'n', 'n_attacked', 'accuracy',
                             'clean_accuracy', 'n_limit', 'skip_after', 'column', 'seed', 'time_s') if k in a}
    out.update(config=cfg, steps=cfg.get('steps'), objective=cfg.get('objective'),
               version=cfg.get('version') if a.get('family') == 'autoattack' else None, method=cfg.get('method'),
               components=a.get('attacks'))
    out.update({k: a[k] for k in _ATTACK_EXTRA if k in a})
    return out


def _column(name: str, c: Dict[str, Any], attacks: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    members = [attacks[m] for m in c.get('attacks') or [] if m in attacks]
    first = members[0] if members else {}
    objectives = []
    for m in members:
        if m.get('objective') is not None and m['objective'] not in objectives:
            objectives.append(m['objective'])
    return dict(name=name, family=c.get('family'), eps=c.get('eps'), targeted=c.get('targeted'), n=c.get('n'),
                accuracy=c.get('accuracy'), attacks=c.get('attacks') or [], steps=first.get('steps'),
                version=first.get('version'), method=first.get('method'), objectives=objectives)


def from_v1(data: Dict[str, Any], version: str) -> Dict[str, Any]:
    """A version 1.0 report (eval of the first releases) in the layout of ``version``; its numbers unchanged.

    1.0 kept steps / objective / version inside each attack's ``config``, called the logits kind ``head``
    (``mm`` / ``linear``) and recorded a package its look-up missed as ``"not installed"`` (even where it had run):
    such entries become None, "not recorded".
    """
    out = dict(data, version=version)
    attacks = {k: _attack(dict(a, name=a.get('name', k))) for k, a in (data.get('attacks') or {}).items()}
    out['attacks'] = attacks
    out['columns'] = {k: _column(k, c, attacks) for k, c in (data.get('columns') or {}).items()}
    head = out.pop('head', None)  # 1.0 said 'mm' or 'linear'
    out['logits'] = 'distance' if head == 'mm' else 'linear'
    out['own_objective'] = 'mm' if head == 'mm' else 'ce'
    out['versions'] = {k: (None if v == 'not installed' else v) for k, v in (data.get('versions') or {}).items()}
    return out
