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
come from ``hub_cards/paper_results.yaml`` with their citation.
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
    'HubError', 'AttackResult', 'EvalSummary', 'parse_eval', 'eval_json_to_results', 'read_run', 'export',
    'render_card', 'write_card', 'write_plot', 'push', 'release_files', 'build_hf_cache', 'main',
]

HUB_CARDS_DIR = Path(__file__).resolve().parents[1] / 'hub_cards'
TEMPLATE_PATH = HUB_CARDS_DIR / 'template.md'
PAPER_RESULTS_PATH = HUB_CARDS_DIR / 'paper_results.yaml'

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
class AttackResult:
    """One attack's outcome as the evaluation JSON states it (``accuracy`` in the JSON's own unit)."""
    name: str
    family: str  # 'pgd', 'fgsm', 'autoattack', 'cw', ... (lower-case, from the name)
    config: Dict[str, Any]
    accuracy: float
    eps: Optional[float] = None  # in [0, 1] pixel units
    steps: Optional[int] = None
    targeted: Optional[bool] = None
    norm: Optional[str] = None
    loss: Optional[str] = None
    version: Optional[str] = None


@dataclass
class EvalSummary:
    """What the card needs from an evaluation JSON."""
    raw: Dict[str, Any]
    model: Optional[str]
    dataset: Optional[str]
    split: str
    n: Optional[int]
    unit: str  # 'fraction' (0-1) or 'percent' (0-100): the JSON's own unit, kept as is in the model-index
    clean: float
    attacks: List[AttackResult] = field(default_factory=list)
    worst_case: Optional[float] = None

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


def _family(name: str) -> str:
    low = name.lower().replace('-', '').replace('_', '').replace(' ', '')
    if 'autoattack' in low or low in ('aa', 'apgdce', 'apgdt', 'fab', 'square', 'apgddlr') or low.startswith('apgd'):
        return 'autoattack' if ('autoattack' in low or low == 'aa') else low
    for fam in ('pgd', 'fgsm', 'cw', 'spsa', 'noise', 'rotation'):
        if fam in low:
            return fam
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


