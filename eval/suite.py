"""Attack suites, the cheapest-first runner, the per-sample worst case and gradient-masking diagnostics.

A suite is a list of :class:`AttackSpec`, run in order (cheapest first). The runner produces *per-sample* records
(:class:`Records`): whether each point is still classified correctly after each attack, the C&W distance, zero-gradient
flags. Records from several processes (``accelerate launch``) merge by concatenation; :func:`summarise` turns them into
accuracies, the worst case over the suite and diagnostics.

Skipping: a point an attack of the same family already broke at a smaller or equal budget (fewer steps, smaller eps,
same objective and target) is not attacked again and counts as broken (that adversarial example is valid for the
larger budget, so the reported figure is the accuracy under the stronger composite attack). AutoAttack runs only on the
points that survived every cheaper Linf attack at its eps. ``standalone=True`` turns skipping off (every attack on every
correctly classified point, comparable one by one with published tables; slower).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from timm_mmc.attacks import PGD, check_linf_batch, objective

from .aa import ScaledLogits, choose_logit_scale, run_autoattack
from .blackbox import MIM
from .corruptions import gaussian_noise, random_rotation
from .cw import CWL2
from .spsa import SPSA
from .threat import AttackFamily, ThreatModel

__all__ = ['SUITES', 'SuiteOptions', 'AttackSpec', 'build_suite', 'Records', 'run_suite', 'summarise',
           'is_mm_model', 'default_objectives', 'merge_records']

SUITES = ('quick', 'paper', 'autoattack', 'full')


def is_mm_model(model: nn.Module) -> bool:
    """True when the model's logits are distances to class centers (MMC, MMLDA, L-GM heads)."""
    from timm_mmc.heads import CenterClassifier
    return any(isinstance(m, CenterClassifier) for m in model.modules())


def default_objectives(mm: bool) -> Tuple[str, ...]:
    """PGD objectives: the authors' adaptive ones and the margin for MM heads; CE and the margin otherwise."""
    return ('mm', 'margin') if mm else ('ce', 'margin')


@dataclass
class SuiteOptions:
    """Every knob of a suite; written to the report as is.

    Attributes mirror the command-line flags of :mod:`eval.robustness`; eps values are in pixel units.
    """
    eps: Tuple[float, ...] = (8 / 255, 16 / 255)
    pgd_steps: Tuple[int, ...] = (10, 50)
    pgd_alpha: float = 2 / 255
    objectives: Tuple[str, ...] = ('mm', 'margin')
    cw_n: Optional[int] = 25
    cw_binary_steps: int = 9
    cw_max_iter: int = 1000
    cw_lr: float = 5e-3
    cw_initial_const: float = 0.01
    spsa_n: Optional[int] = 25
    spsa_steps: int = 10
    spsa_samples: int = 128
    spsa_delta: float = 0.01
    spsa_lr: float = 0.01
    noise_sigmas: Tuple[float, ...] = (0.05,)
    rotation_degrees: float = 30.0
    transfer_steps: int = 10
    aa_version: str = 'fast'
    aa_eps: float = 8 / 255
    aa_n: Optional[int] = None
    aa_n_iter: Optional[int] = None
    aa_target_classes: Optional[int] = None
    aa_target_margin: float = 10.0
    standalone: bool = False
    seed: int = 0
    batch_size: int = 250


@dataclass
class AttackSpec:
    """One attack configuration of a suite.

    Attributes:
        name: Unique key (``pgd10-un-8-mm``).
        family: Attack family.
        threat: Threat model (Linf results enter the worst case).
        eps: Linf radius in pixel units (None for C&W and corruptions).
        targeted: Targeted (random target != y, seeded) or not.
        config: Everything else (steps, objective, ...).
        n_limit: Run on the first ``n_limit`` evaluated points only (None: all).
        skip_after: Attacks whose broken points are not attacked again (counted as broken here).
        column: Table column this attack belongs to (objectives of one PGD column share it).
    """
    name: str
    family: AttackFamily
    threat: ThreatModel
    eps: Optional[float]
    targeted: bool
    config: Dict[str, Any] = field(default_factory=dict)
    n_limit: Optional[int] = None
    skip_after: List[str] = field(default_factory=list)
    column: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d['family'] = self.family.value
        d['threat'] = self.threat.value
        return d


