"""Release timm-mmc weights the way timm users expect them: Hub repos with safetensors, timm's config and a card.

One release folder (``hub_cards/<architecture>.<tag>/``) is exactly the content of one Hub repo::

    model.safetensors            weights (never a pickle)
    config.json                  timm's config: architecture, num_classes, label_names, model_args (head config),
                                 pretrained_cfg; read by ``timm.create_model('hf-hub:...')`` and ``'local-dir:...'``
    README.md                    the model card: YAML front matter with a model-index built from the evaluation JSON
    results/eval.json            the evaluation JSON written by ``python -m eval.robustness`` (verbatim)
    results/robust_accuracy.png  robust accuracy against the perturbation budget
    training/args.yaml           the resolved training configuration (+ summary.json, metrics.jsonl when present)

Command line::

    python -m timm_mmc.hub export --run runs/mmc --eval results/resnet32_mmc.json --out hub_cards/resnet32_mmc.cifar10
    python -m timm_mmc.hub push hub_cards/resnet32_mmc.cifar10 --repo-id ORG/resnet32_mmc.cifar10 --dry-run
    python -m timm_mmc.hub card hub_cards/resnet32_mmc.cifar10     # re-render README.md and the plot
    python -m timm_mmc.hub cache hub_cards/resnet32_mmc.cifar10    # install into the local HF cache (offline use)

Every number the card shows as a result comes from ``results/eval.json`` through :func:`eval_json_to_results` (the one
place that knows the evaluation format). The paper's published numbers, shown beside ours and labelled as the paper's,
come from ``timm_mmc/cards/paper_results.yaml`` with their citation.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = [
    'HubError', 'EvalRow', 'WorstCase', 'EvalSummary', 'parse_eval', 'eval_json_to_results', 'read_run', 'export',
    'render_card', 'write_card', 'write_plot', 'push', 'release_files', 'build_hf_cache', 'main',
]

CARDS_DIR = Path(__file__).resolve().parent / 'cards'  # package data: works from a wheel, not only a checkout
TEMPLATE_PATH = CARDS_DIR / 'template.md'
PAPER_RESULTS_PATH = CARDS_DIR / 'paper_results.yaml'

WEIGHTS_FILE = 'model.safetensors'
CONFIG_FILE = 'config.json'
CARD_FILE = 'README.md'
EVAL_FILE = 'results/eval.json'
PLOT_FILE = 'results/robust_accuracy.png'
TRAINING_FILES = ('args.yaml', 'summary.json', 'metrics.jsonl')
TRAINING_DIR = 'training'
PICKLE_SUFFIXES = ('.bin', '.pth', '.pt', '.pkl', '.pickle', '.ckpt', '.tar', '.npy', '.joblib')
# file types the Hub stores through LFS (blob id = sha256); other files are plain git blobs (blob id = git sha1)
LFS_SUFFIXES = ('.safetensors', '.bin', '.pth', '.pt', '.ckpt', '.png', '.jpg', '.jpeg', '.npz', '.onnx', '.h5')

DATASETS = {
    'cifar10': dict(hf_id='uoft-cs/cifar10', pretty='CIFAR-10', config='plain_text'),
    'cifar100': dict(hf_id='uoft-cs/cifar100', pretty='CIFAR-100', config='cifar100'),
}
JPEG_CAVEAT = ('The CIFAR-10 copy used for training and evaluation is the real CIFAR-10 with every image re-encoded '
               'as JPEG at quality 75 by a public mirror; pixel values differ slightly from the original release, so '
               'every accuracy in this card is close to, not identical with, a figure measured on the original data. '
               'The paper\'s figures (labelled as such) were measured on the original PNG data.')
GENERIC_CAVEAT = ('Check the provenance of the data set copy recorded in training/args.yaml: accuracies measured on a '
                  're-encoded copy are close to, not identical with, figures measured on the original release.')


class HubError(Exception):
    """Bad input or an unreachable Hub; the message says what to do. The command line exits non-zero on it."""


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation JSON adapter: the one place that knows the format written by ``python -m eval.robustness``.
# ----------------------------------------------------------------------------------------------------------------------

@dataclass
class EvalRow:
    """One robustness figure of the evaluation JSON, in the JSON's own unit.

    With the report layout of ``eval.robustness`` (``columns``), a row is a table column: the per-sample worst case
    over the attacks (objectives) listed in ``attacks``, as the paper's tables report. With a flat ``attacks`` list, a
    row is one attack.
    """
    name: str
    family: str  # 'pgd', 'autoattack', 'spsa', 'transfer', 'noise', 'rotation', ... (lower-case)
    accuracy: float
    n: Optional[int] = None
    eps: Optional[float] = None  # pixel units in [0, 1]
    steps: Optional[int] = None
    targeted: Optional[bool] = None
    threat: Optional[str] = None  # 'Linf', 'corruption', ...
    version: Optional[str] = None  # AutoAttack version (standard / rand / fast)
    objectives: List[str] = field(default_factory=list)
    attacks: List[str] = field(default_factory=list)
    config: Dict[str, Any] = field(default_factory=dict)  # other settings from the JSON (sigma, loss, ...)


@dataclass
class WorstCase:
    """Robust accuracy under the whole suite at one eps (per-sample worst case over ``n_attacks`` attacks)."""
    eps: Optional[float]
    accuracy: float
    n: Optional[int] = None
    n_attacks: Optional[int] = None
    slice_only: bool = False  # over the first ``n`` points only (``worst_case_slice``)
    partial: List[str] = field(default_factory=list)  # with slice_only: attacks that covered fewer points still


@dataclass
class EvalSummary:
    """What the card needs from an evaluation JSON (numbers exactly as the JSON has them)."""
    raw: Dict[str, Any]
    model: Optional[str]
    dataset: Optional[str]
    split: str
    n: Optional[int]
    unit: str  # 'fraction' (0-1) or 'percent' (0-100): the JSON's own unit, kept as is in the model-index
    clean: float
    rows: List[EvalRow] = field(default_factory=list)
    worst_case: List[WorstCase] = field(default_factory=list)
    cw: List[Dict[str, Any]] = field(default_factory=list)  # C&W L2 entries (distortion statistics, no budget)
    detail: List[Tuple[str, float, Optional[int]]] = field(default_factory=list)  # every attack: name, acc, n
    warnings: List[str] = field(default_factory=list)
    aa_package: Optional[str] = None  # pyautoattack version from the JSON's versions

    def pct(self, value: float) -> str:
        """A JSON accuracy as a percentage string with two decimals (the only way the card prints one)."""
        return f'{value * 100.0 if self.unit == "fraction" else value:.2f}'


def _first(d: Dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return None


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HubError(f'evaluation JSON: {what} must be a finite number, got {value!r}; re-run python -m '
                       f'eval.robustness or fix the file.')
    return value


def _int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _family(name: str) -> str:
    low = name.lower().replace('-', '').replace('_', '').replace(' ', '')
    if 'autoattack' in low or low.startswith('aa'):
        return 'autoattack'
    for fam in ('pgd', 'fgsm', 'spsa', 'transfer', 'noise', 'rotation', 'cw', 'c&w'):
        if fam in low:
            return 'cw' if fam == 'c&w' else fam
    return low


def _eps_unit(eps: Any) -> Optional[float]:
    """eps in [0, 1] pixel units; a value above 1 is read as /255 units (8 means 8/255)."""
    if eps is None or isinstance(eps, bool) or not isinstance(eps, (int, float)):
        return None
    return eps / 255.0 if eps > 1 else float(eps)


def fmt_eps(eps: Optional[float]) -> str:
    """``8/255`` for eps = 8/255 (or 8/256), else the value; ``-`` when unknown."""
    if eps is None:
        return '-'
    for den in (255, 256):
        k = eps * den
        if abs(k - round(k)) < 1e-4 and round(k) > 0:
            return f'{round(k)}/{den}'
    return f'{eps:.4g}'


def _attack_entries(data: Dict[str, Any]) -> List[Dict[str, Any]]:
    raw = data.get('attacks') or []
    if isinstance(raw, dict):
        raw = [dict(v, name=v.get('name', k)) if isinstance(v, dict) else {'name': k, 'accuracy': v}
               for k, v in raw.items()]
    if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
        raise HubError('evaluation JSON: "attacks" must map attack names to {config, accuracy, ...} objects.')
    return raw


def _row_from_attack(a: Dict[str, Any], name: str, accuracy: float, members: Sequence[Dict[str, Any]] = ()
                     ) -> EvalRow:
    cfg = dict(a.get('config') or {})
    for k in ('steps', 'loss', 'objective', 'version', 'norm'):
        if k in a and k not in cfg:
            cfg[k] = a[k]
    objectives = []
    for m in members or [a]:
        obj = (m.get('config') or {}).get('objective', m.get('objective', m.get('loss')))
        if obj is not None and obj not in objectives:
            objectives.append(str(obj))
    family = str(a.get('family') or _family(name)).lower()
    version = cfg.get('version')
    extra = {k: v for k, v in cfg.items() if k in ('sigma', 'max_degrees', 'method', 'loss', 'n_samples', 'n_iter')
             and v is not None}
    return EvalRow(
        name=name, family=family, accuracy=accuracy, n=_int(a.get('n')), eps=_eps_unit(a.get('eps', cfg.get('eps'))),
        steps=_int(cfg.get('steps')), targeted=a.get('targeted', cfg.get('targeted')) if isinstance(
            a.get('targeted', cfg.get('targeted')), bool) else None,
        threat=a.get('threat', cfg.get('norm')), version=None if version is None else str(version),
        objectives=objectives, attacks=[m.get('name', name) for m in members] if members else [], config=extra)


def parse_eval(data: Dict[str, Any]) -> EvalSummary:
    """Read an evaluation JSON into an :class:`EvalSummary`; numbers are kept exactly as the JSON has them.

    The layout is the report of ``python -m eval.robustness`` (``eval/report.py``, report version 1.0)::

        {"version": "1.0", "model": "local-dir:...", "dataset": ".../cifar10", "split": "test", "n": 1000,
         "checkpoint_sha256": "...", "clean_accuracy": 0.92,                       # fractions
         "attacks": {"pgd10-un-8-mm": {"family": "pgd", "threat": "Linf", "eps": 0.0314, "targeted": false,
                                       "config": {"steps": 10, "objective": "mm", ...}, "n": 1000,
                                       "accuracy": 0.31, ...},
                     "autoattack-standard-8": {..., "config": {"version": "standard", ...}},
                     "cw-un": {"family": "cw", "success_rate": ..., "l2_mean": ..., "l2_paper": ...}, ...},
         "columns": {"PGD10 un 8": {"accuracy": 0.30, "n": 1000, "attacks": ["pgd10-un-8-mm", ...],
                                    "eps": 0.0314, "targeted": false, "family": "pgd"}, ...},
         "worst_case": {"8": {"eps": 0.0314, "accuracy": 0.28, "n": 1000, "attacks": [...]}, ...},
         "warnings": [...], "versions": {"pyautoattack": ...}, ...}

    Rows are the ``columns`` (the per-sample worst case over their attacks, as the paper's tables report). A flat
    layout (``attacks`` as a list of ``{name, config: {eps, steps, targeted, loss, version}, accuracy}`` and a scalar
    ``worst_case_accuracy``, in 0-1 or 0-100) is also read, each attack a row. Entries with a null accuracy (not
    run) are skipped.

    Raises:
        HubError: Missing clean accuracy, non-numeric or out-of-range accuracies.
    """
    if not isinstance(data, dict):
        raise HubError('evaluation JSON: expected an object at the top level (the file python -m eval.robustness '
                       'writes).')
    clean_raw = _first(data, 'clean_accuracy', 'clean_acc', 'clean')
    if isinstance(clean_raw, dict):
        clean_raw = _first(clean_raw, 'accuracy', 'acc')
    if clean_raw is None:
        raise HubError('evaluation JSON has no "clean_accuracy"; export needs the file written by '
                       'python -m eval.robustness (with at least one evaluated example).')
    clean = _number(clean_raw, 'clean_accuracy')
    entries = _attack_entries(data)
    by_name = {str(a.get('name')): a for a in entries}
    rows: List[EvalRow] = []
    cw: List[Dict[str, Any]] = []
    detail: List[Tuple[str, float, Optional[int]]] = []
    for i, a in enumerate(entries):
        name = str(_first(a, 'name', 'attack') or f'attack{i}')
        acc = _first(a, 'accuracy', 'robust_accuracy', 'acc')
        family = str(a.get('family') or _family(name)).lower()
        if family == 'cw':
            cw.append(a)
        elif acc is not None:
            detail.append((name, _number(acc, f'attacks[{name!r}] accuracy'), _int(a.get('n'))))
    columns = data.get('columns')
    if isinstance(columns, dict) and columns:
        for key, col in columns.items():
            if not isinstance(col, dict) or col.get('accuracy') is None or str(col.get('family')).lower() == 'cw':
                continue
            members = [by_name[m] for m in col.get('attacks') or [] if m in by_name]
            first = dict(members[0]) if members else {}
            first.update({k: col[k] for k in ('eps', 'targeted', 'family', 'n') if col.get(k) is not None})
            rows.append(_row_from_attack(first, str(key), _number(col['accuracy'], f'columns[{key!r}] accuracy'),
                                         members))
    else:
        for name, acc, _ in detail:
            rows.append(_row_from_attack(by_name.get(name, {}), name, acc))
    worst: List[WorstCase] = []
    for field_name, slice_only in (('worst_case', False), ('worst_case_slice', True)):
        entries = data.get(field_name)
        for key, v in (entries.items() if isinstance(entries, dict) else ()):
            if isinstance(v, dict) and v.get('accuracy') is not None:
                acc = _number(v['accuracy'], f'{field_name}[{key!r}] accuracy')
                worst.append(WorstCase(eps=_eps_unit(v.get('eps')), accuracy=acc, n=_int(v.get('n')),
                                       n_attacks=len(v.get('attacks') or []) or None, slice_only=slice_only,
                                       partial=[str(p) for p in v.get('partial') or []]))
    if data.get('worst_case_accuracy') is not None:
        worst.append(WorstCase(eps=None, accuracy=_number(data['worst_case_accuracy'], 'worst_case_accuracy'),
                               n=_int(data.get('n'))))
    values = [clean] + [r.accuracy for r in rows] + [w.accuracy for w in worst] + [d[1] for d in detail]
    unit = data.get('accuracy_unit') or data.get('unit')
    if unit not in ('fraction', 'percent'):
        unit = 'percent' if max(values) > 1.0 else 'fraction'
    top = 1.0 if unit == 'fraction' else 100.0
    bad = [v for v in values if v < 0 or v > top]
    if bad:
        raise HubError(f'evaluation JSON: accuracies must lie in [0, {top:g}] ({unit}); got {bad[0]!r}.')
    versions = data.get('versions') if isinstance(data.get('versions'), dict) else {}
    aa_pkg = _first(versions, 'pyautoattack', 'autoattack')
    warnings = [str(w) for w in data.get('warnings') or []] if isinstance(data.get('warnings'), list) else []
    return EvalSummary(raw=data, model=data.get('model'), dataset=_norm_dataset(data.get('dataset')),
                       split=str(data.get('split') or 'test'), n=_int(data.get('n', data.get('num_examples'))),
                       unit=unit, clean=clean, rows=rows, worst_case=worst, cw=cw, detail=detail, warnings=warnings,
                       aa_package=None if aa_pkg is None else str(aa_pkg))


def _row_label(r: EvalRow) -> str:
    """Human description of a row: attack, steps, targeting, budget, objectives, version."""
    parts = [r.name]
    if r.family in ('noise', 'rotation'):
        parts.append('random corruption, not an attack')
    if r.steps is not None and r.family not in ('autoattack',):
        parts.append(f'{r.steps} steps')
    if r.targeted is not None and r.family not in ('noise', 'rotation', 'autoattack'):
        parts.append('targeted' if r.targeted else 'untargeted')
    if r.eps is not None:
        parts.append(f'{r.threat or "Linf"} eps={fmt_eps(r.eps)}')
    if r.family == 'autoattack' and r.version:
        parts.append(f'AutoAttack version {r.version}')
    if len(r.attacks) > 1 and r.objectives:
        parts.append(f'worst case over objectives {"/".join(r.objectives)}')
    elif r.objectives:
        parts.append(f'objective {r.objectives[0]}')
    return ', '.join(parts)


def _worst_label(w: WorstCase) -> str:
    if w.eps is None:
        return 'worst case over all attacks (per image)'
    count = f' {w.n_attacks}' if w.n_attacks else ''
    if w.slice_only:
        fewer = f'; {", ".join(w.partial)} on fewer points' if w.partial else ''
        return (f'whole suite at Linf eps={fmt_eps(w.eps)} on the first {w.n} points (per-image worst case over'
                f'{count} attacks{fewer})')
    return f'whole suite at Linf eps={fmt_eps(w.eps)} (per-image worst case over{count} attacks with eps <= it)'


def eval_json_to_results(data: Dict[str, Any], dataset: Optional[str] = None) -> List[Any]:
    """Map an evaluation JSON to ``huggingface_hub.EvalResult`` entries for the card's model-index.

    Values are the JSON's numbers, unchanged (same unit). Entries: clean accuracy; one per evaluation row (see
    :func:`parse_eval`) whose ``metric_config`` names eps and steps (AutoAttack: its version) and whose
    ``metric_args`` carries the settings (eps, steps, targeted, objectives, n, the attacks it covers, the AutoAttack
    package version); one per worst-case entry. C&W L2 (a distortion, not an accuracy at a budget) is in the card's
    body only.

    Args:
        data: The parsed evaluation JSON.
        dataset: ``cifar10`` / ``cifar100`` when the JSON does not say.

    Returns:
        A list of ``EvalResult``.
    """
    from huggingface_hub import EvalResult

    ev = parse_eval(data)
    ds = ev.dataset or _norm_dataset(dataset)
    info = DATASETS.get(ds or '', dict(hf_id=ds or 'unknown', pretty=ds or 'unknown', config=None))
    caveat = ' (JPEG q75 re-encoded copy)' if ds == 'cifar10' else ''
    common = dict(task_type='image-classification', task_name='Image Classification', dataset_type=info['hf_id'],
                  dataset_name=f'{info["pretty"]}{caveat}', dataset_config=info['config'], dataset_split=ev.split,
                  dataset_args={'n': ev.n} if ev.n is not None else None)
    results = [EvalResult(metric_type='accuracy', metric_name='clean accuracy', metric_value=ev.clean,
                          metric_config='clean', **common)]
    for r in ev.rows:
        settings = [('eps', fmt_eps(r.eps) if r.eps is not None else None), ('steps', r.steps),
                    ('targeted', r.targeted if r.family not in ('noise', 'rotation', 'autoattack') else None),
                    ('version', r.version if r.family == 'autoattack' else None)]
        settings += sorted(r.config.items())
        cfg_str = r.name + ''.join(f', {k}={v}' for k, v in settings if v is not None)
        args = dict(family=r.family, threat=r.threat, eps=r.eps, steps=r.steps, targeted=r.targeted,
                    version=r.version, objectives=r.objectives or None, attacks=r.attacks or None, n=r.n, **r.config)
        if r.family == 'autoattack' and ev.aa_package:
            args['package'] = f'pyautoattack {ev.aa_package}'
        kind = 'accuracy' if r.family in ('noise', 'rotation') else 'robust accuracy'
        results.append(EvalResult(metric_type='accuracy', metric_name=f'{kind} ({_row_label(r)})',
                                  metric_value=r.accuracy, metric_config=cfg_str,
                                  metric_args={k: v for k, v in args.items() if v is not None}, **common))
    for w in ev.worst_case:
        args = {k: v for k, v in dict(eps=w.eps, n=w.n, attacks=w.n_attacks,
                                      on_fewer_points=w.partial or None).items() if v is not None}
        results.append(EvalResult(metric_type='accuracy', metric_name=f'robust accuracy ({_worst_label(w)})',
                                  metric_value=w.accuracy,
                                  metric_config=('worst_case_slice' if w.slice_only else 'worst_case')
                                  + (f', eps={fmt_eps(w.eps)}' if w.eps else ''),
                                  metric_args=args or None, **common))
    return results


# ----------------------------------------------------------------------------------------------------------------------
# Inputs: training run folder, evaluation JSON
# ----------------------------------------------------------------------------------------------------------------------

def _norm_dataset(name: Any) -> Optional[str]:
    if not isinstance(name, str) or not name:
        return None
    low = name.lower().replace('-', '').replace('_', '')
    for key in ('cifar100', 'cifar10'):
        if key in low:
            return key
    return low


def _read_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except FileNotFoundError:
        raise HubError(f'{what} {str(path)!r} does not exist.') from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HubError(f'{what} {str(path)!r} is not valid JSON ({e}); regenerate it.') from None


def _read_yaml(path: Path) -> Dict[str, Any]:
    import yaml
    try:
        with open(path, encoding='utf-8') as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise HubError(f'{str(path)!r} is not valid YAML ({e}); fix or remove it.') from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HubError(f'{str(path)!r} must hold a mapping of training options.')
    return data


def read_run(run_dir: os.PathLike) -> Dict[str, Any]:
    """Read a training run folder written by ``timm_mmc/train.py``.

    Requires ``model.safetensors`` and ``config.json``; ``args.yaml``, ``summary.json`` and ``metrics.jsonl`` are
    optional.

    Returns:
        ``{'dir', 'config', 'args', 'summary', 'files'}``; ``files`` maps the optional file names present to paths.

    Raises:
        HubError: Missing folder, weights or config; unreadable files.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise HubError(f'training run {str(run)!r} is not a folder; pass --run runs/<name> (written by '
                       f'timm_mmc/train.py).')
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (run / name).is_file():
            raise HubError(f'{str(run / name)!r} is missing: a run folder needs model.safetensors and config.json '
                           f'(timm save_for_hf output). Re-run training or its final save step.')
    config = _read_json(run / CONFIG_FILE, 'config')
    if not isinstance(config, dict) or not config.get('architecture'):
        raise HubError(f'{str(run / CONFIG_FILE)!r} has no "architecture"; it must be timm\'s config.json '
                       f'(save_for_hf).')
    files = {name: run / name for name in TRAINING_FILES if (run / name).is_file()}
    args = _read_yaml(files['args.yaml']) if 'args.yaml' in files else {}
    summary = _read_json(files['summary.json'], 'summary') if 'summary.json' in files else {}
    return dict(dir=run, config=config, args=args, summary=summary if isinstance(summary, dict) else {},
                files=files)