def parse_eval(data: Dict[str, Any]) -> EvalSummary:
    """Read an evaluation JSON (``python -m eval.robustness``) into an :class:`EvalSummary`.

    Accepted layout (the writer is the ``eval`` package; this is the only reader)::

        {"model": str, "dataset": "cifar10", "split": "test", "n": int,
         "clean_accuracy": float,                      # 0-1 or 0-100 ("accuracy_unit": "fraction" | "percent")
         "attacks": [{"name": "pgd", "config": {"eps": 0.0313, "steps": 10, "targeted": false, "loss": "ce",
                      "norm": "Linf", "version": "standard"}, "accuracy": float}, ...],
         "worst_case_accuracy": float}

    ``attacks`` may also be a dict keyed by attack name; attack fields found beside ``config`` count as config.
    Attacks with a null accuracy (not run) are skipped.

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
                       'python -m eval.robustness.')
    clean = _number(clean_raw, 'clean_accuracy')
    raw_attacks = data.get('attacks') or []
    if isinstance(raw_attacks, dict):
        raw_attacks = [dict(v, name=v.get('name', k)) if isinstance(v, dict) else {'name': k, 'accuracy': v}
                       for k, v in raw_attacks.items()]
    if not isinstance(raw_attacks, list):
        raise HubError('evaluation JSON: "attacks" must be a list of {name, config, accuracy} objects.')
    attacks: List[AttackResult] = []
    for i, a in enumerate(raw_attacks):
        if not isinstance(a, dict):
            raise HubError(f'evaluation JSON: attacks[{i}] must be an object with name, config and accuracy.')
        name = str(_first(a, 'name', 'attack') or f'attack{i}')
        acc = _first(a, 'accuracy', 'robust_accuracy', 'acc')
        if acc is None:
            continue
        acc = _number(acc, f'attacks[{i}] ({name}) accuracy')
        cfg = dict(a.get('config') or {})
        for k in ('eps', 'steps', 'targeted', 'loss', 'norm', 'version', 'restarts', 'step_size'):
            if k in a and k not in cfg:
                cfg[k] = a[k]
        steps = cfg.get('steps')
        family = _family(name)
        version = cfg.get('version')
        if family == 'autoattack' and version is None:
            version = _first(data.get('versions') or {}, 'autoattack', 'pyautoattack')
        attacks.append(AttackResult(
            name=name, family=family, config=cfg, accuracy=acc, eps=_eps_unit(cfg.get('eps')),
            steps=steps if isinstance(steps, int) and not isinstance(steps, bool) else None,
            targeted=cfg.get('targeted') if isinstance(cfg.get('targeted'), bool) else None,
            norm=cfg.get('norm'), loss=cfg.get('loss'), version=None if version is None else str(version)))
    worst = data.get('worst_case_accuracy')
    worst = None if worst is None else _number(worst, 'worst_case_accuracy')
    values = [clean] + [a.accuracy for a in attacks] + ([worst] if worst is not None else [])
    unit = data.get('accuracy_unit') or data.get('unit')
    if unit not in ('fraction', 'percent'):
        unit = 'percent' if max(values) > 1.0 else 'fraction'
    top = 1.0 if unit == 'fraction' else 100.0
    bad = [v for v in values if v < 0 or v > top]
    if bad:
        raise HubError(f'evaluation JSON: accuracies must lie in [0, {top:g}] ({unit}); got {bad[0]!r}.')
    n = data.get('n', data.get('num_examples'))
    return EvalSummary(raw=data, model=data.get('model'), dataset=_norm_dataset(data.get('dataset')),
                       split=str(data.get('split') or 'test'), n=n if isinstance(n, int) else None, unit=unit,
                       clean=clean, attacks=attacks, worst_case=worst)


def _attack_label(a: AttackResult) -> str:
    parts = [a.name]
    if a.steps is not None and a.family not in ('autoattack', 'fgsm'):
        parts.append(f'{a.steps} steps')
    if a.targeted is not None:
        parts.append('targeted' if a.targeted else 'untargeted')
    if a.eps is not None:
        parts.append(f'{a.norm or "Linf"} eps={fmt_eps(a.eps)}')
    if a.family == 'autoattack' and a.version:
        parts.append(f'version={a.version}')
    return ', '.join(parts)


def eval_json_to_results(data: Dict[str, Any], dataset: Optional[str] = None) -> List[Any]:
    """Map an evaluation JSON to ``huggingface_hub.EvalResult`` entries for the card's model-index.

    Values are the JSON's numbers, unchanged (same unit). One entry for clean accuracy, one per attack (its
    ``metric_config`` names eps and steps, its ``metric_args`` is the attack's full config from the JSON, AutoAttack
    with its version), and one for ``worst_case_accuracy`` when the JSON has it.

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
    for a in ev.attacks:
        cfg_str = a.name + ''.join(
            f', {k}={v}' for k, v in (('eps', fmt_eps(a.eps) if a.eps is not None else None), ('steps', a.steps),
                                       ('targeted', a.targeted), ('version', a.version if a.family == 'autoattack'
                                                                  else None)) if v is not None)
        results.append(EvalResult(metric_type='accuracy', metric_name=f'robust accuracy ({_attack_label(a)})',
                                  metric_value=a.accuracy, metric_config=cfg_str,
                                  metric_args=dict(a.config) or None, **common))
    if ev.worst_case is not None:
        results.append(EvalResult(metric_type='accuracy', metric_name='worst-case robust accuracy (all attacks)',
                                  metric_value=ev.worst_case, metric_config='worst_case', **common))
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


def _check_eval_matches(ev: EvalSummary, arch: str, weights: Path) -> None:
    import timm

    if isinstance(ev.model, str) and ev.model:
        name = ev.model.split(':', 1)[-1].rstrip('/').split('/')[-1].split('.')[0]
        if timm.is_model(name) and name != arch:
            raise HubError(f'the evaluation JSON is for model {ev.model!r}, not {arch!r}; evaluate this run with '
                           f'python -m eval.robustness and pass that JSON.')
    sha = _eval_sha256(ev.raw)
    if sha is not None:
        from .io import file_sha256
        if file_sha256(weights) != sha:
            raise HubError(f'the evaluation JSON was computed on other weights (sha256 {sha[:12]}...) than '
                           f'{str(weights)!r}; re-evaluate these weights.')


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
    _check_eval_matches(ev, arch, weights)
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
        pgd = dict(pgd, columns=[tuple(c) for c in paper['pgd_columns']])
    return pgd, aa, paper.get('sources', {}), caveat


def _paper_value(a: AttackResult, pgd: Optional[Dict[str, Any]], aa: Optional[Dict[str, Any]]) -> str:
    if a.eps is None:
        return '-'
    eps255 = a.eps * 255.0
    if a.family == 'pgd' and pgd is not None and a.steps is not None and a.targeted is not None:
        for (steps, targeted, e), value in zip(pgd['columns'], pgd['pgd']):
            if steps == a.steps and targeted == a.targeted and abs(eps255 - e) < 0.05:
                return f'{value} ({pgd["table"]})'
    if a.family == 'autoattack' and aa is not None and abs(eps255 - aa['eps']) < 0.05:
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


