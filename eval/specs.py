"""Building a suite: its options, one typed configuration per attack family, and the attacks cheapest first.

A suite is a list of :class:`AttackSpec`, each with a frozen configuration dataclass of its family (:class:`PGDConfig`,
:class:`AutoAttackConfig`, ...): the runner reads attributes, the report records them (``config`` as a dict plus the
typed ``steps`` / ``objective`` / ``version`` / ``method``).

Skipping: a point an attack of the same family already broke at a smaller or equal budget (fewer steps, smaller eps,
same objective and target) is not attacked again and counts as broken (that adversarial example is valid for the
larger budget). AutoAttack runs only on the points that survived every cheaper Linf attack at its eps.
``standalone=True`` turns skipping off.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple, Union

import torch.nn as nn

from timm_mmc import HEADS, CenterClassifier, eps_key

from .threat import AttackFamily, ThreatModel

__all__ = ['SUITES', 'SuiteOptions', 'PGDConfig', 'TransferConfig', 'AutoAttackConfig', 'SPSAConfig', 'CWConfig',
           'NoiseConfig', 'RotationConfig', 'AttackConfig', 'AttackSpec', 'build_suite', 'is_mm_model',
           'default_objectives', 'OPTION_READERS', 'unused_options']

SUITES = ('quick', 'paper', 'autoattack', 'full')


def is_mm_model(model: nn.Module) -> bool:
    """True when the model's logits are distances to class centers (MMC, MMLDA, L-GM heads)."""
    return any(isinstance(m, CenterClassifier) for m in model.modules())


def default_objectives(mm: bool) -> Tuple[str, ...]:
    """PGD objectives: the head's own one first (:data:`timm_mmc.heads.HEADS`: the authors' adaptive ``mm`` for
    heads with distance logits, ``ce`` for linear heads), then the logit margin."""
    own = {s.objective for s in HEADS.values() if s.distance_logits == mm}
    if len(own) != 1:
        raise ValueError(f'timm_mmc.heads.HEADS gives {sorted(own)} as the own objective of '
                         f'{"distance" if mm else "linear"} heads; the suite needs exactly one.')
    return (own.pop(), 'margin')


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

    def to_dict(self) -> Dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


def _read_by(*families: AttackFamily) -> FrozenSet[AttackFamily]:
    return frozenset(families)


# The families whose attacks read each option, by SuiteOptions field and by command-line name where the two differ
# (and the transfer source's file hash): a suite with none of them runs the same whatever the option says. Options
# not here (seed, batch size, standalone) count for every suite.
OPTION_READERS: Dict[str, FrozenSet[AttackFamily]] = {
    'eps': _read_by(AttackFamily.PGD, AttackFamily.TRANSFER, AttackFamily.SPSA),
    'pgd_alpha': _read_by(AttackFamily.PGD, AttackFamily.TRANSFER),
    **dict.fromkeys(('pgd_steps', 'objectives'), _read_by(AttackFamily.PGD)),
    **dict.fromkeys(('cw_n', 'cw_binary_steps', 'cw_max_iter', 'cw_lr', 'cw_initial_const'), _read_by(AttackFamily.CW)),
    **dict.fromkeys(('spsa_n', 'spsa_steps', 'spsa_samples', 'spsa_delta', 'spsa_lr'), _read_by(AttackFamily.SPSA)),
    **dict.fromkeys(('noise_sigmas', 'noise_sigma'), _read_by(AttackFamily.NOISE)),
    **dict.fromkeys(('rotation_degrees', 'rotation'), _read_by(AttackFamily.ROTATION)),
    **dict.fromkeys(('transfer_steps', 'transfer_from', 'transfer_checkpoint', 'transfer_sha256'),
                    _read_by(AttackFamily.TRANSFER)),
    **dict.fromkeys(('aa_version', 'aa_eps', 'aa_n', 'aa_n_iter', 'aa_target_classes', 'aa_target_margin'),
                    _read_by(AttackFamily.AUTOATTACK)),
}


def unused_options(specs: Sequence[AttackSpec]) -> FrozenSet[str]:
    """The options (:data:`OPTION_READERS`) that no attack of ``specs`` reads."""
    present = {s.family for s in specs}
    return frozenset(k for k, readers in OPTION_READERS.items() if not readers & present)


@dataclass(frozen=True)
class PGDConfig:
    """White-box PGD (Linf, step ``alpha``, random start, keeping the best point per sample)."""
    steps: int
    alpha: float
    objective: str
    random_start: bool = True
    keep_best: bool = True