def _e(eps: float) -> str:
    """eps in /255 units for names: 8/255 -> '8'."""
    v = eps * 255
    return f'{v:.0f}' if abs(v - round(v)) < 1e-6 else f'{v:.3g}'


def _tu(targeted: bool) -> str:
    return 'tar' if targeted else 'un'


def build_suite(suite: str, opts: SuiteOptions, families: Optional[Sequence[AttackFamily]] = None,
                transfer: bool = False, source_objective: str = 'ce') -> List[AttackSpec]:
    """The attacks of a suite, cheapest first.

    Args:
        suite: ``quick``, ``paper``, ``autoattack`` or ``full``.
        opts: Suite options.
        families: Keep only these attack families (None: all of the suite).
        transfer: A source model is given (adds the transfer attacks to ``paper`` and ``full``).
        source_objective: Objective of the transfer attacks on the source model.

    Raises:
        ValueError: Unknown suite.
    """
    if suite not in SUITES:
        raise ValueError(f'unknown suite {suite!r}; choose one of {SUITES}.')
    specs: List[AttackSpec] = []
    skip = not opts.standalone
    if suite == 'quick':
        eps_list, steps_list = (opts.eps[0],), (opts.pgd_steps[0],)
    else:
        eps_list, steps_list = tuple(sorted(opts.eps)), tuple(sorted(opts.pgd_steps))
    with_corr = suite in ('paper', 'full')
    with_pgd = suite in ('quick', 'paper', 'full')
    with_spsa_cw = suite in ('paper', 'full')
    with_aa = suite in ('quick', 'autoattack', 'full')
    with_transfer = transfer and suite in ('paper', 'full')
    if with_corr:
        for sigma in opts.noise_sigmas:
            specs.append(AttackSpec(f'noise-{sigma:g}', AttackFamily.NOISE, ThreatModel.CORRUPTION, None, False,
                                    dict(sigma=sigma), column=f'noise {sigma:g}'))
        specs.append(AttackSpec(f'rotation-{opts.rotation_degrees:g}', AttackFamily.ROTATION, ThreatModel.CORRUPTION,
                                None, False, dict(max_degrees=opts.rotation_degrees),
                                column=f'rotation {opts.rotation_degrees:g}'))

    def pgd(steps_sel: Sequence[int]) -> None:
        for steps in steps_sel:
            for eps in eps_list:
                for targeted in (True, False):
                    for obj in opts.objectives:
                        name = f'pgd{steps}-{_tu(targeted)}-{_e(eps)}-{obj}'
                        before = [f'pgd{s}-{_tu(targeted)}-{_e(e)}-{obj}' for s in steps_list for e in eps_list
                                  if s <= steps and e <= eps and (s, e) != (steps, eps)] if skip else []
                        specs.append(AttackSpec(
                            name, AttackFamily.PGD, ThreatModel.LINF, eps, targeted,
                            dict(steps=steps, alpha=opts.pgd_alpha, objective=obj, random_start=True,
                                 keep_best=True), skip_after=before,
                            column=f'PGD{steps} {_tu(targeted)} {_e(eps)}'))

    def transfer_attacks() -> None:
        for method in ('pgd', 'mim'):
            for eps in eps_list:
                name = f'transfer-{method}{opts.transfer_steps}-un-{_e(eps)}'
                before = [f'transfer-{method}{opts.transfer_steps}-un-{_e(e)}' for e in eps_list if e < eps] \
                    if skip else []
                specs.append(AttackSpec(name, AttackFamily.TRANSFER, ThreatModel.LINF, eps, False,
                                        dict(method=method, steps=opts.transfer_steps, objective=source_objective,
                                             alpha=opts.pgd_alpha if method == 'pgd' else eps / opts.transfer_steps,
                                             random_start=method == 'pgd', decay=1.0 if method == 'mim' else None),
                                        skip_after=before, column=f'transfer {method.upper()}{opts.transfer_steps} '
                                                                  f'un {_e(eps)}'))

    if with_pgd:
        pgd(steps_list[:1])
    if with_transfer:
        transfer_attacks()
    if with_pgd and len(steps_list) > 1:
        pgd(steps_list[1:])
    if with_aa:
        version = opts.aa_version
        before = [s.name for s in specs if s.threat == ThreatModel.LINF and s.eps is not None
                  and s.eps <= opts.aa_eps + 1e-12] if skip else []
        n_limit = opts.aa_n
        specs.append(AttackSpec(f'autoattack-{version}-{_e(opts.aa_eps)}', AttackFamily.AUTOATTACK, ThreatModel.LINF,
                                opts.aa_eps, False,
                                dict(version=version, n_iter=opts.aa_n_iter, target_classes=opts.aa_target_classes,
                                     target_margin=opts.aa_target_margin),
                                n_limit=n_limit, skip_after=before, column=f'AA {version} {_e(opts.aa_eps)}'))
    if with_spsa_cw:
        for eps in eps_list:
            for targeted in (True, False):
                name = f'spsa{opts.spsa_steps}-{_tu(targeted)}-{_e(eps)}'
                before = [f'spsa{opts.spsa_steps}-{_tu(targeted)}-{_e(e)}' for e in eps_list if e < eps] \
                    if skip else []
                specs.append(AttackSpec(name, AttackFamily.SPSA, ThreatModel.LINF, eps, targeted,
                                        dict(steps=opts.spsa_steps, n_samples=opts.spsa_samples,
                                             delta=opts.spsa_delta, lr=opts.spsa_lr, objective='margin',
                                             random_start=True),
                                        n_limit=opts.spsa_n, skip_after=before,
                                        column=f'SPSA{opts.spsa_steps} {_tu(targeted)} {_e(eps)}'))
        for targeted in (True, False):
            specs.append(AttackSpec(f'cw-{_tu(targeted)}', AttackFamily.CW, ThreatModel.L2, None, targeted,
                                    dict(binary_steps=opts.cw_binary_steps, max_iter=opts.cw_max_iter,
                                         lr=opts.cw_lr, initial_const=opts.cw_initial_const, confidence=0.0,
                                         abort_early=True),
                                    n_limit=opts.cw_n, column=f'C&W {_tu(targeted)}'))
    if families is not None:
        keep = set(families)
        specs = [s for s in specs if s.family in keep]
        names = {s.name for s in specs}
        for s in specs:
            s.skip_after = [b for b in s.skip_after if b in names]
    return specs