def _eval_sha256(data: Dict[str, Any]) -> Optional[str]:
    for holder in (data, data.get('checkpoint') if isinstance(data.get('checkpoint'), dict) else {},
                   data.get('weights') if isinstance(data.get('weights'), dict) else {}):
        for k in ('checkpoint_sha256', 'weights_sha256', 'sha256', 'model_sha256'):
            v = holder.get(k)
            if isinstance(v, str) and len(v) == 64:
                return v.lower()
    return None


# ----------------------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------------------

def _build_model(arch: str, tag: str, model_args: Dict[str, Any], checkpoint: Path) -> Any:
    """Model ``arch.tag`` with ``model_args``, strict-loaded from a safetensors / weights-only checkpoint."""
    import timm

    import timm_mmc  # noqa: F401  registers the models
    from .io import ModelLoadError, load_state_dict_safe

    try:
        state = load_state_dict_safe(checkpoint)
    except ModelLoadError as e:
        raise HubError(str(e)) from None
    args = {k: v for k, v in model_args.items() if v is not None}
    try:
        model = timm.create_model(f'{arch}.{tag}', pretrained=False, **args)
    except Exception as e:
        raise HubError(f'could not build {arch}.{tag} from config.json model_args ({type(e).__name__}: {e}).') from None
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        example = (wrong or missing or unexpected)[0]
        raise HubError(f'checkpoint {str(checkpoint)!r} does not fit {arch} with the run\'s model_args '
                       f'({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} mis-shaped keys, e.g. '
                       f'{example!r}); export the run folder whose config.json matches these weights.')
    model.load_state_dict(state)
    return model.eval()


