"""The evaluation report: one typed schema that ``eval`` writes and everything else reads.

``python -m eval.robustness`` builds an :class:`EvalReport` and writes it with :func:`dump`; the release tooling
(:mod:`timm_mmc.hub`: model card, model-index, README results table, RobustBench file), the plot
(:mod:`timm_mmc.plot`), eval's Markdown and the tests read it back with :func:`load`. Nobody else parses the JSON.

Layout (schema ``version`` 2.2; accuracies are fractions in [0, 1], eps in pixel units of images in [0, 1])::

    {"version": "2.2", "model": ..., "checkpoint_sha256": ..., "dataset": ..., "split": "test", "n": 1000,
     "indices": [...], "logits": "distance", "own_objective": "mm", "clean_accuracy": 0.85,
     "attacks": {"pgd10-un-8-mm": {"family": "pgd", "threat": "Linf", "eps": 0.0314, "targeted": false,
                                   "steps": 10, "objective": "mm", "n": 1000, "accuracy": 0.26, "config": {...}}},
     "columns": {"PGD10 un 8": {"family": "pgd", "steps": 10, "eps": ..., "objectives": ["mm", "margin"], ...}},
     "worst_case": {"8": {"eps": ..., "accuracy": ..., "n": ..., "attacks": [...]}}, "worst_case_slice": {...},
     "diagnostics": {...}, "warnings": [...], "timings": {...}, "versions": {...}, "device": ..., "command": ...,
     "rules": {"targeted_keep_best": "misclassified"}, "transfer_from": ..., "transfer_sha256": ...}

Version 2.2 (2026-12-07) added ``transfer_sha256``; a 2.1 file loads without it and keeps its version (a model card
names the file's schema). Version 2.1 (2026-12-05) added ``rules``; a 2.0 file loads without them (made before the
keep-best fix, :data:`RULES`). Version 1.0 files (the first releases) load through
:func:`timm_mmc.report_v1.from_v1`, which fills the typed attributes from each attack's ``config``; nothing else is
read.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from .report_v1 import from_v1

__all__ = ['REPORT_VERSION', 'RULES', 'ReportError', 'AttackResult', 'Column', 'WorstCase', 'EvalReport', 'load',
           'loads', 'dump', 'from_dict', 'eps_key', 'fmt_eps', 'same_eps', 'percent', 'names_weights']

REPORT_VERSION = '2.2'
V2_1 = '2.1'
V2_0 = '2.0'
V1 = '1.0'

# How this code's attacks count, where a rule changed (what EvalReport.rules records). targeted_keep_best: targeted
# PGD and SPSA keep the first misclassified iterate, as robust accuracy counts any wrong class (timm_mmc.attacks
# and eval.spsa); before the fix of 2026-12-05 (commit 84da00e) they kept only iterates that reached the target
RULES = {'targeted_keep_best': 'misclassified'}

# the attack families and threat models eval writes (eval.threat.AttackFamily / ThreatModel values)
FAMILIES = ('pgd', 'cw', 'spsa', 'noise', 'rotation', 'transfer', 'autoattack')
THREATS = ('Linf', 'L2', 'corruption')


class ReportError(ValueError):
    """A file that is not an evaluation report this code can read; the message names the key and the fix."""


def eps_key(eps: float) -> str:
    """eps in /255 units as the report's keys and attack names write it: 8/255 -> ``'8'``, 0.1/255 -> ``'0.1'``."""
    v = eps * 255
    return f'{v:.0f}' if abs(v - round(v)) < 1e-6 else f'{v:.3g}'


def fmt_eps(eps: Optional[float]) -> str:
    """``8/255`` for eps = 8/255, else the value with 4 significant digits; ``-`` when there is none."""
    if eps is None:
        return '-'
    k = eps * 255
    if abs(k - round(k)) < 1e-4 and round(k) > 0:
        return f'{round(k)}/255'
    return f'{eps:.4g}'


