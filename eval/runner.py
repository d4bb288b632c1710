"""Running a suite: the cheapest-first runner and its per-sample records.

The runner produces *per-sample* records (:class:`Records`): whether each point is still classified correctly after
each attack, the C&W distance, zero-gradient flags. Records from several processes (``accelerate launch``) merge by
concatenation (:func:`merge_records`); :mod:`eval.summary` turns them into the report's accuracies.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from timm_mmc import (PGD, CheckError, ScaledLogits, check_box, check_linf_batch, choose_logit_scale, is_fooled,
                      objective, predict)

from .aa import run_autoattack
from .blackbox import MIM
from .corruptions import gaussian_noise, random_rotation
from .cw import CWL2
from .specs import AttackSpec, SuiteOptions
from .spsa import SPSA
from .threat import AttackFamily, ThreatModel

__all__ = ['Records', 'merge_records', 'run_suite', 'ResumeMismatch']


class ResumeMismatch(ValueError):
    """A resumed evaluation's finished attacks were measured on other points or clean predictions than this run's
    (other weights, numerics or thread count): refused, the state kept, the message names the fix."""


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
    """Concatenate per-process records and sort them by position; times are the max over processes, counts add up
    and PGD's zero-gradient share is weighted by each process's points."""
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
                if k in ('gradient_steps', 'n_attacked', 'zero_grad_n') and k in into:
                    into[k] += v  # per-process counts add up
                else:
                    into[k] = v
    for name, d in out.extra.items():  # a share over every process's points, weighted by their counts
        shares = [(p.extra[name]['zero_grad_fraction_first_step'], p.extra[name]['zero_grad_n']) for p in parts
                  if 'zero_grad_n' in p.extra.get(name, {})]
        if shares:
            d['zero_grad_fraction_first_step'] = sum(f * k for f, k in shares) / max(d['zero_grad_n'], 1)
    for d in out.extra.values():
        if 'gradient_steps' in d:
            d.pop('gradient_steps_per_point', None)  # recomputed from the merged counts by summarise
    return out


def _batches(index: Tensor, batch_size: int, desc: str, progress: bool) -> Iterator[Tensor]:
    """``index`` (sample indices) in chunks of ``batch_size``, with a progress bar over the images when asked."""
    from tqdm.auto import tqdm
    bar = tqdm(total=index.numel(), desc=desc, unit='img', disable=not progress, leave=False, dynamic_ncols=True)
    try:
        for i in range(0, index.numel(), batch_size):
            chunk = index[i:i + batch_size]
            yield chunk
            bar.update(chunk.numel())
    finally:
        bar.close()


def _zero_grad_flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor, obj: str, batch_size: int) -> torch.Tensor:
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
              diagnostic_objectives: Sequence[str] = ('ce', 'mm', 'margin'), done: Optional[Records] = None,
              after_attack: Optional[Callable[[Records], None]] = None) -> Records:
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
        done: Records of the attacks an interrupted evaluation finished (a prefix of ``specs``): taken as they are,
            not run again, once this run's clean predictions are checked against theirs.
        after_attack: Called with the records so far after every attack this call runs (to save them).

    Raises:
        CheckError: A run-time check failed.
        ResumeMismatch: ``done`` was measured on other points or clean predictions.
    """
    bs = opts.batch_size
    clean = predict(model, x, bs) == y
    positions = positions.to(clean.device)  # the slices (in_slice) are masks over x's points, on x's device
    rec = Records(positions.clone(), clean.clone())
    if done is not None:
        _take_done(rec, done, [s.name for s in specs])
        rec.zero_grad = {obj: done.zero_grad[obj].to(clean.device) for obj in diagnostic_objectives
                         if obj in done.zero_grad}  # measured before the cut: taken as they are, like its attacks
    ok = clean.nonzero().squeeze(1)
    for obj in diagnostic_objectives:
        if obj in rec.zero_grad:
            continue
        flags = torch.zeros_like(clean)
        if ok.numel():
            flags[ok] = _zero_grad_flags(model, x[ok], y[ok], obj, bs)
        rec.zero_grad[obj] = flags
    by_name: Dict[str, AttackSpec] = {}
    for k, spec in enumerate(specs):
        if spec.name in by_name:
            raise ValueError(f'attack {spec.name!r} appears twice in the suite.')
        by_name[spec.name] = spec
        if spec.name in rec.attacks:  # finished before a resume
            continue
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
                raise CheckError(f'{spec.name}: a point counts as robust but is misclassified clean.')
            rec.attacks[spec.name] = dict(robust=robust, in_slice=in_slice, attacked=todo)
            if extra:
                rec.extra[spec.name] = extra
        rec.times[spec.name] = time.perf_counter() - t0
        rec.extra.setdefault(spec.name, {})['seed'] = seed  # random start, targets, probes, noise all derive from it
        if after_attack is not None:
            after_attack(rec)
    return rec


