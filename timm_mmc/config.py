"""One dataclass for every training option; the CLI flags and YAML configs are generated from it.

``python -m timm_mmc.train -c configs/cpu/resnet32_mmc.yaml --epochs 10``: the YAML sets fields, flags given on the
command line override them, and the resolved config is written to ``args.yaml`` in the run folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

__all__ = ['TrainConfig', 'parse_config', 'ConfigError']


class ConfigError(ValueError):
    """A configuration that cannot run; the message says how to fix it."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=dict(help=help, **kw))
    return field(default=default, metadata=dict(help=help, **kw))


@dataclass
class TrainConfig:
    # what to train
    model: str = _f('resnet32_mmc', 'registered model name, e.g. resnet32_mmc, resnet32_sce, resnet110_mmlda')
    loss: Optional[str] = _f(None, 'sce | mmlda | mmc | center | lgm; default follows the head')
    center_norm: Optional[float] = _f(None, 'override the MM center norm C (model default 10: "MMC-10")')
    feature_dim: Optional[int] = _f(None, 'override the feature width that meets the centers (default 256)')
    drop_rate: float = _f(0.0, 'dropout before the feature layer')
    label_smoothing: float = _f(0.0, 'label smoothing for sce (calibration SCE run used 0.1)')
    lambda_c: float = _f(0.01, 'center-loss weight (Wen et al. 2016)')
    lgm_alpha: float = _f(0.1, 'L-GM margin alpha (Wan et al. 2018)')
    lgm_lambda: float = _f(0.01, 'L-GM likelihood weight')
    # data
    dataset: str = _f('uoft-cs/cifar10', 'Hub id or local folder in the Hub layout')
    image_column: Optional[str] = _f(None, 'image column; detected when unset')
    label_column: Optional[str] = _f(None, 'label column; detected when unset (label, fine_label, ClassLabel)')
    train_split: str = _f('train', 'split to train on')
    test_split: str = _f('test', 'split to report test accuracy on')
    train_limit: Optional[int] = _f(None, 'use only the first N training images (smoke tests)')
    test_limit: Optional[int] = _f(None, 'use only the first N test images')
    cache_dir: Optional[str] = _f(None, 'where decoded uint8 arrays are cached (default ~/.cache/timm_mmc)')
    cutout: int = _f(0, 'side in pixels of a zeroed square at a random place in each training image (DeVries & '
                       'Taylor 2017); 0 = off')
    # optimisation
    epochs: int = _f(30, 'training epochs (paper: 200)')
    batch_size: int = _f(128, 'global batch size, split over processes (paper: 50)')
    lr: float = _f(0.02, 'peak learning rate (paper: 0.01 with a step schedule)')
    momentum: float = _f(0.9, 'SGD momentum')
    nesterov: bool = _f(True, 'Nesterov momentum')
    weight_decay: float = _f(5e-4, 'weight decay on conv / linear weights only (not BN, biases, centers)')
    schedule: str = _f('onecycle', 'onecycle (linear up then down) | step | cosine')
    warmup_frac: float = _f(0.25, 'one-cycle: fraction of steps spent warming up')
    milestones: List[int] = _f([100, 150], 'step schedule: epochs where lr is multiplied by gamma')
    gamma: float = _f(0.1, 'step schedule factor')
    grad_clip: Optional[float] = _f(None, 'clip the gradient norm to this value')
    ema_decay: float = _f(0.0, 'per-step decay of an exponential moving average of the weights and batch-norm '
                          'statistics (timm ModelEmaV3), evaluated every epoch and exported when better; 0 = off')
    # adversarial training
    adv: str = _f('none', 'none | pgd | fgsm (FGSM with random start, Wong et al. 2020)')
    eps: float = _f(8 / 255, 'Linf radius in pixel units (8/255 = 0.0314)')
    adv_step: float = _f(2 / 255, 'PGD step size')
    adv_steps: int = _f(10, 'PGD steps')
    adv_targeted: Optional[bool] = _f(None, 'targeted inner attack; default: targeted for MM heads, not for SCE')
    adv_ratio: float = _f(1.0, 'share of each batch replaced by adversarial examples (paper: 1.0)')
    # evaluation during training
    robust_every: int = _f(5, 'measure PGD-10 (adaptive objective) robust accuracy every K epochs; 0 = never')
    robust_n: int = _f(500, 'test images used for that robust accuracy')
    # speed and reproducibility
    precision: str = _f('bf16', 'bf16 (autocast) | fp32')
    channels_last: bool = _f(True, 'channels_last memory format')
    compile: bool = _f(False, 'torch.compile the training step (inductor; a one-off compile of about a minute)')
    seed: int = _f(0, 'seed of init, data order, augmentation and attacks')
    threads: Optional[int] = _f(None, 'torch CPU threads per process (default: cores / processes)')
    # run folder
    output: str = _f('runs/default', 'run folder: checkpoints, model.safetensors, config.json, metrics')
    resume: bool = _f(False, 'continue from the last complete checkpoint in --output')
    overwrite: bool = _f(False, 'replace a finished or different run in --output')
    checkpoint_every: int = _f(0, 'also checkpoint every N optimizer steps (0: at epoch ends only)')
    keep_checkpoints: int = _f(2, 'complete checkpoints kept')
    init_from: Optional[str] = _f(None, 'start from these weights (safetensors or weights-only .pth)')
    progress: bool = _f(True, 'progress bar on the main process')

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot run."""
        if self.epochs < 1:
            raise ConfigError(f'--epochs must be >= 1 (got {self.epochs}).')
        if self.batch_size < 1:
            raise ConfigError(f'--batch-size must be >= 1 (got {self.batch_size}).')
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f'--lr must be a finite number > 0 (got {self.lr}).')
        if self.schedule not in ('onecycle', 'step', 'cosine'):
            raise ConfigError(f'--schedule must be onecycle, step or cosine (got {self.schedule!r}).')
        if self.adv not in ('none', 'pgd', 'fgsm'):
            raise ConfigError(f'--adv must be none, pgd or fgsm (got {self.adv!r}).')
        if not (math.isfinite(self.eps) and 0 < self.eps <= 1):
            raise ConfigError(f'--eps must lie in (0, 1] in pixel units (got {self.eps}); 8/255 is 0.0314.')
        if self.adv_steps < 1:
            raise ConfigError(f'--adv-steps must be >= 1 (got {self.adv_steps}).')
        if not self.adv_step > 0:
            raise ConfigError(f'--adv-step must be > 0 (got {self.adv_step}).')
        if not 0 < self.adv_ratio <= 1:
            raise ConfigError(f'--adv-ratio must lie in (0, 1] (got {self.adv_ratio}).')
        if self.precision not in ('bf16', 'fp32'):
            raise ConfigError(f'--precision must be bf16 or fp32 (got {self.precision!r}).')
        if self.cutout < 0:
            raise ConfigError(f'--cutout must be >= 0 pixels (got {self.cutout}).')
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f'--ema-decay must lie in [0, 1) (got {self.ema_decay}); 0.999 is typical, 0 turns it off.')
        if self.robust_every < 0 or self.robust_n < 1:
            raise ConfigError('--robust-every must be >= 0 and --robust-n >= 1.')
        if self.checkpoint_every < 0 or self.keep_checkpoints < 1:
            raise ConfigError('--checkpoint-every must be >= 0 and --keep-checkpoints >= 1.')
        for name in ('train_limit', 'test_limit', 'threads'):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f'--{name.replace("_", "-")} must be >= 1 (got {v}).')

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _base_type(tp: Any) -> Any:
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='timm_mmc.train', description='Standard and adversarial Max-Mahalanobis training.',
        argument_default=argparse.SUPPRESS)
    p.add_argument('-c', '--config', help='YAML file of TrainConfig fields; flags override it')
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = '--' + f.name.replace('_', '-')
        tp = _base_type(hints[f.name])
        help_ = f.metadata.get('help', '')
        if tp is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_)
        elif typing.get_origin(tp) in (list, List):
            p.add_argument(flag, type=typing.get_args(tp)[0], nargs='+', help=help_)
        else:
            p.add_argument(flag, type=tp, help=help_)
    return p


def parse_config(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """Defaults < YAML (``-c``) < command-line flags. Exits with status 2 on unknown or invalid values."""
    parser = _parser()
    ns = vars(parser.parse_args(argv))
    values: Dict[str, Any] = {}
    cfg_path = ns.pop('config', None)
    if cfg_path:
        path = Path(cfg_path)
        if not path.is_file():
            parser.error(f'config file {cfg_path!r} does not exist.')
        with open(path) as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            parser.error(f'config file {cfg_path!r} must hold a mapping of option: value.')
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        loaded = {k.replace('-', '_'): v for k, v in loaded.items()}
        unknown = sorted(set(loaded) - names)
        if unknown:
            parser.error(f'unknown options in {cfg_path}: {unknown}; see --help for the valid ones.')
        values.update(loaded)
    values.update(ns)
    try:
        cfg = TrainConfig(**values)
        cfg.validate()
    except (ConfigError, TypeError) as e:
        parser.error(str(e))
    return cfg