@dataclass(frozen=True)
class TransferConfig:
    """PGD or MIM on a source model, its adversarial examples judged on the target."""
    method: str  # 'pgd' or 'mim'
    steps: int
    objective: str  # on the source model
    alpha: float
    random_start: bool
    decay: Optional[float] = None  # MIM momentum


@dataclass(frozen=True)
class AutoAttackConfig:
    """AutoAttack through ``pyautoattack`` on logits scaled so that the largest clean margin is ``target_margin``."""
    version: str
    n_iter: Optional[int] = None
    target_classes: Optional[int] = None
    target_margin: float = 10.0

    @property
    def label(self) -> str:
        """The version as the report names it: ``standard`` only with AutoAttack's own 100 APGD iterations and 9
        target classes (RobustBench's); a shortened run is ``standard-shortened``, never published as standard."""
        if self.version == 'standard' and (self.n_iter not in (None, 100) or self.target_classes not in (None, 9)):
            return 'standard-shortened'
        return self.version


@dataclass(frozen=True)
class SPSAConfig:
    """SPSA (gradient-free) on the logit margin."""
    steps: int
    n_samples: int
    delta: float
    lr: float
    objective: str = 'margin'
    random_start: bool = True


@dataclass(frozen=True)
class CWConfig:
    """Carlini & Wagner L2 (minimal distortion)."""
    binary_steps: int
    max_iter: int
    lr: float
    initial_const: float
    confidence: float = 0.0
    abort_early: bool = True


@dataclass(frozen=True)
class NoiseConfig:
    """Gaussian noise (a corruption, not an attack)."""
    sigma: float


@dataclass(frozen=True)
class RotationConfig:
    """Random rotation within +-``max_degrees`` (a corruption, not an attack)."""
    max_degrees: float


AttackConfig = Union[PGDConfig, TransferConfig, AutoAttackConfig, SPSAConfig, CWConfig, NoiseConfig, RotationConfig]


@dataclass
class AttackSpec:
    """One attack of a suite.

    Attributes:
        name: Unique key (``pgd10-un-8-mm``), for people; code reads the attributes.
        family: Attack family.
        threat: Threat model (Linf results enter the worst case).
        eps: Linf radius in pixel units (None for C&W and corruptions).
        targeted: Targeted (random target != y, seeded) or not.
        config: The family's typed configuration.
        n_limit: Run on the first ``n_limit`` evaluated points only (None: all).
        skip_after: Attacks whose broken points are not attacked again (counted as broken here).
        column: Table column this attack belongs to (objectives of one PGD column share it).
    """
    name: str
    family: AttackFamily
    threat: ThreatModel
    eps: Optional[float]
    targeted: bool
    config: Optional[AttackConfig] = None
    n_limit: Optional[int] = None
    skip_after: List[str] = field(default_factory=list)
    column: Optional[str] = None

    @property
    def steps(self) -> Optional[int]:
        return getattr(self.config, 'steps', None)

    @property
    def objective(self) -> Optional[str]:
        return getattr(self.config, 'objective', None)

    @property
    def version(self) -> Optional[str]:
        return getattr(self.config, 'label', None) or getattr(self.config, 'version', None)

    @property
    def method(self) -> Optional[str]:
        return getattr(self.config, 'method', None)

    def config_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self.config) if self.config is not None else {}


def _tu(targeted: bool) -> str:
    return 'tar' if targeted else 'un'


# attack names, written once each: a spec's name and the names it skips after must agree
def _pgd_name(steps: int, targeted: bool, eps: float, obj: str) -> str:
    return f'pgd{steps}-{_tu(targeted)}-{eps_key(eps)}-{obj}'


def _transfer_name(method: str, steps: int, eps: float) -> str:
    return f'transfer-{method}{steps}-un-{eps_key(eps)}'


def _spsa_name(steps: int, targeted: bool, eps: float) -> str:
    return f'spsa{steps}-{_tu(targeted)}-{eps_key(eps)}'


