"""What every part of the release tooling shares: the release folder's layout, its error, and reading its files.

A release folder (``hub_cards/<release name>/``: ``resnet32_mmc.cifar10``, or ``resnet18-mmc.cifar10`` for an MM head
on a timm backbone, see :func:`timm_mmc.models.release_name`) is exactly the content of one Hub repo::

    model.safetensors             weights (never a pickle)
    config.json                   timm's config (architecture, num_classes, label_names, model_args, pretrained_cfg)
    README.md                     the model card, its model-index built from results/eval.json
    results/eval.json             the evaluation report of python -m eval.robustness (verbatim)
    results/robust_accuracy.png   robust accuracy against eps (timm_mmc.plot)
    results/robustbench.json      the RobustBench model_info-style summary of results/eval.json
    training/args.yaml            the resolved training configuration (+ summary.json, metrics.jsonl)
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from .. import report as schema
from ..runfolder import METRICS_FILE, SUMMARY_FILE, RunError, RunSummary
from ..status import RunFailure

__all__ = ['HubError', 'HubFailed', 'CARDS_DIR', 'TEMPLATE_PATH', 'PAPER_RESULTS_PATH', 'PROSE_PATH', 'WEIGHTS_FILE',
           'CONFIG_FILE', 'CARD_FILE', 'EVAL_FILE', 'PLOT_FILE', 'ROBUSTBENCH_FILE', 'TRAINING_DIR', 'TRAINING_FILES',
           'PICKLE_SUFFIXES', 'DATASETS', 'read_json', 'read_yaml', 'read_report', 'folder_config', 'training_files',
           'norm_dataset', 'dataset_info', 'head_key', 'prose', 'md', 'default_repo_id', 'wrapped_backbone_text']

CARDS_DIR = Path(__file__).resolve().parents[1] / 'cards'  # package data: works from a wheel, not only a checkout
TEMPLATE_PATH = CARDS_DIR / 'template.md'
PAPER_RESULTS_PATH = CARDS_DIR / 'paper_results.yaml'
PROSE_PATH = CARDS_DIR / 'prose.yaml'

WEIGHTS_FILE = 'model.safetensors'
CONFIG_FILE = 'config.json'
CARD_FILE = 'README.md'
EVAL_FILE = 'results/eval.json'
PLOT_FILE = 'results/robust_accuracy.png'
ROBUSTBENCH_FILE = 'results/robustbench.json'
TRAINING_DIR = 'training'
TRAINING_FILES = ('args.yaml', SUMMARY_FILE, METRICS_FILE)
PICKLE_SUFFIXES = ('.bin', '.pth', '.pt', '.pkl', '.pickle', '.ckpt', '.tar', '.npy', '.joblib')

DATASETS = {
    'cifar10': dict(hf_id='uoft-cs/cifar10', pretty='CIFAR-10', config='plain_text', caveat='jpeg'),
    'cifar100': dict(hf_id='uoft-cs/cifar100', pretty='CIFAR-100', config='cifar100', caveat='generic'),
}


class HubError(Exception):
    """Bad input or an unreachable Hub, before anything is written or uploaded; the message says what to do. The
    command line exits 2 on it."""


class HubFailed(HubError, RunFailure):
    """The work failed half-way (an upload after its repo was created): the command line exits 1 on it."""


def read_json(path: Path, what: str) -> Any:
    """A JSON file, or a :class:`HubError` naming it."""
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except FileNotFoundError:
        raise HubError(f'{what} {str(path)!r} does not exist.') from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HubError(f'{what} {str(path)!r} is not valid JSON ({e}); regenerate it.') from None


def read_yaml(path: Path) -> Dict[str, Any]:
    """A YAML mapping (safe loader), or a :class:`HubError` naming the file."""
    import yaml
    try:
        with open(path, encoding='utf-8') as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise HubError(f'{str(path)!r} is not valid YAML ({e}); fix or remove it.') from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HubError(f'{str(path)!r} must hold a mapping.')
    return data


def read_report(path: os.PathLike) -> schema.EvalReport:
    """An evaluation report through the schema (:mod:`timm_mmc.report`); a bad one is a :class:`HubError`."""
    try:
        return schema.load(path)
    except schema.ReportError as e:
        raise HubError(f'{e} Export needs the file python -m eval.robustness writes.') from None


def folder_config(folder: Path) -> Tuple[Dict[str, Any], str]:
    """A release folder's timm ``config.json`` and its pretrained tag."""
    cfg = read_json(folder / CONFIG_FILE, 'config')
    if not isinstance(cfg, dict) or not cfg.get('architecture'):
        raise HubError(f'{str(folder / CONFIG_FILE)!r} is not a timm config.json; run export first.')
    tag = (cfg.get('pretrained_cfg') or {}).get('tag')
    if not tag:
        raise HubError(f'{str(folder / CONFIG_FILE)!r} has no pretrained_cfg.tag; re-export the release.')
    return cfg, tag