def percent(value: Optional[float], digits: int = 1) -> str:
    """A fraction as a percentage with ``digits`` decimals (``0.2975`` -> ``'29.8'``); ``-`` for None or NaN.

    A fraction strictly between 0 and 1 never reads as an end: it gets more decimals instead (4 of 10,000 robust is
    ``'0.04'``, not ``'0.0'``; 9,999 of 10,000 correct at 1 decimal is ``'99.99'``, not ``'100.0'``).
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '-'
    text = f'{100.0 * value:.{digits}f}'
    while 0 < value < 1 and float(text) in (0.0, 100.0) and digits < 8:
        digits += 1
        text = f'{100.0 * value:.{digits}f}'
    return text


def names_weights(model: str, checkpoint: Optional[str], pretrained: bool) -> bool:
    """Whether an evaluation's model spec and flags name weights; if not, it measures random initial weights."""
    return bool(checkpoint or pretrained or model.startswith(('hf-hub:', 'local-dir:')))


def same_eps(a: Optional[float], b: Optional[float]) -> bool:
    """Two radii in pixel units are the same budget (float tolerance)."""
    return a is not None and b is not None and abs(a - b) < 1e-6


@dataclass
class AttackResult:
    """One attack of the suite, as run: its settings as typed attributes and what it measured.

    Attributes:
        name: Unique key (``pgd10-un-8-mm``); for people, never parsed.
        family: One of :data:`FAMILIES`.
        threat: ``Linf`` (enters the worst case), ``L2`` (C&W, no budget) or ``corruption`` (not an attack).
        eps: Linf radius in pixel units (None without a budget).
        targeted: Toward a fixed random target != y.
        n: Points in the attack's slice (the first ``n_limit`` or all).
        n_attacked: Points actually attacked (clean-correct, not broken by a cheaper attack).
        accuracy: Accuracy under the attack on its slice. C&W (no budget): the share it did not fool, and for the
            targeted one the share it did not bring to the target, which may include points it misclassified.
        clean_accuracy: Clean accuracy on the slice.
        steps: Iterations (PGD, SPSA, transfer).
        objective: The loss the attack maximises (``mm``, ``margin``, ``ce``; transfer: on the source model).
        version: AutoAttack version (``standard``, ``rand``, ``fast``).
        method: Transfer method (``pgd`` or ``mim``).
        config: Every setting as run (including the typed ones above).
        n_limit: The attack ran on the first ``n_limit`` points only.
        skip_after: Attacks whose broken points this one counted as broken without attacking them.
        column: The table column it belongs to.
        seed: Its seed.
        time_s: Seconds it took.
        success_rate, l2_mean, l2_median, l2_paper, gradient_steps, gradient_steps_per_point: C&W only.
        logit_scale, max_clean_margin, components, log: AutoAttack only (``components``: its sub-attacks).
        zero_grad_fraction_first_step, zero_grad_n: PGD only (share of exactly zero gradients at the first step).
    """
    name: str
    family: str
    threat: str
    eps: Optional[float]
    targeted: bool
    n: int
    n_attacked: int
    accuracy: Optional[float]
    clean_accuracy: Optional[float] = None
    steps: Optional[int] = None
    objective: Optional[str] = None
    version: Optional[str] = None
    method: Optional[str] = None
    config: Dict[str, Any] = field(default_factory=dict)
    n_limit: Optional[int] = None
    skip_after: List[str] = field(default_factory=list)
    column: Optional[str] = None
    seed: Optional[int] = None
    time_s: float = 0.0
    success_rate: Optional[float] = None
    l2_mean: Optional[float] = None
    l2_median: Optional[float] = None
    l2_paper: Optional[float] = None
    gradient_steps: Optional[int] = None
    gradient_steps_per_point: Optional[float] = None
    logit_scale: Optional[float] = None
    max_clean_margin: Optional[float] = None
    components: Optional[List[str]] = None
    log: Optional[List[str]] = None
    zero_grad_fraction_first_step: Optional[float] = None
    zero_grad_n: Optional[int] = None