def _nondefault_args(arch: str, tag: str, model: Any) -> Dict[str, Any]:
    """Model arguments that differ from what ``timm.create_model(arch.tag)`` builds (needed by the named path)."""
    import timm

    default = timm.create_model(f'{arch}.{tag}', pretrained=False).model_args()
    ours = model.model_args()
    out = {}
    for k, v in ours.items():
        if k in ('norm_mean', 'norm_std'):
            continue  # persistent buffers: the weights carry them, loading by name restores them
        d = default.get(k)
        if isinstance(v, list) and isinstance(d, list) and len(v) == len(d):
            if all(abs(a - b) < 1e-6 for a, b in zip(v, d)):
                continue
        elif v == d:
            continue
        out[k] = v
    return out


def _resolve_tag(arch: str, tag: Optional[str], run: Dict[str, Any], ev: EvalSummary) -> str:
    import timm

    import timm_mmc  # noqa: F401

    if not timm.is_model(arch):
        raise HubError(f'config.json names architecture {arch!r}, which timm_mmc does not register; see '
                       f'timm.list_models("resnet*_mmc").')
    candidates = [tag, _norm_dataset(run['args'].get('dataset')), ev.dataset,
                  (run['config'].get('pretrained_cfg') or {}).get('tag')]
    tag = next((c for c in candidates if c), None)
    known = [n.split('.', 1)[1] for n in timm.list_pretrained(f'{arch}.*')]
    if tag not in known:
        raise HubError(f'cannot tell which pretrained tag {arch} gets (found {tag!r}); pass --tag, one of {known}.')
    run_ds, eval_ds = _norm_dataset(run['args'].get('dataset')), ev.dataset
    for what, ds in (('training args.yaml', run_ds), ('evaluation JSON', eval_ds)):
        if ds and ds != _norm_dataset(tag):
            raise HubError(f'the {what} says dataset {ds!r} but the release tag is {tag!r}; pass the matching '
                           f'--run / --eval / --tag.')
    return tag


def _check_eval_model(ev: EvalSummary, arch: str) -> None:
    import timm

    if isinstance(ev.model, str) and ev.model:
        name = ev.model.split(':', 1)[-1].rstrip('/').split('/')[-1].split('.')[0]
        if timm.is_model(name) and name != arch:
            raise HubError(f'the evaluation JSON is for model {ev.model!r}, not {arch!r}; evaluate this run with '
                           f'python -m eval.robustness and pass that JSON.')


def _check_eval_weights(ev: EvalSummary, source: Path, exported: Path) -> None:
    """The evaluation JSON's ``checkpoint_sha256`` (when it has one) must be the source or the exported weights."""
    from .io import file_sha256

    sha = _eval_sha256(ev.raw)
    if sha is not None and sha not in (file_sha256(source), file_sha256(exported)):
        raise HubError(f'the evaluation JSON was computed on other weights (sha256 {sha[:12]}...) than '
                       f'{str(source)!r}; evaluate these weights (python -m eval.robustness --model local-dir:RUN) '
                       f'and pass that JSON.')


def export(run_dir: os.PathLike, eval_path: os.PathLike, out_dir: os.PathLike, *, tag: Optional[str] = None,
           checkpoint: Optional[os.PathLike] = None, repo_id: Optional[str] = None, overwrite: bool = False,
           plot: bool = True, log: Callable[[str], None] = print) -> Path:
    """Build a release folder (the exact content of a Hub repo) from a training run and its evaluation JSON.

    Everything is written into a temporary folder next to ``out_dir`` and renamed into place at the end, so a
    failure leaves no half-written release.

    Args:
        run_dir: Training run folder (``model.safetensors`` + ``config.json``; optional ``args.yaml``,
            ``summary.json``, ``metrics.jsonl``).
        eval_path: Evaluation JSON from ``python -m eval.robustness`` for these weights.
        out_dir: Release folder to create, e.g. ``hub_cards/resnet32_mmc.cifar10``.
        tag: Pretrained tag (``cifar10`` / ``cifar100``); by default from the run's data set.
        checkpoint: Weights to export instead of ``run_dir/model.safetensors`` (safetensors, or a ``.pth`` read with
            ``torch.load(weights_only=True)``; a pickle that would run code is refused).
        repo_id: Hub repo the card's usage names; default the model's registered ``hf_hub_id``.
        overwrite: Replace an existing ``out_dir``.
        plot: Write ``results/robust_accuracy.png``.
        log: Where progress lines go.

    Returns:
        The release folder.

    Raises:
        HubError: Bad or inconsistent input; nothing is left behind.
    """
    from timm.models import get_pretrained_cfg, save_for_hf

    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise HubError(f'{str(out)!r} exists; pass --overwrite to replace it or choose another --out.')
    run = read_run(run_dir)
    eval_data = _read_json(Path(eval_path), 'evaluation JSON')
    ev = parse_eval(eval_data)
    arch = run['config']['architecture']
    tag = _resolve_tag(arch, tag, run, ev)
    weights = Path(checkpoint) if checkpoint is not None else run['dir'] / WEIGHTS_FILE
    _check_eval_model(ev, arch)
    model_args = dict(run['config'].get('model_args') or {})
    model_args.setdefault('num_classes', run['config'].get('num_classes'))
    model = _build_model(arch, tag, model_args, weights)
    default_repo = get_pretrained_cfg(f'{arch}.{tag}').hf_hub_id
    extra_args = _nondefault_args(arch, tag, model)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{out.name}.tmp-', dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        labels = model.pretrained_cfg.get('label_names')
        model_config = {'label_names': list(labels)} if labels and len(labels) == model.num_classes else None
        save_for_hf(model, str(tmp), model_config=model_config, model_args=model.model_args(),
                    safe_serialization=True)
        _verify_weights(tmp / WEIGHTS_FILE, model)
        _check_eval_weights(ev, weights, tmp / WEIGHTS_FILE)
        (tmp / 'results').mkdir()
        shutil.copyfile(eval_path, tmp / EVAL_FILE)
        if run['files']:
            (tmp / TRAINING_DIR).mkdir()
            for name, path in run['files'].items():
                shutil.copyfile(path, tmp / TRAINING_DIR / name)
        if plot:
            write_plot(tmp)
        write_card(tmp, repo_id=repo_id or default_repo, extra_args=extra_args)
        _self_check(tmp)
        for p in tmp.rglob('*'):
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~_umask())
        if out.exists():
            old = out.with_name(f'.{out.name}.old-{os.getpid()}')
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if _eval_sha256(ev.raw) is None:
        log('note: the evaluation JSON records no weights sha256, so it could not be checked against these weights; '
            'evaluate with python -m eval.robustness (it records one) before publishing.')
    if extra_args:
        log(f'note: this model differs from the registered {arch}.{tag} defaults in {sorted(extra_args)}; '
            f'timm.create_model("{arch}.{tag}", pretrained=True) needs them as keyword arguments (the card says so), '
            f'hf-hub: and local-dir: read them from config.json.')
    if (repo_id or default_repo) != default_repo:
        log(f'note: timm.create_model("{arch}.{tag}", pretrained=True) downloads from {default_repo}; this card '
            f'names {repo_id}, reachable as hf-hub:{repo_id}.')
    log(f'exported {arch}.{tag} to {out}: ' + ', '.join(release_files(out)))
    return out