def training_files(folder: Path) -> Tuple[Dict[str, Any], RunSummary]:
    """A release's ``training/args.yaml`` (an empty dict where absent) and ``training/summary.json`` (every field
    None where absent), the latter through its owner, :class:`timm_mmc.runfolder.RunSummary`."""
    tdir = folder / TRAINING_DIR
    args = read_yaml(tdir / 'args.yaml') if (tdir / 'args.yaml').is_file() else {}
    try:
        summary = RunSummary.read(tdir / SUMMARY_FILE) if (tdir / SUMMARY_FILE).is_file() else RunSummary()
    except RunError as e:
        raise HubError(f'{e} Regenerate the release from its run folder.') from e
    return args, summary


def norm_dataset(name: Any) -> Optional[str]:
    """``cifar10`` / ``cifar100`` from a data set spec or tag (``../shared/data/cifar10``, ``uoft-cs/cifar100``)."""
    if not isinstance(name, str) or not name:
        return None
    low = name.lower().replace('-', '').replace('_', '')
    for key in ('cifar100', 'cifar10'):
        if key in low:
            return key
    return low


def dataset_info(dataset: str) -> Dict[str, Any]:
    """Hub id, pretty name, config and the data caveat's text of a data set key."""
    info = dict(DATASETS.get(dataset, dict(hf_id=dataset, pretty=dataset, config=None, caveat='generic')))
    info['caveat_text'] = prose()['caveats'][info['caveat']]
    return info


def head_key(model_args: Dict[str, Any]) -> str:
    """The head variant (a key of :data:`timm_mmc.heads.HEADS`: ``sce``, ``mmc``, ``mmc_rand``, ...) of a model's
    arguments; it keys the card's head description and the paper's rows."""
    from ..heads import head_spec

    try:
        return head_spec(model_args.get('head', 'mmc'), model_args.get('center_kind', 'mm')).suffix
    except ValueError as e:
        raise HubError(f'config.json model_args: {e}') from None


def default_repo_id(arch: str, tag: str, model_args: Dict[str, Any]) -> str:
    """The Hub repo a release is published as: ``timm-mmc/<release name>`` (the ``hf_hub_id`` of a released tag)."""
    from ..models import hub_repo_id, release_name

    try:
        return hub_repo_id(release_name(arch, model_args, tag))
    except ValueError as e:
        raise HubError(f'config.json model_args: {e}') from None


def wrapped_backbone_text(arch: str, model_args: Dict[str, Any]) -> Optional[str]:
    """What a wrapped timm backbone is, in a sentence for cards and RobustBench files; None for other models."""
    from ..models import WRAPPER_ARCH, model_display_name

    if arch != WRAPPER_ARCH:
        return None
    backbone = model_args.get('backbone')
    return (f'the timm backbone `{backbone}` (its classifier removed, its pooled features into the head; '
            f'`{model_display_name(arch, model_args)}` in timm-mmc\'s commands, timm.create_model("{WRAPPER_ARCH}", '
            f'backbone="{backbone}", ...))')


@functools.lru_cache(maxsize=1)
def prose() -> Dict[str, Any]:
    """The card's prose (caveats, head descriptions, papers with their BibTeX, limitations): package data."""
    if not PROSE_PATH.is_file():
        raise HubError(f'card text {str(PROSE_PATH)!r} is missing; reinstall timm-mmc (it is package data).')
    return read_yaml(PROSE_PATH)


def md(value: Any) -> str:
    """A value as one Markdown table cell."""
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text.replace('|', '\\|').replace('\n', ' ')