def _take_done(rec: Records, done: Records, order: Sequence[str]) -> None:
    """Copy an interrupted evaluation's finished attacks into ``rec``, after checking they were measured on the same
    points with the same clean predictions."""
    names = list(done.attacks)
    if names != list(order[:len(names)]):
        raise ValueError(f'the finished attacks {names} are not the first of the suite {list(order)}.')
    device = rec.clean.device
    other_points = done.positions.shape != rec.positions.shape or not torch.equal(done.positions.to(device),
                                                                                    rec.positions)
    differ = 0 if other_points else int((done.clean.to(device) != rec.clean).sum())
    # every process of a sharded evaluation refuses together, instead of the others going on without this one
    if _max_over_processes(float(other_points)) > 0:
        raise ResumeMismatch('--resume: the unfinished evaluation covers other points than this one; start over with '
                             '--overwrite.')
    most = int(_max_over_processes(float(differ)))
    if most:
        where = f'{differ} of this process\'s {rec.clean.numel()} points' if differ else \
            f'{most} points of another process'
        raise ResumeMismatch(f'--resume: the unfinished evaluation was measured with other clean predictions ({where} '
                             f'differ: other weights, numerics or --threads); resume where and as it ran, or start '
                             f'over with --overwrite.')
    for name in names:
        rec.attacks[name] = {k: v.to(device) for k, v in done.attacks[name].items()}
        rec.times[name] = done.times.get(name, 0.0)
        if name in done.extra:
            rec.extra[name] = done.extra[name]
    rec.warnings.extend(done.warnings)


def _run_corruption(model: nn.Module, spec: AttackSpec, x: Tensor, y: Tensor, in_slice: Tensor, seed: int, bs: int,
                    progress: bool) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    robust = torch.zeros_like(in_slice)
    for j in _batches(in_slice.nonzero().squeeze(1), bs, spec.name, progress):
        if spec.family == AttackFamily.NOISE:
            xc = gaussian_noise(x[j], spec.config.sigma, gen)
        else:
            xc = random_rotation(x[j], spec.config.max_degrees, gen)
        with torch.no_grad():
            robust[j] = model(xc).argmax(1) == y[j]
    return robust