@dataclass
class Records:
    """Per-sample results of one process; merged across processes by :func:`merge_records`.

    Attributes:
        positions: Position of every sample in the evaluation order (0 .. n-1).
        clean: Correct on the clean image.
        attacks: Per attack: ``robust`` (still correct), ``in_slice``, ``attacked`` (bool tensors) and for C&W
            ``l2`` / ``success``.
        zero_grad: Per objective, whether the input gradient at the clean image is exactly zero (clean-correct points).
        times: Seconds per attack (per process).
        warnings: Warnings met while running (AutoAttack's own, prefixed).
        extra: Per attack, extra facts (AutoAttack's logit scale and log, PGD's zero-gradient share).
    """
    positions: torch.Tensor
    clean: torch.Tensor
    attacks: Dict[str, Dict[str, torch.Tensor]] = field(default_factory=dict)
    zero_grad: Dict[str, torch.Tensor] = field(default_factory=dict)
    times: Dict[str, float] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    extra: Dict[str, Dict[str, Any]] = field(default_factory=dict)


def merge_records(parts: Sequence[Records]) -> Records:
    """Concatenate per-process records and sort them by position; times are the max over processes."""
    if len(parts) == 1:
        return parts[0]
    pos = torch.cat([p.positions for p in parts])
    order = pos.argsort()
    cat = lambda ts: torch.cat(ts)[order]  # noqa: E731
    out = Records(pos[order], cat([p.clean for p in parts]))
    for name in parts[0].attacks:
        out.attacks[name] = {k: cat([p.attacks[name][k] for p in parts]) for k in parts[0].attacks[name]}
    for obj in parts[0].zero_grad:
        out.zero_grad[obj] = cat([p.zero_grad[obj] for p in parts])
    for name in parts[0].times:
        out.times[name] = max(p.times.get(name, 0.0) for p in parts)
    seen = set()
    for p in parts:
        for w in p.warnings:
            if w not in seen:
                seen.add(w)
                out.warnings.append(w)
    for p in parts:
        for name, d in p.extra.items():
            into = out.extra.setdefault(name, {})
            for k, v in d.items():
                if k in ('gradient_steps', 'n_attacked') and k in into:
                    into[k] += v  # per-process counts add up
                else:
                    into[k] = v
    for d in out.extra.values():
        if 'gradient_steps' in d:
            d.pop('gradient_steps_per_point', None)  # recomputed from the merged counts by summarise
    return out


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit='img', disable=not enabled, leave=False, dynamic_ncols=True)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)])