@dataclass
class Column:
    """A table column: per point, the worst case over the attacks (one per objective) that share it."""
    name: str
    family: str
    eps: Optional[float]
    targeted: bool
    n: int
    accuracy: float
    attacks: List[str]
    steps: Optional[int] = None
    version: Optional[str] = None
    method: Optional[str] = None
    objectives: List[str] = field(default_factory=list)


@dataclass
class WorstCase:
    """Robust accuracy under the suite at one eps: per point, the worst case over every Linf attack with eps <= it.

    In ``worst_case_slice`` the same on the first ``n`` points, where some attacks ran on a prefix only;
    ``partial`` names the attacks that covered fewer of those points still.
    """
    eps: float
    accuracy: float
    n: int
    attacks: List[str]
    partial: List[str] = field(default_factory=list)


@dataclass
class EvalReport:
    """Everything a reviewer needs to trust (or redo) an evaluation.

    Attributes:
        model: The model spec as typed (registered name, ``hf-hub:``, ``local-dir:``).
        dataset: Data set as given; ``dataset_source`` what was loaded (split, columns, sha256 of pixels and labels).
        split: Split name.
        n: Evaluated examples.
        suite: Suite name.
        seed: Base seed (targets, random starts, noise, rotations derive from it).
        version: Schema version.
        checkpoint: Checkpoint path, if one was given.
        checkpoint_sha256: SHA-256 of the weights file that was loaded (None if none could be identified).
        pretrained: Registered pretrained weights were asked for.
        logits: ``distance`` (``-||z - mu_i||^2 / 2``: MMC, MMLDA, L-GM heads) or ``linear``.
        own_objective: The head's own attack objective (the authors' adaptive ``mm`` for distance logits, ``ce``
            for linear ones; :data:`timm_mmc.heads.HEADS`).
        indices: Indices of the evaluated examples in the split, in evaluation order.
        options: Every suite option.
        clean_accuracy: Accuracy on the clean images (None with no example), one forward pass each: the headline.
        clean_accuracy_flip_tta: Clean accuracy with flip test-time augmentation (the mean of the logits of an image
            and of its mirror image: twice the forward passes), when asked for; never used for robust figures.
        attacks: Per attack name, its :class:`AttackResult`.
        columns: Per column name, its :class:`Column`.
        worst_case: Per eps key (``'8'``), robust accuracy under the suite.
        worst_case_slice: The same on the prefix where every attack had its say (see :class:`WorstCase`).
        diagnostics: Gradient-masking checks.
        warnings: Every warning (ours and AutoAttack's).
        timings: Seconds per attack and ``total_s``.
        versions: Package versions (None: not importable where the evaluation ran, or not recorded).
        device: Hardware in words.
        num_processes: Processes the examples were sharded over.
        transfer_from: Source model of the transfer attacks.
        transfer_sha256: SHA-256 of the source's weights (its checkpoint's file, or the released weights that
            ``--pretrained`` loaded); None without transfer attacks, and in reports made before 2026-12-07.
        command: The command line.
        rules: How the attacks counted where the project changed a rule (:data:`RULES` as the evaluation's code had
            them), so that older reports can be told apart. Empty in a report made before 2026-12-05: its
            targeted PGD and SPSA kept only iterates that reached the target, and :meth:`all_warnings` says that
            its targeted figures may be too high.
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
    logits: str = 'linear'
    own_objective: str = 'ce'
    dataset_source: str = ''
    indices: List[int] = field(default_factory=list)
    options: Dict[str, Any] = field(default_factory=dict)
    clean_accuracy: Optional[float] = None
    clean_accuracy_flip_tta: Optional[float] = None
    attacks: Dict[str, AttackResult] = field(default_factory=dict)
    columns: Dict[str, Column] = field(default_factory=dict)
    worst_case: Dict[str, WorstCase] = field(default_factory=dict)
    worst_case_slice: Dict[str, WorstCase] = field(default_factory=dict)
    diagnostics: Dict[str, Any] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)
    versions: Dict[str, Optional[str]] = field(default_factory=dict)
    device: str = ''
    num_processes: int = 1
    transfer_from: Optional[str] = None
    transfer_sha256: Optional[str] = None
    command: str = ''
    rules: Dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------ look-ups by attribute

    def find_attacks(self, **attrs: Any) -> List[AttackResult]:
        """The attacks whose attributes equal ``attrs`` (``eps`` compared with a float tolerance), in suite order."""
        return [a for a in self.attacks.values() if _matches(a, attrs)]

    def find_attack(self, **attrs: Any) -> Optional[AttackResult]:
        """The one attack matching ``attrs``, or None. Raises :class:`ReportError` when several match."""
        return _one(self.find_attacks(**attrs), attrs)

    def find_columns(self, **attrs: Any) -> List[Column]:
        """The columns whose attributes equal ``attrs``, in suite order."""
        return [c for c in self.columns.values() if _matches(c, attrs)]

    def find_column(self, **attrs: Any) -> Optional[Column]:
        """The one column matching ``attrs``, or None. Raises :class:`ReportError` when several match."""
        return _one(self.find_columns(**attrs), attrs)

    def worst_at(self, eps: float, on_slice: bool = False) -> Optional[WorstCase]:
        """Robust accuracy under the suite at ``eps`` (on the limited attacks' prefix with ``on_slice``)."""
        table = self.worst_case_slice if on_slice else self.worst_case
        return next((w for w in table.values() if same_eps(w.eps, eps)), None)

    def all_warnings(self) -> List[str]:
        """The recorded warnings, then those a reader needs that the report could not know when it was written."""
        out = list(self.warnings)
        if not names_weights(self.model, self.checkpoint, self.pretrained):
            out.append('this report measured random initial weights (no checkpoint, no pretrained weights): a check of '
                       'the pipeline, not a result.')
        rule, now = self.rules.get('targeted_keep_best'), RULES['targeted_keep_best']
        if rule != now and any(a.targeted and a.family in ('pgd', 'spsa') for a in self.attacks.values()):
            how = (f'counted by the keep-best rule {rule!r}, not {now!r}' if rule else
                   'was made before the fix of 2026-12-05 (commit 84da00e): targeted PGD and SPSA kept only '
                   'iterates that reached the target, so a point whose iterate passed through a third class counted '
                   'as robust')
            out.append(f'this report {how}. Its targeted figures may be too high; re-run python -m eval.robustness '
                       f'(eval/README.md).')
        return out

    # --------------------------------------------------------------------------------------------- serialisation

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict (NaN and inf become null)."""
        return _clean_json(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


def _matches(obj: Any, attrs: Dict[str, Any]) -> bool:
    for k, v in attrs.items():
        have = getattr(obj, k)
        if k == 'eps' and v is not None:
            if not same_eps(have, v):
                return False
        elif have != v:
            return False
    return True


def _one(found: List[Any], attrs: Dict[str, Any]) -> Any:
    if len(found) > 1:
        raise ReportError(f'{len(found)} entries match {attrs} ({", ".join(f.name for f in found)}); add an '
                          f'attribute that tells them apart.')
    return found[0] if found else None


def _clean_json(obj: Any) -> Any:
    """NaN / inf become None (strict JSON); tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_json(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------------ reading, checked

def _check_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` against a type hint of the schema (str, int, float, bool, Any, Optional, List, Dict, dataclass)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        return _check_value(value, next(a for a in args if a is not type(None)), where)
    if origin in (list, List):
        if not isinstance(value, list):
            raise ReportError(f'{where} must be a list, got {type(value).__name__}.')
        return [_check_value(v, args[0], f'{where}[{i}]') for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ReportError(f'{where} must be an object, got {type(value).__name__}.')
        return {k: _check_value(v, args[1], f'{where}[{k!r}]') for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ReportError(f'{where} must be a finite number, got {value!r}.')
        return float(value)
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ReportError(f'{where} must be an integer, got {value!r}.')
    if hint in (str, bool) and not isinstance(value, hint):
        raise ReportError(f'{where} must be a {hint.__name__}, got {value!r}.')
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ReportError(f'{where} must be an object, got {type(data).__name__}.')
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ReportError(f'{where} has keys the schema does not know: {unknown}.')
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ReportError(f'{where} lacks {missing}.')
    return cls(**{k: _check_value(v, hints[k], f'{where}.{k}') for k, v in data.items()})


def _check_accuracies(rep: EvalReport) -> None:
    """Every accuracy lies in [0, 1]; families and threats are known."""
    values = [('clean_accuracy', rep.clean_accuracy), ('clean_accuracy_flip_tta', rep.clean_accuracy_flip_tta)]
    values += [(f'attacks[{k!r}].accuracy', a.accuracy) for k, a in rep.attacks.items()]
    values += [(f'columns[{k!r}].accuracy', c.accuracy) for k, c in rep.columns.items()]
    values += [(f'{t}[{k!r}].accuracy', w.accuracy) for t in ('worst_case', 'worst_case_slice')
               for k, w in getattr(rep, t).items()]
    for where, v in values:
        if v is not None and not 0.0 <= v <= 1.0:
            raise ReportError(f'{where} = {v!r} lies outside [0, 1] (accuracies are fractions).')
    for k, a in list(rep.attacks.items()) + list(rep.columns.items()):
        if a.family not in FAMILIES:
            raise ReportError(f'{k!r} has family {a.family!r}; known: {FAMILIES}.')
    if rep.logits not in ('distance', 'linear'):
        raise ReportError(f'logits = {rep.logits!r}; known: distance, linear.')
    for k, a in rep.attacks.items():
        if a.threat not in THREATS:
            raise ReportError(f'attacks[{k!r}] has threat {a.threat!r}; known: {THREATS}.')


def from_dict(data: Any) -> EvalReport:
    """An :class:`EvalReport` from parsed JSON of any readable version (2.2, 2.1 or 2.0, or 1.0 converted).

    Raises:
        ReportError: Not a report, an unknown version, a missing or mistyped key, an accuracy outside [0, 1].
    """
    if not isinstance(data, dict):
        raise ReportError('an evaluation report is a JSON object (the file python -m eval.robustness writes).')
    version = data.get('version')
    if version == V1:
        data = from_v1(data, REPORT_VERSION)
    elif version not in (V2_0, V2_1, REPORT_VERSION):  # 2.0 and 2.1 hold a subset of 2.2's keys, read as they are
        raise ReportError(f'report version {version!r} is not one this timm-mmc reads ({V1}, {V2_0}, {V2_1}, '
                          f'{REPORT_VERSION}); '
                          f're-run python -m eval.robustness or upgrade timm-mmc.')
    rep = _build(EvalReport, data, 'report')
    _check_accuracies(rep)
    return rep


def loads(text: str) -> EvalReport:
    """Parse a report from JSON text (see :func:`from_dict`)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReportError(f'not valid JSON ({e}); regenerate it with python -m eval.robustness.') from None
    return from_dict(data)


def load(path: os.PathLike) -> EvalReport:
    """Read a report file.

    Raises:
        ReportError: Missing or unreadable file, or a bad report (the message names the file).
    """
    try:
        text = Path(path).read_text(encoding='utf-8')
    except FileNotFoundError:
        raise ReportError(f'evaluation report {str(path)!r} does not exist.') from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f'evaluation report {str(path)!r} cannot be read ({e}).') from None
    try:
        return loads(text)
    except ReportError as e:
        raise ReportError(f'evaluation report {str(path)!r}: {e}') from None


def dump(report: EvalReport, path: os.PathLike) -> Path:
    """Write ``report`` as JSON (schema :data:`REPORT_VERSION`), atomically."""
    from .fileio import atomic_write_text

    if report.version != REPORT_VERSION:
        raise ReportError(f'refusing to write a report of version {report.version!r}; this code writes '
                          f'{REPORT_VERSION}.')
    return atomic_write_text(path, report.to_json() + '\n')