def _verify_weights(path: Path, model: Any) -> None:
    from safetensors.torch import load_file

    saved = load_file(str(path))
    own = model.state_dict()
    if set(saved) != set(own) or any(not saved[k].equal(own[k].cpu()) for k in own):
        raise HubError(f'internal error: {path} does not hold the model\'s weights; nothing was exported.')


def _self_check(folder: Path) -> None:
    """The card must parse back and carry exactly the evaluation JSON's numbers."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(folder / CARD_FILE)
    expected = eval_json_to_results(_read_json(folder / EVAL_FILE, 'evaluation JSON'),
                                    dataset=_folder_tag(folder)[1])
    if card.data.eval_results != expected:
        raise HubError('internal error: the rendered card\'s model-index differs from the evaluation JSON; '
                       'nothing was written.')


# ----------------------------------------------------------------------------------------------------------------------
# Card
# ----------------------------------------------------------------------------------------------------------------------

def _folder_tag(folder: Path) -> Tuple[Dict[str, Any], str]:
    cfg = _read_json(folder / CONFIG_FILE, 'config')
    if not isinstance(cfg, dict) or not cfg.get('architecture'):
        raise HubError(f'{str(folder / CONFIG_FILE)!r} is not a timm config.json; run export first.')
    tag = (cfg.get('pretrained_cfg') or {}).get('tag')
    if not tag:
        raise HubError(f'{str(folder / CONFIG_FILE)!r} has no pretrained_cfg.tag; re-export the release.')
    return cfg, tag


def _paper_rows(dataset: str, arch: str, model_args: Dict[str, Any], train_args: Dict[str, Any]
                ) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]], Dict[str, Any], Optional[str]]:
    """The paper rows (PGD table, AutoAttack) matching this model, the sources, and an architecture caveat."""
    import yaml

    if not PAPER_RESULTS_PATH.is_file():
        return None, None, {}, None
    with open(PAPER_RESULTS_PATH, encoding='utf-8') as f:
        paper = yaml.safe_load(f)
    depth_name, _, _ = arch.partition('_')
    arch_key = {'resnet32': 'resnet32', 'resnet32v2': 'resnet32', 'resnet110': 'resnet110'}.get(depth_name)
    caveat = None
    if depth_name == 'resnet32':
        caveat = ('the paper\'s "ResNet-32" is the authors\' pre-activation bottleneck network (our resnet32v2); '
                  'this model is He et al.\'s basic-block ResNet-32, so the comparison is architecture-approximate')
    head = model_args.get('head')
    method = {'linear': 'linear', 'mmlda': 'mmlda', 'lgm': 'lgm'}.get(head)
    if head == 'mmc':
        norm_ok = abs(float(model_args.get('center_norm', 0)) - 10.0) < 1e-9
        if norm_ok:
            method = 'mmc_rand' if model_args.get('center_kind') == 'random' else 'mmc'
    adv_raw = str(train_args.get('adv', 'none') or 'none').lower()
    if adv_raw in ('none', 'false', 'no', ''):
        adv = 'none'
    elif adv_raw == 'pgd':
        tgt = _first(train_args, 'adv_targeted', 'targeted', 'adv_target')
        adv = 'targeted' if tgt in (True, 'true', 'random', 'targeted') else 'untargeted'
    else:
        adv = adv_raw
    key = dict(dataset=dataset, arch=arch_key, method=method)
    pgd = next((r for r in paper.get('pgd_rows', []) if all(r.get(k) == v for k, v in key.items())
                and r.get('adv') == adv), None)
    aa = next((r for r in paper.get('autoattack_rows', []) if all(r.get(k) == v for k, v in key.items())
               and (r.get('adv') == adv or (r.get('adv') == 'any' and adv != 'none'))), None)
    if pgd is not None:
        pgd = dict(pgd, columns=[tuple(c) for c in paper['pgd_columns']],
                   spsa_columns=[tuple(c) for c in paper.get('spsa_columns', [])],
                   noise_sigma=paper.get('noise_sigma'), rotation_degrees=paper.get('rotation_degrees'))
    return pgd, aa, paper.get('sources', {}), caveat


def _paper_value(r: EvalRow, pgd: Optional[Dict[str, Any]], aa: Optional[Dict[str, Any]]) -> str:
    """The paper's figure for an evaluation row with the table it is from, or ``-`` where the paper has none."""
    close = (lambda a, b: a is not None and b is not None and abs(a - b) < 0.05)
    eps255 = None if r.eps is None else r.eps * 255.0
    if pgd is not None:
        if r.family == 'pgd' and r.steps is not None and r.targeted is not None:
            for (steps, targeted, e), value in zip(pgd['columns'], pgd['pgd']):
                if steps == r.steps and targeted == r.targeted and close(eps255, e):
                    return f'{value} ({pgd["table"]})'
        if r.family == 'spsa' and pgd.get('spsa') and r.steps is not None and r.targeted is not None:
            for (steps, targeted, e), value in zip(pgd['spsa_columns'], pgd['spsa']):
                if steps == r.steps and targeted == r.targeted and close(eps255, e):
                    return f'{value} ({pgd["table_b"]})'
        if r.family == 'noise' and pgd.get('noise') and r.config.get('sigma') == pgd.get('noise_sigma'):
            return f'{pgd["noise"]} ({pgd["table_b"]})'
        if r.family == 'rotation' and pgd.get('rotation') and r.config.get('max_degrees') == pgd.get(
                'rotation_degrees'):
            return f'{pgd["rotation"]} ({pgd["table_b"]})'
    if r.family == 'autoattack' and aa is not None and close(eps255, aa['eps']):
        return f'{aa["autoattack"]} (AutoAttack)'
    return '-'


BIBTEX = {
    'pang2020': """@inproceedings{pang2020rethinking,
  title     = {Rethinking Softmax Cross-Entropy Loss for Adversarial Robustness},
  author    = {Pang, Tianyu and Xu, Kun and Dong, Yinpeng and Du, Chao and Chen, Ning and Zhu, Jun},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2020}
}""",
    'pang2018': """@inproceedings{pang2018max,
  title     = {Max-Mahalanobis Linear Discriminant Analysis Networks},
  author    = {Pang, Tianyu and Du, Chao and Zhu, Jun},
  booktitle = {International Conference on Machine Learning (ICML)},
  year      = {2018}
}""",
    'wan2018': """@inproceedings{wan2018rethinking,
  title     = {Rethinking Feature Distribution for Loss Functions in Image Classification},
  author    = {Wan, Weitao and Zhong, Yuanyi and Li, Tianpeng and Chen, Jiansheng},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2018}
}""",
    'he2016': """@inproceedings{he2016deep,
  title     = {Deep Residual Learning for Image Recognition},
  author    = {He, Kaiming and Zhang, Xiangyu and Ren, Shaoqing and Sun, Jian},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2016}
}""",
    'he2016identity': """@inproceedings{he2016identity,
  title     = {Identity Mappings in Deep Residual Networks},
  author    = {He, Kaiming and Zhang, Xiangyu and Ren, Shaoqing and Sun, Jian},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2016}
}""",
    'croce2020': """@inproceedings{croce2020reliable,
  title     = {Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse Parameter-free Attacks},
  author    = {Croce, Francesco and Hein, Matthias},
  booktitle = {International Conference on Machine Learning (ICML)},
  year      = {2020}
}""",
}
PAPERS = {
    'pang2020': 'Pang et al., "Rethinking Softmax Cross-Entropy Loss for Adversarial Robustness", ICLR 2020 '
                '([arXiv:1905.10626](https://arxiv.org/abs/1905.10626))',
    'pang2018': 'Pang et al., "Max-Mahalanobis Linear Discriminant Analysis Networks", ICML 2018 '
                '([arXiv:1802.09308](https://arxiv.org/abs/1802.09308))',
    'wan2018': 'Wan et al., "Rethinking Feature Distribution for Loss Functions in Image Classification", CVPR 2018',
    'he2016': 'He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 '
              '([arXiv:1512.03385](https://arxiv.org/abs/1512.03385))',
    'he2016identity': 'He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016 '
                      '([arXiv:1603.05027](https://arxiv.org/abs/1603.05027))',
    'croce2020': 'Croce & Hein, "Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse '
                 'Parameter-free Attacks", ICML 2020 ([arXiv:2003.01690](https://arxiv.org/abs/2003.01690))',
}
HEAD_TEXT = {
    'mmc': ('The classifier is a set of fixed Max-Mahalanobis class centers (maximal, equal pairwise distances, norm '
            'C = {center_norm:g}); logits are negative half squared distances from the feature z to each center, and '
            'the Max-Mahalanobis center (MMC) loss pulls z to its class center. Pang et al. (ICLR 2020) argue this '
            'induces high-density feature regions and so more robustness than softmax cross-entropy.'),
    'mmc_rand': ('MMC loss with random class centers of the same norm (C = {center_norm:g}) instead of '
                 'Max-Mahalanobis ones: the paper\'s "MMC (rand)" ablation.'),
    'mmlda': ('Fixed Max-Mahalanobis class centers (norm C = {center_norm:g}) trained with cross-entropy on the '
              'distance logits (MMLDA, Pang et al., ICML 2018).'),
    'lgm': ('Trainable Gaussian class means (identity covariance) with distance logits: the L-GM loss of Wan et al. '
            '(CVPR 2018), a baseline in the MMC paper.'),
    'linear': 'A linear softmax classifier trained with cross-entropy (SCE): the paper\'s baseline.',
}