def _run_linf(model: nn.Module, spec: AttackSpec, x: Tensor, y: Tensor, t: Tensor, num_classes: int, seed: int,
              bs: int, progress: bool, source_model: Optional[nn.Module], extra: Dict[str, Any]) -> Tensor:
    cfg = spec.config
    tgt = t if spec.targeted else None
    if spec.family == AttackFamily.PGD:
        attack = PGD(model, eps=spec.eps, alpha=cfg.alpha, steps=cfg.steps, loss=cfg.objective,
                     random_start=cfg.random_start, targeted=spec.targeted, num_classes=num_classes,
                     keep_best=cfg.keep_best, seed=seed, check=True)
        fwd_bs = bs
    elif spec.family == AttackFamily.SPSA:
        attack = SPSA(model, eps=spec.eps, steps=cfg.steps, n_samples=cfg.n_samples, delta=cfg.delta,
                      lr=cfg.lr, targeted=spec.targeted, num_classes=num_classes,
                      random_start=cfg.random_start, loss=cfg.objective, seed=seed)
        fwd_bs = max(1, min(bs, 2048 // cfg.n_samples) * 4)
    elif spec.family == AttackFamily.TRANSFER:
        if source_model is None:
            raise ValueError(f'{spec.name} needs a source model (--transfer-from).')
        if cfg.method == 'pgd':
            attack = PGD(source_model, eps=spec.eps, alpha=cfg.alpha, steps=cfg.steps, loss=cfg.objective,
                         random_start=True, targeted=False, keep_best=False, seed=seed, check=True)
        else:
            attack = MIM(source_model, eps=spec.eps, steps=cfg.steps, decay=cfg.decay,
                         loss=cfg.objective, seed=seed)
        fwd_bs = bs
    else:
        raise ValueError(f'no Linf runner for family {spec.family}.')
    robust = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    zero = []
    for j in _batches(torch.arange(x.shape[0], device=x.device), fwd_bs, spec.name, progress):
        xb, yb = x[j], y[j]
        tb = None if tgt is None else tgt[j]
        x_adv = attack.perturb(xb, yb, tb)
        check_linf_batch(x_adv, xb, spec.eps)  # every adversarial batch, whatever the attack checked itself
        if isinstance(attack, PGD):
            zero.append((attack.last_zero_grad_fraction, xb.shape[0]))
        with torch.no_grad():
            robust[j] = model(x_adv).argmax(1) == yb
    if zero and spec.family == AttackFamily.PGD:
        total = sum(n for _, n in zero)
        extra['zero_grad_fraction_first_step'] = sum(f * n for f, n in zero) / max(total, 1)
        extra['zero_grad_n'] = total
    return robust


def _max_over_processes(value: float) -> float:
    """The largest ``value`` over the processes of a sharded evaluation (every process must call it); ``value``
    itself in a single process."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    device = 'cuda' if torch.distributed.get_backend() == 'nccl' else 'cpu'
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.item()


def _run_aa(model: nn.Module, spec: AttackSpec, x: Tensor, y: Tensor, x_clean: Tensor, num_classes: int, seed: int,
            bs: int) -> Tuple[Tensor, Dict[str, Any], List[str]]:
    cfg = spec.config
    scale, max_margin = choose_logit_scale(model, x_clean, cfg.target_margin, bs, reduce_max=_max_over_processes)
    wrapped = ScaledLogits(model, scale)
    extra: Dict[str, Any] = dict(logit_scale=scale, max_clean_margin=max_margin, n_attacked=int(x.shape[0]))
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool, device=x.device), extra, []
    out = run_autoattack(wrapped, x, y, spec.eps, version=cfg.version, seed=seed, batch_size=bs,
                         n_iter=cfg.n_iter, n_target_classes=cfg.target_classes, num_classes=num_classes)
    with torch.no_grad():  # judge with the raw model, not the wrapper
        robust = predict(model, out.x_adv, bs) == y
    extra['attacks'] = out.attacks
    extra['log'] = out.log
    return robust, extra, out.warnings


def _run_cw(model: nn.Module, spec: AttackSpec, x: Tensor, y: Tensor, targets: Tensor, todo: Tensor, in_slice: Tensor,
            bs: int, progress: bool, num_classes: int, seed: int, extra: Dict[str, Any]) -> Dict[str, Tensor]:
    cfg = spec.config
    attack = CWL2(model, targeted=spec.targeted, num_classes=num_classes, binary_steps=cfg.binary_steps,
                  max_iter=cfg.max_iter, lr=cfg.lr, initial_const=cfg.initial_const,
                  confidence=cfg.confidence, abort_early=cfg.abort_early, seed=seed)
    n = x.shape[0]
    l2 = torch.full((n,), float('inf'), device=x.device)
    success = torch.zeros(n, dtype=torch.bool, device=x.device)
    idx = todo.nonzero().squeeze(1)
    grads = 0
    for j in _batches(idx, bs, spec.name, progress):
        res = attack.perturb(x[j], y[j], targets[j] if spec.targeted else None)
        check_box(res.x_adv)  # C&W has no eps-ball, only the box
        with torch.no_grad():
            pred = model(res.x_adv).argmax(1)
        really = is_fooled(pred, y[j], targets[j] if spec.targeted else None)
        measured = (res.x_adv - x[j]).flatten(1).norm(dim=1)
        ok = res.success & really  # re-check with a fresh forward
        success[j] = ok
        l2[j] = torch.where(ok, measured, torch.full_like(measured, float('inf')))
        grads += attack.sample_iterations
    robust = ~success & todo  # still correct after C&W (no budget: any success breaks it)
    extra['gradient_steps'] = grads
    extra['gradient_steps_per_point'] = grads / max(int(idx.numel()), 1)
    return dict(robust=robust, in_slice=in_slice, attacked=todo.clone(), l2=l2, success=success)