def _zero_grad_flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor, obj: str,
                     batch_size: int) -> torch.Tensor:
    """Per sample: is the input gradient of objective ``obj`` (untargeted) at the clean image exactly zero?"""
    fn = objective(obj)
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size].clone().requires_grad_(True)
        losses = fn(model(xb).float(), y[i:i + batch_size], None)
        (g,) = torch.autograd.grad(losses.sum(), xb)
        out.append(g.flatten(1).abs().amax(1) == 0)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool, device=x.device)


def run_suite(model: nn.Module, specs: Sequence[AttackSpec], opts: SuiteOptions, x: torch.Tensor, y: torch.Tensor,
              targets: torch.Tensor, positions: torch.Tensor, num_classes: int,
              source_model: Optional[nn.Module] = None, progress: bool = True,
              diagnostic_objectives: Sequence[str] = ('ce', 'mm', 'margin')) -> Records:
    """Run ``specs`` in order on ``(x, y)`` (this process's share of the evaluation set).

    Args:
        model: The model under evaluation (eval mode), [0, 1] images to logits.
        specs: From :func:`build_suite`.
        opts: Suite options.
        x: Images in [0, 1], float.
        y: Labels.
        targets: A fixed random target != y per sample (seeded over the whole evaluation set).
        positions: Position of each sample in the evaluation order (for slices like ``cw_n``).
        num_classes: Classes of the model.
        source_model: Source of the transfer attacks.
        progress: Show a progress bar per attack.
        diagnostic_objectives: Objectives whose zero-gradient share is measured at the clean points.
    """
    bs = opts.batch_size
    clean = _predict(model, x, bs) == y
    positions = positions.to(clean.device)  # the slices (in_slice) are masks over x's points, on x's device
    rec = Records(positions.clone(), clean.clone())
    ok = clean.nonzero().squeeze(1)
    for obj in diagnostic_objectives:
        flags = torch.zeros_like(clean)
        if ok.numel():
            flags[ok] = _zero_grad_flags(model, x[ok], y[ok], targets[ok], obj, bs)
        rec.zero_grad[obj] = flags
    by_name: Dict[str, AttackSpec] = {}
    for k, spec in enumerate(specs):
        if spec.name in by_name:
            raise ValueError(f'attack {spec.name!r} appears twice in the suite.')
        by_name[spec.name] = spec
        seed = opts.seed + 1000 * (k + 1)
        in_slice = positions < spec.n_limit if spec.n_limit is not None else torch.ones_like(clean)
        t0 = time.perf_counter()
        if spec.threat == ThreatModel.CORRUPTION:
            robust = _run_corruption(model, spec, x, y, in_slice, seed, bs, progress)
            rec.attacks[spec.name] = dict(robust=robust, in_slice=in_slice, attacked=in_slice.clone())
        elif spec.family == AttackFamily.CW:
            cw_extra: Dict[str, Any] = {}
            rec.attacks[spec.name] = _run_cw(model, spec, x, y, targets, clean & in_slice, in_slice, bs, progress,
                                             num_classes, seed, cw_extra)
            rec.extra[spec.name] = cw_extra
        else:
            broken_before = torch.zeros_like(clean)
            for b in spec.skip_after:
                if b not in rec.attacks:
                    raise ValueError(f'{spec.name} skips after {b}, which has not run.')
                broken_before |= ~rec.attacks[b]['robust'] & rec.attacks[b]['in_slice']
            todo = clean & in_slice & ~broken_before
            robust = clean & in_slice & ~broken_before
            extra: Dict[str, Any] = {}
            if spec.family == AttackFamily.AUTOATTACK:
                robust_todo, extra, warns = _run_aa(model, spec, x[todo], y[todo], x[clean], num_classes, seed, bs)
                rec.warnings.extend(f'AutoAttack: {w}' for w in warns)
                robust[todo] = robust_todo
            else:
                robust[todo] = _run_linf(model, spec, x[todo], y[todo], targets[todo], num_classes, seed, bs,
                                         progress, source_model, extra)
            if (robust & ~clean).any():
                raise RuntimeError(f'{spec.name}: a point counts as robust but is misclassified clean.')
            rec.attacks[spec.name] = dict(robust=robust, in_slice=in_slice, attacked=todo)
            if extra:
                rec.extra[spec.name] = extra
        rec.times[spec.name] = time.perf_counter() - t0
        rec.extra.setdefault(spec.name, {})['seed'] = seed  # random start, targets, probes, noise all derive from it
    return rec