class _Builder:
    """Appends a suite's attacks in order, computing what each skips after."""

    def __init__(self, opts: SuiteOptions, eps_list: Sequence[float], steps_list: Sequence[int]) -> None:
        self.opts, self.eps_list, self.steps_list = opts, eps_list, steps_list
        self.skip = not opts.standalone
        self.specs: List[AttackSpec] = []

    def corruptions(self) -> None:
        for sigma in self.opts.noise_sigmas:
            self.specs.append(AttackSpec(f'noise-{sigma:g}', AttackFamily.NOISE, ThreatModel.CORRUPTION, None, False,
                                         NoiseConfig(sigma), column=f'noise {sigma:g}'))
        deg = self.opts.rotation_degrees
        self.specs.append(AttackSpec(f'rotation-{deg:g}', AttackFamily.ROTATION, ThreatModel.CORRUPTION, None, False,
                                     RotationConfig(deg), column=f'rotation {deg:g}'))

    def pgd(self, steps_sel: Sequence[int]) -> None:
        for steps in steps_sel:
            for eps in self.eps_list:
                for targeted in (True, False):
                    for obj in self.opts.objectives:
                        before = [_pgd_name(s, targeted, e, obj) for s in self.steps_list
                                  for e in self.eps_list if s <= steps and e <= eps and (s, e) != (steps, eps)]
                        self.specs.append(AttackSpec(
                            _pgd_name(steps, targeted, eps, obj), AttackFamily.PGD, ThreatModel.LINF,
                            eps, targeted, PGDConfig(steps, self.opts.pgd_alpha, obj),
                            skip_after=before if self.skip else [],
                            column=f'PGD{steps} {_tu(targeted)} {eps_key(eps)}'))

    def transfer(self, source_objective: str) -> None:
        steps = self.opts.transfer_steps
        for method in ('pgd', 'mim'):
            for eps in self.eps_list:
                before = [_transfer_name(method, steps, e) for e in self.eps_list if e < eps]
                cfg = TransferConfig(method, steps, source_objective,
                                     self.opts.pgd_alpha if method == 'pgd' else eps / steps,
                                     random_start=method == 'pgd', decay=1.0 if method == 'mim' else None)
                self.specs.append(AttackSpec(_transfer_name(method, steps, eps), AttackFamily.TRANSFER,
                                             ThreatModel.LINF, eps, False, cfg, skip_after=before if self.skip else [],
                                             column=f'transfer {method.upper()}{steps} un {eps_key(eps)}'))

    def autoattack(self) -> None:
        o = self.opts
        before = [s.name for s in self.specs if s.threat == ThreatModel.LINF and s.eps is not None
                  and s.eps <= o.aa_eps + 1e-12]
        cfg = AutoAttackConfig(o.aa_version, o.aa_n_iter, o.aa_target_classes, o.aa_target_margin)
        self.specs.append(AttackSpec(f'autoattack-{cfg.label}-{eps_key(o.aa_eps)}', AttackFamily.AUTOATTACK,
                                     ThreatModel.LINF, o.aa_eps, False, cfg, n_limit=o.aa_n,
                                     skip_after=before if self.skip else [],
                                     column=f'AA {cfg.label} {eps_key(o.aa_eps)}'))

    def spsa_and_cw(self) -> None:
        o = self.opts
        for eps in self.eps_list:
            for targeted in (True, False):
                before = [_spsa_name(o.spsa_steps, targeted, e) for e in self.eps_list if e < eps]
                self.specs.append(AttackSpec(
                    _spsa_name(o.spsa_steps, targeted, eps), AttackFamily.SPSA, ThreatModel.LINF, eps,
                    targeted, SPSAConfig(o.spsa_steps, o.spsa_samples, o.spsa_delta, o.spsa_lr),
                    n_limit=o.spsa_n, skip_after=before if self.skip else [],
                    column=f'SPSA{o.spsa_steps} {_tu(targeted)} {eps_key(eps)}'))
        for targeted in (True, False):
            self.specs.append(AttackSpec(f'cw-{_tu(targeted)}', AttackFamily.CW, ThreatModel.L2, None, targeted,
                                         CWConfig(o.cw_binary_steps, o.cw_max_iter, o.cw_lr, o.cw_initial_const),
                                         n_limit=o.cw_n, column=f'C&W {_tu(targeted)}'))


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
    if suite == 'quick':
        b = _Builder(opts, (opts.eps[0],), (opts.pgd_steps[0],))
    else:
        b = _Builder(opts, tuple(sorted(opts.eps)), tuple(sorted(opts.pgd_steps)))
    with_pgd = suite in ('quick', 'paper', 'full')
    if suite in ('paper', 'full'):
        b.corruptions()
    if with_pgd:
        b.pgd(b.steps_list[:1])
    if transfer and suite in ('paper', 'full'):
        b.transfer(source_objective)
    if with_pgd and len(b.steps_list) > 1:
        b.pgd(b.steps_list[1:])
    if suite in ('quick', 'autoattack', 'full'):
        b.autoattack()
    if suite in ('paper', 'full'):
        b.spsa_and_cw()
    specs = b.specs
    if families is not None:
        keep = set(families)
        specs = [s for s in specs if s.family in keep]
        names = {s.name for s in specs}
        for s in specs:
            s.skip_after = [n for n in s.skip_after if n in names]
    return specs