def _training_text(folder: Path, dataset: str) -> str:
    tdir = folder / TRAINING_DIR
    lines: List[str] = []
    args = _read_yaml(tdir / 'args.yaml') if (tdir / 'args.yaml').is_file() else {}
    summary = _read_json(tdir / 'summary.json', 'summary') if (tdir / 'summary.json').is_file() else {}
    summary = summary if isinstance(summary, dict) else {}
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

    import timm_mmc

    folder = Path(folder)
    cfg, tag = _folder_tag(folder)
    arch = cfg['architecture']
    if not (folder / EVAL_FILE).is_file():
        raise HubError(f'{str(folder / EVAL_FILE)!r} is missing; export with --eval results/<model>.json.')
    if not TEMPLATE_PATH.is_file():
        raise HubError(f'card template {str(TEMPLATE_PATH)!r} is missing; run from a source checkout of timm-mmc.')
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
    model = timm.create_model(arch, pretrained=False, **{k: v for k, v in model_args.items() if v is not None})
    if extra_args is None:
        extra_args = _nondefault_args(arch, tag, model)
    num_params = sum(p.numel() for p in model.parameters())
    head = model_args.get('head', 'mmc')
    head_key = 'mmc_rand' if head == 'mmc' and model_args.get('center_kind') == 'random' else head
    info = DATASETS.get(dataset, dict(hf_id=dataset, pretty=dataset, config=None))
    caveat = JPEG_CAVEAT if dataset == 'cifar10' else GENERIC_CAVEAT
    pgd_row, aa_row, sources, arch_caveat = _paper_rows(dataset, arch, model_args, train_args)

    # what it does under attack, in one paragraph (numbers from the evaluation JSON only)
    n_text = f'the first {ev.n} images of the {ev.split} split' if ev.n else f'the {ev.split} split'
    summary = (f'`{arch}` trained on {info["pretty"]} with a `{head}` head, released with its robustness '
               f'evaluation. On {n_text} it has **{ev.pct(ev.clean)}% clean accuracy**')
    if ev.attacks:
        worst = min(ev.attacks, key=lambda a: a.accuracy)
        summary += (f'; the strongest attack evaluated ({_attack_label(worst)}) leaves **{ev.pct(worst.accuracy)}%**')
        if ev.worst_case is not None:
            summary += f', and **{ev.pct(ev.worst_case)}%** of images survive every attack (worst case)'
        summary += '.'
    else:
        summary += '. **No attack was evaluated: this card makes no robustness claim.**'
    summary += ' Every accuracy in this card is read from `results/eval.json`; see the data caveat below.'

    # evaluation table
    paper_head = 'Paper (%)'
    rows = ['| Evaluation | Norm | eps | Steps | Targeted | Loss | This model (%) | ' + paper_head + ' |',
            '| --- | --- | --- | --- | --- | --- | --- | --- |']
    paper_clean = '-'
    if pgd_row is not None:
        paper_clean = f'{pgd_row["clean"]} ({pgd_row["table"]})'
    elif aa_row is not None:
        paper_clean = f'{aa_row["clean"]} (AutoAttack study)'
    rows.append(f'| clean | - | - | - | - | - | {ev.pct(ev.clean)} | {paper_clean} |')
    for a in ev.attacks:
        steps = a.steps if a.steps is not None else '-'
        tgt = '-' if a.targeted is None else ('yes' if a.targeted else 'no')
        name = a.name + (f' (version {_md(a.version)})' if a.family == 'autoattack' and a.version else '')
        rows.append(f'| {_md(name)} | {_md(a.norm or "Linf")} | {fmt_eps(a.eps)} | {steps} | {tgt} | '
                    f'{_md(a.loss or "-")} | {ev.pct(a.accuracy)} | {_paper_value(a, pgd_row, aa_row)} |')
    if ev.worst_case is not None:
        rows.append(f'| worst case over all attacks (per image) | - | - | - | - | - | {ev.pct(ev.worst_case)} | - |')
    eval_table = '\n'.join(rows)

    meta = []
    for key in ('seed', 'batch_size', 'device', 'hardware', 'versions', 'elapsed_s', 'wall_time_s', 'date'):
        if ev.raw.get(key) is not None:
            meta.append(f'`{key}`: {_md(ev.raw[key])}')
    eval_intro = (f'Evaluated with `python -m eval.robustness` on {n_text} of {info["pretty"]} '
                  f'({"JPEG q75 re-encoded copy" if dataset == "cifar10" else "see the data caveat"}). Accuracies '
                  f'in %, read from `results/eval.json`'
                  + (f' (evaluation {"; ".join(meta)})' if meta else '') + '.')
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
                     'on the original PNG CIFAR data with the authors\' adaptive white-box attacks, and matched to our '
                     'rows by attack, steps, targeting and eps only; read them as context, not as a reproduction.')
        if arch_caveat:
            notes.append(f'Architecture: {arch_caveat}.')
    else:
        notes.append('"Paper" column: the MMC paper reports no figure for this model configuration, so none is shown.')
    notes.append(f'Data caveat: {caveat}')
    if not any(a.family == 'autoattack' for a in ev.attacks):
        notes.append('No AutoAttack result is in the evaluation JSON; PGD-only numbers can overstate robustness '
                     '(Croce & Hein, ICML 2020, lowered the MMC paper\'s adversarially trained model from 55.0% to '
                     '43.48% at eps 8/255).')
    eval_notes = '\n'.join(f'- {n}' for n in notes)

    # usage
    kw = ''.join(f', {k}={v!r}' for k, v in (extra_args or {}).items())
    lines = []
    if repo_id == default_repo:
        lines.append(f'model = timm.create_model("{arch}.{tag}", pretrained=True{kw}).eval()  # from {repo_id}')
        lines.append(f'# or: timm.create_model("hf-hub:{repo_id}", pretrained=True)')
    else:
        lines.append(f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()')
    local = repo_id.split('/')[-1]
    lines.append(f'# or, from a local copy of this repo: timm.create_model("local-dir:path/to/{local}", pretrained=True)')
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
        limitations='\n'.join(f'- {x}' for x in limitations), bibtex='\n\n'.join(BIBTEX[k] for k in keys),
        timm_mmc_version=timm_mmc.__version__)
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
    """Plot robust accuracy against eps (one line per attack setting, clean accuracy dashed) from the eval JSON.

    Returns:
        The PNG path, or None when the evaluation has no attack with an eps.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder = Path(folder)
    ev = parse_eval(_read_json(folder / EVAL_FILE, 'evaluation JSON'))
    scale = 100.0 if ev.unit == 'fraction' else 1.0
    groups: Dict[str, List[Tuple[float, float]]] = {}
    for a in ev.attacks:
        if a.eps is None:
            continue
        label = a.name + (f'-{a.steps}' if a.steps is not None and a.family not in ('autoattack', 'fgsm') else '')
        label += '' if a.targeted is None else (' targeted' if a.targeted else ' untargeted')
        groups.setdefault(label, []).append((a.eps * 255.0, a.accuracy * scale))
    if not groups:
        return None
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.axhline(ev.clean * scale, color='k', linestyle='--', linewidth=1, label='clean')
    for label, pts in sorted(groups.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', label=label)
    ds = DATASETS.get(ev.dataset or '', {}).get('pretty', ev.dataset or '')
    note = ' (JPEG q75 copy)' if ev.dataset == 'cifar10' else ''
    ax.set_title(f'{ev.model or ""} on {ds}{note}, n={ev.n}', fontsize=9)
    ax.set_xlabel('eps (x/255, Linf unless labelled)')
    ax.set_ylabel('accuracy (%)')
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = folder / PLOT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp.png')
    fig.savefig(tmp, format='png', metadata={'Software': None})
    os.replace(tmp, path)
    return path


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
    if repo_id is not None and card.data.model_name != repo_id:
        raise HubError(f'the card names repo {card.data.model_name!r}, not {repo_id!r}; re-render it for this repo: '
                       f'python -m timm_mmc.hub card {folder} --repo-id {repo_id}')
    return files


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
    c.add_argument('--no-plot', action='store_true')
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
            if not args.no_plot:
                write_plot(folder)
            path = write_card(folder, repo_id=args.repo_id)
            print(f'wrote {path}')
        elif args.cmd == 'cache':
            from huggingface_hub import ModelCard
            repo_id = args.repo_id
            if repo_id is None:
                repo_id = ModelCard.load(Path(args.folder) / CARD_FILE).data.model_name
            snap = build_hf_cache(args.folder, repo_id, args.cache_dir)
            print(f'cached {repo_id} at {snap}')
    except (HubError, ModelLoadError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