def _run_corruption(model, spec, x, y, in_slice, seed, bs, progress) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    robust = torch.zeros_like(in_slice)
    idx = in_slice.nonzero().squeeze(1)
    bar = _progress(idx.numel(), spec.name, progress)
    for i in range(0, idx.numel(), bs):
        j = idx[i:i + bs]
        if spec.family == AttackFamily.NOISE:
            xc = gaussian_noise(x[j], spec.config['sigma'], gen)
        else:
            xc = random_rotation(x[j], spec.config['max_degrees'], gen)
        with torch.no_grad():
            robust[j] = model(xc).argmax(1) == y[j]
        bar.update(j.numel())
    bar.close()
    return robust


def _run_linf(model, spec: AttackSpec, x, y, t, num_classes, seed, bs, progress, source_model,
              extra: Dict[str, Any]) -> torch.Tensor:
    cfg = spec.config
    tgt = t if spec.targeted else None
    if spec.family == AttackFamily.PGD:
        attack = PGD(model, eps=spec.eps, alpha=cfg['alpha'], steps=cfg['steps'], loss=cfg['objective'],
                     random_start=cfg['random_start'], targeted=spec.targeted, num_classes=num_classes,
                     keep_best=cfg['keep_best'], seed=seed, check=True)
        fwd_bs = bs
    elif spec.family == AttackFamily.SPSA:
        attack = SPSA(model, eps=spec.eps, steps=cfg['steps'], n_samples=cfg['n_samples'], delta=cfg['delta'],
                      lr=cfg['lr'], targeted=spec.targeted, num_classes=num_classes,
                      random_start=cfg['random_start'], loss=cfg['objective'], seed=seed)
        fwd_bs = max(1, min(bs, 2048 // cfg['n_samples']) * 4)
    elif spec.family == AttackFamily.TRANSFER:
        if source_model is None:
            raise ValueError(f'{spec.name} needs a source model (--transfer-from).')
        if cfg['method'] == 'pgd':
            attack = PGD(source_model, eps=spec.eps, alpha=cfg['alpha'], steps=cfg['steps'], loss=cfg['objective'],
                         random_start=True, targeted=False, keep_best=False, seed=seed, check=True)
        else:
            attack = MIM(source_model, eps=spec.eps, steps=cfg['steps'], decay=cfg['decay'],
                         loss=cfg['objective'], seed=seed)
        fwd_bs = bs
    else:
        raise ValueError(f'no Linf runner for family {spec.family}.')
    robust = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    zero = []
    bar = _progress(x.shape[0], spec.name, progress)
    for i in range(0, x.shape[0], fwd_bs):
        xb, yb = x[i:i + fwd_bs], y[i:i + fwd_bs]
        tb = None if tgt is None else tgt[i:i + fwd_bs]
        x_adv = attack.perturb(xb, yb, tb)
        check_linf_batch(x_adv, xb, spec.eps)  # every adversarial batch, whatever the attack checked itself
        if isinstance(attack, PGD):
            zero.append((attack.last_zero_grad_fraction, xb.shape[0]))
        with torch.no_grad():
            robust[i:i + fwd_bs] = model(x_adv).argmax(1) == yb
        bar.update(xb.shape[0])
    bar.close()
    if zero and spec.family == AttackFamily.PGD:
        total = sum(n for _, n in zero)
        extra['zero_grad_fraction_first_step'] = sum(f * n for f, n in zero) / max(total, 1)
        extra['zero_grad_n'] = total
    return robust


def _run_aa(model, spec: AttackSpec, x, y, x_clean, num_classes, seed, bs):
    cfg = spec.config
    scale, max_margin = choose_logit_scale(model, x_clean, cfg['target_margin'], bs)
    wrapped = ScaledLogits(model, scale)
    extra: Dict[str, Any] = dict(logit_scale=scale, max_clean_margin=max_margin, n_attacked=int(x.shape[0]))
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool, device=x.device), extra, []
    out = run_autoattack(wrapped, x, y, spec.eps, version=cfg['version'], seed=seed, batch_size=bs,
                         n_iter=cfg['n_iter'], n_target_classes=cfg['target_classes'], num_classes=num_classes)
    with torch.no_grad():  # judge with the raw model, not the wrapper
        robust = _predict(model, out.x_adv, bs) == y
    extra['attacks'] = out.attacks
    extra['log'] = out.log
    return robust, extra, out.warnings


def _run_cw(model, spec: AttackSpec, x, y, targets, todo, in_slice, bs, progress, num_classes, seed,
            extra: Dict[str, Any]):
    cfg = spec.config
    attack = CWL2(model, targeted=spec.targeted, num_classes=num_classes, binary_steps=cfg['binary_steps'],
                  max_iter=cfg['max_iter'], lr=cfg['lr'], initial_const=cfg['initial_const'],
                  confidence=cfg['confidence'], abort_early=cfg['abort_early'], seed=seed)
    n = x.shape[0]
    l2 = torch.full((n,), float('inf'), device=x.device)
    success = torch.zeros(n, dtype=torch.bool, device=x.device)
    idx = todo.nonzero().squeeze(1)
    grads = 0
    bar = _progress(idx.numel(), spec.name, progress)
    for i in range(0, idx.numel(), bs):
        j = idx[i:i + bs]
        res = attack.perturb(x[j], y[j], targets[j] if spec.targeted else None)
        if not torch.isfinite(res.x_adv).all() or res.x_adv.min() < -1e-5 or res.x_adv.max() > 1 + 1e-5:
            raise RuntimeError(f'{spec.name}: adversarial batch leaves [0, 1].')
        with torch.no_grad():
            pred = model(res.x_adv).argmax(1)
        really = (pred == targets[j]) if spec.targeted else (pred != y[j])
        measured = (res.x_adv - x[j]).flatten(1).norm(dim=1)
        ok = res.success & really  # re-check with a fresh forward
        success[j] = ok
        l2[j] = torch.where(ok, measured, torch.full_like(measured, float('inf')))
        bar.update(j.numel())
        grads += attack.sample_iterations
    bar.close()
    robust = ~success & todo  # still correct after C&W (no budget: any success breaks it)
    extra['gradient_steps'] = grads
    extra['gradient_steps_per_point'] = grads / max(int(idx.numel()), 1)
    return dict(robust=robust, in_slice=in_slice, attacked=todo.clone(), l2=l2, success=success)


def summarise(rec: Records, specs: Sequence[AttackSpec]) -> Dict[str, Any]:
    """Accuracies, C&W statistics, the per-sample worst case per eps, and gradient-masking diagnostics.

    Returns:
        A dict with ``clean_accuracy``, ``attacks`` (name -> result dict), ``columns`` (table column -> accuracy,
        worst case over the objectives of that column), ``worst_case`` (eps label -> accuracy and the attacks in it),
        ``worst_case_slice`` (where some of those attacks ran on a prefix only, e.g. AutoAttack with ``aa_n`` < n:
        the same on AutoAttack's prefix if it was limited, else on the largest such prefix, with ``partial`` naming
        the attacks that covered fewer points still; empty otherwise), ``diagnostics`` and ``warnings``.
    """
    n = rec.clean.numel()
    clean_acc = rec.clean.double().mean().item() if n else math.nan
    results: Dict[str, Dict[str, Any]] = {}
    warns: List[str] = list(rec.warnings)
    for spec in specs:
        a = rec.attacks[spec.name]
        sl = a['in_slice']
        n_sl = int(sl.sum())
        clean_sl = (rec.clean & sl).double().sum().item() / max(n_sl, 1)
        r: Dict[str, Any] = dict(spec.to_dict(), n=n_sl, n_attacked=int(a['attacked'].sum()),
                                 clean_accuracy=clean_sl, time_s=rec.times.get(spec.name, 0.0))
        if spec.family == AttackFamily.CW:
            succ = a['success'] & sl
            l2 = a['l2'][succ]
            n_att = int(a['attacked'].sum())
            r.update(success_rate=(int(succ.sum()) / n_att) if n_att else math.nan,
                     l2_mean=l2.mean().item() if l2.numel() else math.nan,
                     l2_median=l2.median().item() if l2.numel() else math.nan,
                     l2_paper=(l2.sum().item() / n_sl) if n_sl else math.nan,
                     accuracy=(a['robust'] & sl).double().sum().item() / max(n_sl, 1))
        else:
            acc = (a['robust'] & sl).double().sum().item() / max(n_sl, 1)
            r['accuracy'] = acc
            if spec.threat == ThreatModel.LINF and acc > clean_sl + 1e-12:
                raise RuntimeError(f'{spec.name}: robust accuracy {acc:.4f} exceeds clean accuracy {clean_sl:.4f}.')
        r.update(rec.extra.get(spec.name, {}))
        if 'gradient_steps' in r:
            r['gradient_steps_per_point'] = r['gradient_steps'] / max(r['n_attacked'], 1)
        results[spec.name] = r
    # columns: worst case over the objectives that share a column
    columns: Dict[str, Dict[str, Any]] = {}
    for spec in specs:
        if spec.column is None or spec.family == AttackFamily.CW:
            continue
        a = rec.attacks[spec.name]
        col = columns.setdefault(spec.column, dict(robust=torch.ones_like(rec.clean), in_slice=a['in_slice'].clone(),
                                                   attacks=[], eps=spec.eps, targeted=spec.targeted,
                                                   family=spec.family.value))
        col['robust'] &= a['robust'] | ~a['in_slice']
        col['in_slice'] &= a['in_slice']
        col['attacks'].append(spec.name)
    col_out = {}
    for k, c in columns.items():
        sl = c['in_slice']
        col_out[k] = dict(accuracy=(c['robust'] & sl).double().sum().item() / max(int(sl.sum()), 1), n=int(sl.sum()),
                          attacks=c['attacks'], eps=c['eps'], targeted=c['targeted'], family=c['family'])
    # the per-sample worst case over every Linf attack with eps <= each eps
    linf = [s for s in specs if s.threat == ThreatModel.LINF and s.eps is not None]
    worst: Dict[str, Dict[str, Any]] = {}
    robust_at: Dict[float, torch.Tensor] = {}
    for eps in sorted({s.eps for s in linf}):
        robust = rec.clean.clone()
        names = []
        for s in linf:
            if s.eps <= eps + 1e-12:
                a = rec.attacks[s.name]
                robust &= a['robust'] | ~a['in_slice']
                names.append(s.name)
        robust_at[eps] = robust
        worst[_e(eps)] = dict(eps=eps, accuracy=robust.double().mean().item() if n else math.nan, n=n, attacks=names)
    # where some Linf attack ran on the first k < n points only (AutoAttack with aa_n, SPSA with spsa_n), the figure
    # above counts it there only; so also report the worst case on that prefix: AutoAttack's if it was limited, else
    # the largest one, naming the attacks that covered fewer points still
    worst_slice: Dict[str, Dict[str, Any]] = {}
    for eps, robust in robust_at.items():
        limited = [(s.family == AttackFamily.AUTOATTACK, int(rec.attacks[s.name]['in_slice'].sum()),
                    rec.attacks[s.name]['in_slice']) for s in linf if s.eps <= eps + 1e-12
                   and int(rec.attacks[s.name]['in_slice'].sum()) < n]
        if not limited:
            continue
        covered = max(limited, key=lambda t: t[:2])[2]
        k = int(covered.sum())
        if k:
            partial = [s.name for s in linf if s.eps <= eps + 1e-12
                       and bool((covered & ~rec.attacks[s.name]['in_slice']).any())]
            worst_slice[_e(eps)] = dict(eps=eps, accuracy=(robust & covered).double().sum().item() / k, n=k,
                                        attacks=worst[_e(eps)]['attacks'], partial=partial)
    diags = _diagnostics(rec, specs, results, col_out, robust_at)
    warns.extend(diags.pop('warnings'))
    return dict(n=n, clean_accuracy=clean_acc, attacks=results, columns=col_out, worst_case=worst,
                worst_case_slice=worst_slice, diagnostics=diags, warnings=warns)


def _diagnostics(rec: Records, specs, results, columns, robust_at) -> Dict[str, Any]:
    warns: List[str] = []
    out: Dict[str, Any] = {}
    n_clean = int(rec.clean.sum())
    zg = {obj: (f & rec.clean).double().sum().item() / max(n_clean, 1) for obj, f in rec.zero_grad.items()}
    out['zero_input_gradient_fraction'] = zg
    used = {s.config.get('objective') for s in specs if s.family == AttackFamily.PGD}
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
        wb = [w for w in whitebox if w.eps <= s.eps + 1e-12]
        if not wb:
            continue
        wb_robust = rec.clean.clone()
        for w in wb:
            a = rec.attacks[w.name]
            wb_robust &= a['robust'] | ~a['in_slice']
        a = rec.attacks[s.name]
        k = int((wb_robust & ~a['robust'] & a['in_slice'] & rec.clean).sum())
        beat[s.name] = k
        if k > 0:
            warns.append(f'gradient masking: {s.name} ({s.family.value}, no model gradients) broke {k} points that '
                         f'every white-box attack at eps <= {_e(s.eps)}/255 left standing.')
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
            if t.config.get('objective') != s.config.get('objective'):
                continue
            bigger_eps = t.eps > s.eps + 1e-12 and t.config.get('steps') == s.config.get('steps')
            more_steps = t.config.get('steps', 0) > s.config.get('steps', 0) and abs(t.eps - s.eps) < 1e-12
            if not (bigger_eps or more_steps):
                continue
            a_s, a_t = results[s.name]['accuracy'], results[t.name]['accuracy']
            left = a_s * results[s.name]['n']
            if a_t >= a_s - 1e-12 and left >= min_left:
                what = 'eps' if bigger_eps else 'steps'
                flat.append(f'{s.name} -> {t.name}')
                warns.append(f'gradient masking?: robust accuracy does not fall with {what}: {s.name} {a_s:.2%} -> '
                             f'{t.name} {a_t:.2%}.')
    out['not_falling'] = flat
    # the suite's worst case must fall with eps too
    keys = sorted(robust_at)
    for lo, hi in zip(keys, keys[1:]):
        a_lo, a_hi = robust_at[lo].double().mean().item(), robust_at[hi].double().mean().item()
        if a_hi >= a_lo - 1e-12 and robust_at[lo].sum() >= min_left:
            warns.append(f'gradient masking?: the worst case does not fall from eps {_e(lo)}/255 ({a_lo:.2%}) to '
                         f'{_e(hi)}/255 ({a_hi:.2%}).')
    out['warnings'] = warns
    return out