def _md(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text.replace('|', '\\|').replace('\n', ' ')


def _training_files(folder: Path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """A release's ``training/args.yaml`` and ``training/summary.json`` (empty dicts where absent)."""
    tdir = folder / TRAINING_DIR
    args = _read_yaml(tdir / 'args.yaml') if (tdir / 'args.yaml').is_file() else {}
    summary = _read_json(tdir / 'summary.json', 'summary') if (tdir / 'summary.json').is_file() else {}
    return args, summary if isinstance(summary, dict) else {}


def _training_text(folder: Path, dataset: str) -> str:
    tdir = folder / TRAINING_DIR
    lines: List[str] = []
    args, summary = _training_files(folder)
    if args:
        lines.append('The resolved training configuration (`training/args.yaml`, written by `timm_mmc/train.py`):')
        lines.append('')
        lines.append('| option | value |')
        lines.append('| --- | --- |')
        lines.extend(f'| `{_md(k)}` | `{_md(v)}` |' for k, v in args.items())
    else:
        lines.append('The training configuration was not shipped with this release (no `training/args.yaml`).')
    lines.append('')
    facts = []
    if summary.get('hardware') is not None:
        facts.append(f'- Hardware: {_md(summary["hardware"])}')
    wall = summary.get('wall_time_s')
    if isinstance(wall, (int, float)) and not isinstance(wall, bool):
        h, rem = divmod(int(round(wall)), 3600)
        facts.append(f'- Wall time: {h} h {rem // 60:02d} min ({wall:g} s)')
    if summary.get('versions') is not None:
        facts.append(f'- Software: {_md(summary["versions"])}')
    if facts:
        lines.append('From `training/summary.json`:')
        lines.append('')
        lines.extend(facts)
    else:
        lines.append('Hardware and wall time were not recorded with this release (no `training/summary.json`).')
    lines.append('')
    info = DATASETS.get(dataset, dict(pretty=dataset, hf_id=dataset))
    caveat = JPEG_CAVEAT if dataset == 'cifar10' else GENERIC_CAVEAT
    lines.append(f'Data set: {info["pretty"]} (official train / test split, laid out like the Hub data set '
                 f'`{info["hf_id"]}`). {caveat}')
    if (tdir / 'metrics.jsonl').is_file():
        lines.append('')
        lines.append('Per-epoch training logs are in `training/metrics.jsonl`.')
    return '\n'.join(lines)


def _subset_text(ev: EvalSummary) -> str:
    """Which images were evaluated, from the JSON's ``n`` and ``indices``."""
    idx = ev.raw.get('indices')
    if not ev.n:
        return f'the {ev.split} split'
    if isinstance(idx, list) and idx and all(isinstance(i, int) for i in idx) and idx != list(range(len(idx))):
        if idx == list(range(idx[0], idx[0] + len(idx))):
            return f'{ev.n} images of the {ev.split} split (indices {idx[0]} to {idx[-1]})'
        return f'{ev.n} images of the {ev.split} split (indices listed in results/eval.json)'
    return f'the first {ev.n} images of the {ev.split} split'


def _eval_tables(ev: EvalSummary, pgd_row: Optional[Dict[str, Any]], aa_row: Optional[Dict[str, Any]],
                 sources: Dict[str, Any], arch_caveat: Optional[str], caveat: str) -> Tuple[str, str]:
    """The card's evaluation tables (every number from ``ev``, the paper's labelled) and the notes under them."""
    def n_of(n: Optional[int]) -> str:
        return '-' if n is None else str(n)

    paper_clean = '-'
    if pgd_row is not None:
        paper_clean = f'{pgd_row["clean"]} ({pgd_row["table"]})'
    elif aa_row is not None:
        paper_clean = f'{aa_row["clean"]} (AutoAttack study)'
    lines = ['| Evaluation | Threat | eps | Steps | Targeted | Objectives | n | This model (%) | Paper (%) |',
             '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
             f'| clean | - | - | - | - | - | {n_of(ev.n)} | {ev.pct(ev.clean)} | {paper_clean} |']
    for r in ev.rows:
        steps = r.steps if r.steps is not None else '-'
        tgt = '-' if r.targeted is None or r.family in ('noise', 'rotation', 'autoattack') else (
            'yes' if r.targeted else 'no')
        name = r.name + (f' (AutoAttack {r.version})' if r.family == 'autoattack' and r.version else '')
        if r.config:
            name += ' (' + ', '.join(f'{k} {v}' for k, v in sorted(r.config.items())) + ')'
        lines.append(f'| {_md(name)} | {_md(r.threat or ("Linf" if r.eps is not None else "-"))} | {fmt_eps(r.eps)} '
                     f'| {steps} | {tgt} | {_md("/".join(r.objectives) or "-")} | {n_of(r.n)} | {ev.pct(r.accuracy)} '
                     f'| {_paper_value(r, pgd_row, aa_row)} |')
    if ev.worst_case:
        lines += ['', '| Robust accuracy under the whole suite | n | This model (%) |', '| --- | --- | --- |']
        lines += [f'| {_md(_worst_label(w))} | {n_of(w.n)} | {ev.pct(w.accuracy)} |' for w in ev.worst_case]
    if ev.cw:
        lines += ['', 'C&W L2 (minimal distortion, no budget; from the JSON as is):', '',
                  '| attack | n | success rate (%) | mean L2 (successes) | median L2 (successes) | paper-style mean L2 '
                  '| Paper mean L2 |', '| --- | --- | --- | --- | --- | --- | --- |']
        for c in ev.cw:
            def num(k: str) -> str:
                v = c.get(k)
                return '-' if not isinstance(v, (int, float)) or isinstance(v, bool) else f'{v:.4f}'
            sr = c.get('success_rate')
            paper_l2 = '-'
            if pgd_row is not None and pgd_row.get('cw') and isinstance(c.get('targeted'), bool):
                paper_l2 = f'{pgd_row["cw"][0 if c["targeted"] else 1]} ({pgd_row["table_b"]})'
            lines.append(f'| {_md(c.get("name"))} | {n_of(_int(c.get("n")))} | '
                         f'{ev.pct(sr) if isinstance(sr, (int, float)) and ev.unit == "fraction" else "-"} | '
                         f'{num("l2_mean")} | {num("l2_median")} | {num("l2_paper")} | {paper_l2} |')
    if ev.detail and ev.rows and any(len(r.attacks) > 1 for r in ev.rows):
        lines += ['', '<details><summary>Every attack, one objective each</summary>', '',
                  '| attack | n | accuracy (%) |', '| --- | --- | --- |']
        lines += [f'| {_md(name)} | {n_of(n)} | {ev.pct(acc)} |' for name, acc, n in ev.detail]
        lines += ['', '</details>']

    notes = []
    if pgd_row is not None or aa_row is not None:
        used = []
        if pgd_row is not None:
            used.append(f'{sources.get(pgd_row["source"], {}).get("cite", pgd_row["source"])}, {pgd_row["table"]}, '
                        f'row "{pgd_row["label"]}"')
        if aa_row is not None:
            used.append(f'{sources.get(aa_row["source"], {}).get("cite", aa_row["source"])}: {aa_row["label"]}, '
                        f'clean {aa_row["clean"]}, reported {aa_row["reported"]}, AutoAttack {aa_row["autoattack"]}')
        notes.append('"Paper" column: published figures, not ours: ' + '; '.join(used) + '. They were measured '
                     'on the original PNG CIFAR data with the authors\' adaptive white-box attacks and are matched to '
                     'our rows by attack, steps, targeting and eps only: context, not a reproduction.')
        if arch_caveat:
            notes.append(f'Architecture: {arch_caveat}.')
    else:
        notes.append('"Paper" column: the MMC paper reports no figure for this model configuration, so none is shown.')
    notes.append(f'Data caveat: {caveat}')
    aa_rows = [r for r in ev.rows if r.family == 'autoattack']
    if not aa_rows:
        notes.append('No AutoAttack result is in the evaluation JSON; PGD-only numbers can overstate robustness '
                     '(Croce & Hein, ICML 2020, lowered the MMC paper\'s adversarially trained model from 55.0% to '
                     '43.48% at eps 8/255).')
    for r in aa_rows:
        pkg = f' (package pyautoattack {ev.aa_package})' if ev.aa_package else ''
        if r.version and r.version != 'standard':
            notes.append(f'{r.name}: AutoAttack version "{r.version}"{pkg}, not the standard AutoAttack of RobustBench '
                         f'(APGD-CE, APGD-T, FAB-T, Square); a standard run can only lower the figure.')
        elif pkg:
            notes.append(f'{r.name}: AutoAttack version "{r.version}"{pkg}.')
    options = ev.raw.get('options') if isinstance(ev.raw.get('options'), dict) else {}
    if options.get('standalone') is False:
        notes.append('The evaluation ran cheapest first (option standalone = false): an attack skips points that a '
                     'smaller budget of the same attack already broke, and AutoAttack runs only on points that '
                     'survived every cheaper Linf attack at its eps, so each figure is the accuracy under that '
                     'composite attack (never higher than the attack alone would give).')
    for w in ev.warnings:
        notes.append(f'Evaluation warning (from the JSON): {_md(w)}')
    return '\n'.join(lines), '\n'.join(f'- {n}' for n in notes)


def render_card(folder: os.PathLike, repo_id: Optional[str] = None,
                extra_args: Optional[Dict[str, Any]] = None) -> Any:
    """Render the model card (a ``huggingface_hub.ModelCard``) of a release folder from its own files.

    Args:
        folder: Release folder with ``config.json`` and ``results/eval.json`` (``training/`` optional).
        repo_id: Hub repo the card names; default the existing card's, else the registered ``hf_hub_id``.
        extra_args: Model arguments the named ``create_model`` path needs (non-default ones); default: recomputed.

    Raises:
        HubError: Missing files or template.
    """
    import timm
    from huggingface_hub import ModelCard, ModelCardData
    from timm.models import get_pretrained_cfg

    import timm_mmc  # noqa: F401  registers the models

    folder = Path(folder)
    cfg, tag = _folder_tag(folder)
    arch = cfg['architecture']
    if not (folder / EVAL_FILE).is_file():
        raise HubError(f'{str(folder / EVAL_FILE)!r} is missing; export with --eval results/<model>.json.')
    if not TEMPLATE_PATH.is_file():
        raise HubError(f'card template {str(TEMPLATE_PATH)!r} is missing; reinstall timm-mmc (it is package data).')
    eval_data = _read_json(folder / EVAL_FILE, 'evaluation JSON')
    ev = parse_eval(eval_data)
    dataset = ev.dataset or _norm_dataset(tag) or tag
    if repo_id is None and (folder / CARD_FILE).is_file():
        try:
            repo_id = ModelCard.load(folder / CARD_FILE).data.model_name
        except Exception:
            repo_id = None
    default_repo = get_pretrained_cfg(f'{arch}.{tag}').hf_hub_id
    repo_id = repo_id or default_repo
    model_args = dict(cfg.get('model_args') or {})
    train_args = _read_yaml(folder / TRAINING_DIR / 'args.yaml') if (folder / TRAINING_DIR / 'args.yaml').is_file() \
        else {}
    try:
        model = timm.create_model(arch, pretrained=False, **{k: v for k, v in model_args.items() if v is not None})
    except Exception as e:
        raise HubError(f'{str(folder / CONFIG_FILE)!r} does not describe a timm-mmc model ({type(e).__name__}: {e}); '
                       f're-export the release.') from None
    if extra_args is None:
        extra_args = _nondefault_args(arch, tag, model)
    num_params = sum(p.numel() for p in model.parameters())
    head = model_args.get('head', 'mmc')
    head_key = 'mmc_rand' if head == 'mmc' and model_args.get('center_kind') == 'random' else head
    info = DATASETS.get(dataset, dict(hf_id=dataset, pretty=dataset, config=None))
    caveat = JPEG_CAVEAT if dataset == 'cifar10' else GENERIC_CAVEAT
    pgd_row, aa_row, sources, arch_caveat = _paper_rows(dataset, arch, model_args, train_args)

    # what it does under attack, in one paragraph (numbers from the evaluation JSON only)
    n_text = _subset_text(ev)
    summary = (f'`{arch}` trained on {info["pretty"]} with a `{head}` head, released with its robustness '
               f'evaluation. On {n_text} it has **{ev.pct(ev.clean)}% clean accuracy**')
    suite = [w for w in ev.worst_case if w.eps is not None and not w.slice_only]
    on_slice = [w for w in ev.worst_case if w.eps is not None and w.slice_only]
    attacked = [r for r in ev.rows if r.family not in ('noise', 'rotation')]
    if suite:
        summary += '; robust accuracy under the whole evaluation suite (per image, the worst case over every Linf ' \
                   'attack within the budget): ' + ', '.join(f'**{ev.pct(w.accuracy)}% at eps {fmt_eps(w.eps)}**'
                                                             for w in suite) + '.'
        if on_slice:
            summary += ' Some attacks ran on the first points only; the same worst case on those points: ' + \
                ', '.join(f'**{ev.pct(w.accuracy)}% at eps {fmt_eps(w.eps)} (first {w.n})**' for w in on_slice) + '.'
    elif attacked:
        worst = min(attacked, key=lambda r: r.accuracy)
        summary += f'; the strongest attack evaluated ({_row_label(worst)}) leaves **{ev.pct(worst.accuracy)}%**.'
    else:
        summary += '. **No attack was evaluated: this card makes no robustness claim.**'
    summary += ' Every accuracy in this card is read from `results/eval.json`; see the data caveat below.'
    eval_table, eval_notes = _eval_tables(ev, pgd_row, aa_row, sources, arch_caveat, caveat)
    meta = [f'suite `{_md(ev.raw["suite"])}`' if ev.raw.get('suite') else '',
            f'seed {_md(ev.raw["seed"])}' if ev.raw.get('seed') is not None else '',
            f'device {_md(ev.raw["device"])}' if ev.raw.get('device') else '',
            f'report version {_md(ev.raw["version"])}' if ev.raw.get('version') else '',
            f'weights sha256 `{_md(ev.raw["checkpoint_sha256"])}`' if ev.raw.get('checkpoint_sha256') else '']
    meta = [m for m in meta if m]
    eval_intro = (f'Evaluated with `python -m eval.robustness` on {n_text} of {info["pretty"]} '
                  f'({"JPEG q75 re-encoded copy" if dataset == "cifar10" else "see the data caveat"}). Accuracies '
                  f'in %, read from `results/eval.json`' + (f' ({", ".join(meta)})' if meta else '') + '. '
                  + ('Each row is one column of the paper\'s tables: per image, the worst case over the attacks of '
                     'that column (one per objective, listed in the JSON). ' if any(r.attacks for r in ev.rows)
                     else 'Each row is one attack. ')
                  + 'eps in pixel units of images in [0, 1].')

    # usage
    kw = ''.join(f', {k}={v!r}' for k, v in (extra_args or {}).items())
    lines = []
    if repo_id == default_repo:
        lines.append(f'model = timm.create_model("{arch}.{tag}", pretrained=True{kw}).eval()  # from {repo_id}')
        lines.append(f'# or: timm.create_model("hf-hub:{repo_id}", pretrained=True)')
    else:
        lines.append(f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()')
    local = repo_id.split('/')[-1]
    lines.append('# or, from a local copy of this repo:')
    lines.append(f'# timm.create_model("local-dir:path/to/{local}", pretrained=True)')
    lines += ['x = torch.rand(8, 3, 32, 32)  # images in [0, 1], no normalisation',
              'with torch.no_grad():',
              '    pred = model(x).argmax(1)',
              f'labels = model.pretrained_cfg["label_names"]  # {info["pretty"]} class names']
    usage = '\n'.join(lines)

    limitations = [
        f'Robustness is claimed only for the attacks in the table, at the listed budgets, on {n_text}; other attacks, '
        'norms or budgets can do better. Attacks that adapt to the distance-based head are the real test.',
        f'Data: {caveat}',
        'Inputs are 32x32 CIFAR images in [0, 1]; other resolutions or domains are untested.',
        'A research artefact for studying adversarial robustness; not for security-critical use.',
    ]
    if extra_args:
        limitations.append(f'The weights use non-default model arguments {sorted(extra_args)}; loading by registered '
                           f'name needs them as keyword arguments (see Usage); hf-hub: and local-dir: read them from '
                           f'config.json.')

    keys = ['pang2020']
    if head == 'mmlda':
        keys.append('pang2018')
    if head == 'lgm':
        keys.append('wan2018')
    keys.append('he2016identity' if model_args.get('block') == 'preact_bottleneck' or 'v2' in arch else 'he2016')
    keys.append('croce2020')
    paper_list = '; '.join(PAPERS[k] for k in keys) + '.'
    if getattr(model, 'block', 'basic') == 'preact_bottleneck':
        arch_desc = (f'the MMC authors\' pre-activation bottleneck ResNet of depth {model.depth} (He et al., ECCV '
                     f'2016), which their code calls "resnet32v2"')
    else:
        arch_desc = f'CIFAR ResNet-{model.depth} with basic blocks, 16/32/64 channels (He et al., CVPR 2016)'
    hc = dict(model_args)
    head_desc = (f'`{head}`, feature dim {hc.get("feature_dim")}'
                 + (f', center norm C = {hc.get("center_norm"):g}, centers `{hc.get("center_kind")}` (fixed, rebuilt '
                    f'from config.json, never stored)' if head in ('mmc', 'mmlda') else '')
                 + (', trainable means' if head == 'lgm' else ''))
    desc = HEAD_TEXT.get(head_key, '').format(center_norm=float(hc.get('center_norm', 10.0)))

    card_data = ModelCardData(
        library_name='timm', license=(cfg.get('pretrained_cfg') or {}).get('license', 'apache-2.0'),
        tags=['image-classification', 'timm', 'timm-mmc', 'pytorch', 'adversarial-robustness', 'max-mahalanobis',
              dataset],
        datasets=[info['hf_id']], metrics=['accuracy'], pipeline_tag='image-classification', model_name=repo_id,
        eval_results=eval_json_to_results(eval_data, dataset=dataset))
    card = ModelCard.from_template(
        card_data, template_path=str(TEMPLATE_PATH), model_title=f'{arch}.{tag}', summary=summary,
        data_caveat=caveat, model_description=desc, architecture=arch, arch_description=arch_desc,
        head_description=head_desc, num_classes=cfg.get('num_classes'), dataset_pretty=info['pretty'],
        num_params=f'{num_params / 1e6:.2f}M', paper_list=paper_list,
        training_text=_training_text(folder, dataset), eval_intro=eval_intro, eval_table=eval_table,
        eval_notes=eval_notes, plot_file=PLOT_FILE if (folder / PLOT_FILE).is_file() else None, usage_code=usage,
        limitations='\n'.join(f'- {x}' for x in limitations), bibtex='\n\n'.join(BIBTEX[k] for k in keys))
    return card


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_card(folder: os.PathLike, repo_id: Optional[str] = None,
               extra_args: Optional[Dict[str, Any]] = None) -> Path:
    """Render and (atomically) write ``README.md`` of a release folder. Returns its path."""
    folder = Path(folder)
    card = render_card(folder, repo_id=repo_id, extra_args=extra_args)
    path = folder / CARD_FILE
    _atomic_write(path, str(card).encode('utf-8'))
    return path


def write_plot(folder: os.PathLike) -> Optional[Path]:
    """Plot robust accuracy against eps from ``results/eval.json`` into ``results/robust_accuracy.png``.

    One line per table row with an eps (clean accuracy at eps 0), the whole suite's worst case in black.

    Returns:
        The PNG path, or None (and an earlier plot removed) when no row has an eps.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder = Path(folder)
    ev = parse_eval(_read_json(folder / EVAL_FILE, 'evaluation JSON'))
    scale = 100.0 if ev.unit == 'fraction' else 1.0
    groups: Dict[str, List[Tuple[float, float]]] = {}
    for r in ev.rows:
        if r.eps is None:
            continue
        label = r.family.upper() + (str(r.steps) if r.steps is not None and r.family != 'autoattack' else '')
        label += f' {r.version}' if r.family == 'autoattack' and r.version else ''
        label += '' if r.targeted is None else (' targeted' if r.targeted else ' untargeted')
        groups.setdefault(label, []).append((r.eps * 255.0, r.accuracy * scale))
    suite = sorted((w.eps * 255.0, w.accuracy * scale) for w in ev.worst_case
                   if w.eps is not None and not w.slice_only)
    path = folder / PLOT_FILE
    if not groups and not suite:
        path.unlink(missing_ok=True)  # a plot of earlier results must not outlive them
        return None
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    start = [(0.0, ev.clean * scale)]
    for label, pts in sorted(groups.items()):
        pts = start + sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', alpha=0.8, label=label)
    if suite:
        pts = start + suite
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='s', color='black', linewidth=2.5,
                label='worst case over the suite')
    ds = DATASETS.get(ev.dataset or '', {}).get('pretty', ev.dataset or '')
    note = ' (JPEG q75 copy)' if ev.dataset == 'cifar10' else ''
    name = Path(str(ev.model or '').split(':', 1)[-1]).name
    ax.set_title(f'{name} on {ds}{note}, n={ev.n} (clean accuracy at eps 0)', fontsize=9)
    ax.set_xlabel('eps (/255, Linf)')
    ax.set_ylabel('accuracy (%)')
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp.png')
    fig.savefig(tmp, format='png', metadata={'Software': None})
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# The README's results table, from the release folders
# ----------------------------------------------------------------------------------------------------------------------

RESULTS_COLUMNS = ('release', 'training', 'clean, 10k test', 'n', 'clean', 'PGD-10 un 8, authors\' objective',
                   'PGD-10 un 8, margin', 'PGD-50 un 8 (worst over objectives)', 'AutoAttack 8',
                   'worst case 8', 'worst case 16', 'C&W un L2, paper\'s mean (n)')


def results_table(folders: Sequence[os.PathLike]) -> str:
    """One Markdown row per release folder, every figure read from its ``training/`` and ``results/eval.json``.

    Accuracies in %, one decimal; eps in /255. "authors' objective" is the MMC paper's adaptive loss for MM heads
    (``mm``) and cross-entropy for a linear head. The C&W figure is the paper's averaging (failures and clean
    errors counted as 0 distortion), comparable with its Table B; the card has the mean over the successes too. ``-``
    where the evaluation did not run that attack.

    Raises:
        HubError: A folder that is not a release (no ``results/eval.json``).
    """
    def pct(v: Any) -> str:
        return '-' if v is None else f'{100.0 * float(v):.1f}'

    rows = ['| ' + ' | '.join(RESULTS_COLUMNS) + ' |', '|' + ' --- |' * len(RESULTS_COLUMNS)]
    for folder in map(Path, folders):
        if not (folder / EVAL_FILE).is_file():
            raise HubError(f'{str(folder)!r} has no {EVAL_FILE}; pass release folders (hub_cards/<name>).')
        ev = _read_json(folder / EVAL_FILE, 'evaluation JSON')
        args, summary = _training_files(folder)
        parts = [f'{args["epochs"]} ep' + (f' {args["schedule"]}' if args.get('schedule') else '')
                 ] if args.get('epochs') else []
        parts += [str(args['precision'])] if args.get('precision') else []
        adv = str(args.get('adv') or 'none')
        if adv != 'none':
            kind = '' if args.get('adv_targeted') is None else (' targeted' if args['adv_targeted'] else ' untargeted')
            parts.append(f'{"FGSM-RS" if adv == "fgsm" else adv.upper()} AT{kind}')
        if isinstance(summary.get('wall_time_s'), (int, float)):
            parts.append(f'{summary["wall_time_s"] / 60:.0f} min')
        training = ', '.join(parts) or '-'
        attacks, columns = ev.get('attacks') or {}, ev.get('columns') or {}
        if not isinstance(attacks, dict) or not isinstance(columns, dict):
            raise HubError(f'{str(folder / EVAL_FILE)!r} is not in the layout of python -m eval.robustness '
                           f'(attacks and columns by name); re-run the evaluation.')
        own = 'mm' if ev.get('head') == 'mm' else 'ce'
        acc = (lambda name: (attacks.get(name) or {}).get('accuracy'))
        aa = next((a for a in attacks.values() if a.get('family') == 'autoattack'
                   and abs(float(a.get('eps') or 0) * 255 - 8) < 1e-6), None)
        aa_text = '-'
        if aa is not None:
            where = f'first {aa.get("n")}' if aa.get('n') != ev.get('n') else f'all {aa.get("n")}'
            aa_text = f'{pct(aa.get("accuracy"))} ({(aa.get("config") or {}).get("version", "?")}, {where})'
        worst = ev.get('worst_case') or {}
        sl = ev.get('worst_case_slice') or {}
        w8 = pct((worst.get('8') or {}).get('accuracy'))
        if w8 != '-' and aa is not None and aa.get('n') != ev.get('n'):  # AutoAttack judged its prefix only
            if (sl.get('8') or {}).get('n') == aa.get('n'):
                w8 += f'; {pct(sl["8"]["accuracy"])} on the first {aa.get("n")}'
            else:
                w8 += f' (AutoAttack on the first {aa.get("n")} only)'
        w8 = w8 if w8 == '-' else f'**{w8}**'
        cw = attacks.get('cw-un') or {}
        cw_text = '-' if cw.get('l2_paper') is None else f'{cw["l2_paper"]:.3f} ({cw.get("n")})'  # failures as 0
        cells = [f'[`{folder.name}`](hub_cards/{folder.name})', training, pct(summary.get('test_acc')),
                 str(ev.get('n')), pct(ev.get('clean_accuracy')), pct(acc(f'pgd10-un-8-{own}')),
                 pct(acc('pgd10-un-8-margin')), pct((columns.get('PGD50 un 8') or {}).get('accuracy')), aa_text,
                 w8, pct((worst.get('16') or {}).get('accuracy')), cw_text]
        rows.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows)


# ----------------------------------------------------------------------------------------------------------------------
# Push and the local cache
# ----------------------------------------------------------------------------------------------------------------------

def release_files(folder: os.PathLike) -> List[str]:
    """Relative paths (posix) of the files a release folder uploads: everything except hidden files/folders."""
    folder = Path(folder)
    out = []
    for p in sorted(folder.rglob('*')):
        rel = p.relative_to(folder)
        if p.is_file() and not any(part.startswith('.') for part in rel.parts):
            out.append(rel.as_posix())
    return out


def _check_release(folder: Path, repo_id: Optional[str]) -> List[str]:
    from huggingface_hub import ModelCard

    if not folder.is_dir():
        raise HubError(f'{str(folder)!r} is not a release folder; create it with python -m timm_mmc.hub export.')
    files = release_files(folder)
    for need in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE, EVAL_FILE):
        if need not in files:
            raise HubError(f'{str(folder / need)!r} is missing; re-run python -m timm_mmc.hub export.')
    pickles = [f for f in files if f.lower().endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise HubError(f'refusing to upload pickle-based files {pickles}: releases carry safetensors only. Remove '
                       f'them from {str(folder)!r}.')
    try:
        card = ModelCard.load(folder / CARD_FILE)
    except Exception as e:
        raise HubError(f'{str(folder / CARD_FILE)!r} does not parse as a model card ({e}); re-render it with '
                       f'python -m timm_mmc.hub card {folder}.') from None
    if not card.data.eval_results:
        raise HubError(f'{str(folder / CARD_FILE)!r} has no evaluation results; re-render it with '
                       f'python -m timm_mmc.hub card {folder}.')
    try:
        _self_check(folder)
    except HubError:
        raise HubError(f'{str(folder / CARD_FILE)!r} does not carry exactly the numbers of {EVAL_FILE}; re-render '
                       f'it: python -m timm_mmc.hub card {folder}') from None
    _check_weights_load(folder)
    if repo_id is not None and card.data.model_name != repo_id:
        raise HubError(f'the card names repo {card.data.model_name!r}, not {repo_id!r}; re-render it for this repo: '
                       f'python -m timm_mmc.hub card {folder} --repo-id {repo_id}')
    return files


def _check_weights_load(folder: Path) -> None:
    """The folder must load as users will load it: ``timm.create_model('local-dir:...', pretrained=True)``."""
    import timm

    import timm_mmc  # noqa: F401  registers the models

    try:
        timm.create_model(f'local-dir:{folder}', pretrained=True)
    except Exception as e:
        raise HubError(f'{str(folder)!r} does not load with timm.create_model("local-dir:...", pretrained=True) '
                       f'({type(e).__name__}: {e}); re-export it.') from None


def _card_repo(folder: Path) -> str:
    from huggingface_hub import ModelCard

    repo_id = ModelCard.load(folder / CARD_FILE).data.model_name
    if not repo_id:
        raise HubError(f'{str(folder / CARD_FILE)!r} names no repo; pass --repo-id ORG/NAME.')
    return repo_id


def _token_source() -> str:
    from huggingface_hub import get_token

    if os.environ.get('HF_TOKEN'):
        return 'HF_TOKEN environment variable'
    try:
        return 'login cache' if get_token() else ''
    except Exception:
        return ''


def push(folder: os.PathLike, repo_id: str, *, dry_run: bool = False, private: bool = False,
         revision: Optional[str] = None, commit_message: Optional[str] = None, token: Optional[str] = None,
         log: Callable[[str], None] = print) -> Any:
    """Upload a release folder to a Hub model repo with ``huggingface_hub`` (``create_repo`` + ``upload_folder``).

    The repo ends up holding exactly the folder's files (remote files not in the folder are deleted, except
    ``.gitattributes``). The token comes from ``token``, ``HF_TOKEN`` or the login cache, and is never printed.

    Args:
        folder: Release folder from :func:`export`.
        repo_id: ``org/name``; must be the repo the card names.
        dry_run: Only list what would be uploaded (no network).
        private: Create the repo private.
        revision: Branch to push to.
        commit_message: Commit message; default names the files' source.
        token: A Hub token (default: environment / login cache).
        log: Where progress lines go.

    Returns:
        The list of files (dry run) or the ``CommitInfo``.

    Raises:
        HubError: Bad folder, no token, Hub unreachable or refusing.
    """
    from huggingface_hub import constants

    folder = Path(folder)
    if not isinstance(repo_id, str) or repo_id.count('/') != 1 or not all(repo_id.split('/')):
        raise HubError(f'--repo-id must look like ORG/NAME (got {repo_id!r}).')
    files = _check_release(folder, repo_id)
    if dry_run:
        log(f'dry run: would create {"private " if private else ""}model repo {repo_id} (if missing) on '
            f'{constants.ENDPOINT} and upload {len(files)} files from {folder}'
            f'{f" to branch {revision}" if revision else ""}:')
        from .io import file_sha256
        for f in files:
            p = folder / f
            log(f'  {f}  {p.stat().st_size} bytes  sha256 {file_sha256(p)[:16]}')
        src = 'given' if token else _token_source()
        log(f'token: found ({src})' if src else 'token: none found; a real push needs HF_TOKEN or `hf auth login`')
        return files
    if constants.is_offline_mode():
        raise HubError('HF_HUB_OFFLINE is set, so nothing can be uploaded. Unset HF_HUB_OFFLINE on a machine that '
                       f'reaches {constants.ENDPOINT}, or use --dry-run to list the files.')
    from huggingface_hub import HfApi, get_token

    token = token or get_token()
    if not token:
        raise HubError('no Hugging Face token: set HF_TOKEN or run `hf auth login` (a write token), then retry.')
    import timm_mmc
    api = HfApi(token=token, library_name='timm-mmc', library_version=timm_mmc.__version__)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type='model')
        info = api.upload_folder(repo_id=url.repo_id, folder_path=str(folder), allow_patterns=files,
                                 delete_patterns=['*'], revision=revision, repo_type='model',
                                 commit_message=commit_message or f'Upload {folder.name} (timm-mmc '
                                                                  f'{timm_mmc.__version__})')
    except Exception as e:
        raise HubError(_describe_hub_error(e, repo_id, token)) from None
    log(f'pushed {len(files)} files to {url}')
    return info


def _describe_hub_error(e: BaseException, repo_id: str, token: str) -> str:
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(e, OfflineModeIsEnabled):
        msg = 'HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it or use --dry-run.'
    elif isinstance(e, HfHubHTTPError):
        status = getattr(getattr(e, 'response', None), 'status_code', None)
        if status == 401:
            msg = 'the Hub rejected the token (401); set a valid write token in HF_TOKEN or run `hf auth login`.'
        elif status == 403:
            msg = f'the token may not write to {repo_id} (403); use a write token with access to that org.'
        else:
            msg = f'the Hub refused the upload to {repo_id} (HTTP {status}): {str(e).splitlines()[0]}'
    else:
        msg = (f'could not reach the Hugging Face Hub at {constants.ENDPOINT} ({type(e).__name__}: '
               f'{str(e).splitlines()[0] if str(e) else "no detail"}). Check the network (and HF_ENDPOINT), then '
               f'retry; --dry-run lists the files without the network.')
    return msg.replace(token, '***') if token else msg


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


def build_hf_cache(folder: os.PathLike, repo_id: str, cache_dir: Optional[os.PathLike] = None,
                   revision: str = 'main') -> Path:
    """Install a release folder into a Hugging Face cache as ``hf_hub_download`` lays one out.

    ``<cache>/models--{org}--{name}/blobs/<id>`` holds each file once (id = sha256 for LFS-stored types such as
    safetensors, the git blob sha1 otherwise, as the Hub's etags), ``snapshots/<commit>/<path>`` link to the blobs
    (relative symlinks, copies where symlinks are unsupported) and ``refs/<revision>`` holds the commit hash. With
    ``HF_HUB_OFFLINE=1``, ``timm.create_model(name, pretrained=True)`` and ``hf-hub:`` then load from it.

    Args:
        folder: Release folder.
        repo_id: ``org/name`` the files belong to (for the registered name path: the model's ``hf_hub_id``).
        cache_dir: Cache root; default ``HF_HUB_CACHE``.
        revision: Branch name recorded under ``refs``.

    Returns:
        The snapshot folder.
    """
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    folder = Path(folder)
    files = release_files(folder)
    if not files:
        raise HubError(f'{str(folder)!r} holds no files to cache.')
    storage = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type='model')
    ids = {}
    for f in files:
        data = (folder / f).read_bytes()
        ids[f] = hashlib.sha256(data).hexdigest() if f.lower().endswith(LFS_SUFFIXES) else _git_blob_sha1(data)
    commit = hashlib.sha1(''.join(f'{f}\0{ids[f]}\n' for f in files).encode()).hexdigest()
    (storage / 'blobs').mkdir(parents=True, exist_ok=True)
    snapshot = storage / 'snapshots' / commit
    for f in files:
        blob = storage / 'blobs' / ids[f]
        if not blob.exists():
            tmp = blob.with_name(blob.name + '.incomplete')
            shutil.copyfile(folder / f, tmp)
            os.replace(tmp, blob)
        link = snapshot / f
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        try:
            os.symlink(os.path.relpath(blob, link.parent), link)
        except OSError:
            shutil.copyfile(blob, link)
    (storage / 'refs').mkdir(exist_ok=True)
    _atomic_write(storage / 'refs' / revision, commit.encode())
    return snapshot


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='python -m timm_mmc.hub', description=__doc__.split('\n\n')[0])
    sub = p.add_subparsers(dest='cmd', required=True)
    e = sub.add_parser('export', help='build a release folder from a training run and its evaluation JSON')
    e.add_argument('--run', required=True, help='training run folder (model.safetensors + config.json, ...)')
    e.add_argument('--eval', required=True, help='evaluation JSON written by python -m eval.robustness')
    e.add_argument('--out', required=True, help='release folder to create, e.g. hub_cards/resnet32_mmc.cifar10')
    e.add_argument('--tag', default=None, help='pretrained tag (cifar10 / cifar100); default: the run\'s data set')
    e.add_argument('--checkpoint', default=None, help='weights to export instead of RUN/model.safetensors')
    e.add_argument('--repo-id', default=None, help='Hub repo the card names (default: the registered hf_hub_id)')
    e.add_argument('--overwrite', action='store_true', help='replace an existing --out folder')
    e.add_argument('--no-plot', action='store_true', help='skip results/robust_accuracy.png')
    u = sub.add_parser('push', help='upload a release folder to the Hub')
    u.add_argument('folder')
    u.add_argument('--repo-id', required=True, help='ORG/NAME; the card must name the same repo')
    u.add_argument('--dry-run', action='store_true', help='list what would be uploaded; no network')
    u.add_argument('--private', action='store_true')
    u.add_argument('--revision', default=None, help='branch to push to')
    u.add_argument('--message', default=None, help='commit message')
    c = sub.add_parser('card', help='re-render README.md (and the plot) of a release folder from its files')
    c.add_argument('folder')
    c.add_argument('--repo-id', default=None, help='Hub repo the card names (default: keep the current one)')
    t = sub.add_parser('table', help="print the README's results table (Markdown) from release folders")
    t.add_argument('folders', nargs='+')
    k = sub.add_parser('cache', help='install a release folder into the local HF cache (offline use)')
    k.add_argument('folder')
    k.add_argument('--repo-id', default=None, help='default: the repo the card names')
    k.add_argument('--cache-dir', default=None, help='default: HF_HUB_CACHE')
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 bad input or Hub error)."""
    args = _parser().parse_args(argv)
    from .io import ModelLoadError
    try:
        if args.cmd == 'export':
            export(args.run, args.eval, args.out, tag=args.tag, checkpoint=args.checkpoint, repo_id=args.repo_id,
                   overwrite=args.overwrite, plot=not args.no_plot)
        elif args.cmd == 'push':
            push(args.folder, args.repo_id, dry_run=args.dry_run, private=args.private, revision=args.revision,
                 commit_message=args.message)
        elif args.cmd == 'card':
            folder = Path(args.folder)
            if not (folder / CONFIG_FILE).is_file():
                raise HubError(f'{str(folder)!r} is not a release folder (no config.json); run export first.')
            write_plot(folder)
            path = write_card(folder, repo_id=args.repo_id)
            print(f'wrote {path}')
        elif args.cmd == 'table':
            print(results_table(args.folders))
        elif args.cmd == 'cache':
            _check_release(Path(args.folder), None)
            repo_id = args.repo_id or _card_repo(Path(args.folder))
            snap = build_hf_cache(args.folder, repo_id, args.cache_dir)
            print(f'cached {repo_id} at {snap}')
    except (HubError, ModelLoadError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
