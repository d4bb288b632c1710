"""One dataclass for every training option; the CLI flags and YAML configs are generated from it.

``python -m timm_mmc.train -c resnet32_mmc --epochs 10``: the YAML sets fields, flags given on the
command line override them, and the resolved config is written to ``args.yaml`` in the run folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import yaml

__all__ = ['TrainConfig', 'parse_config', 'ConfigError', 'recipe_names', 'resolve_recipe', 'RECIPES_DIR',
           'RESUME_MUTABLE', 'DEFERS_TO_RUN', 'merge_resumed', 'parse_pixels']


class ConfigError(ValueError):
    """A configuration that cannot run; the message says how to fix it."""


SELECT_ON = ('robust', 'clean')  # what --select-best ranks the held-out epochs by (--select-on)
# options a resumed run may change: they do not change the weights it computes, only how it is run and what it
# measures and records (a --select-on robust run still needs --robust-every 1: TrainConfig.validate refuses less;
# tests/test_adversarial.py::test_what_a_run_measures_never_changes_its_weights holds the weights to it)
RESUME_MUTABLE = frozenset({'progress', 'threads', 'checkpoint_every', 'keep_checkpoints', 'cache_dir', 'resume',
                            'overwrite', 'output', 'test_every', 'robust_every'})
# Option values that leave the choice to the run (a loss from the head, a precision from the machine): on a resume
# the run's recorded choice stands, so a recipe saying "auto" resumes a run that recorded bf16.
DEFERS_TO_RUN = dict(loss=None, adv_targeted=None, precision='auto')


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=dict(help=help, **kw))
    return field(default=default, metadata=dict(help=help, **kw))


@dataclass
class TrainConfig:
    # what to train
    model: str = _f('resnet32_mmc', 'registered model name (resnet32_mmc, resnet32_sce, resnet110_mmlda, ...) or any '
                                    'timm backbone with a head, BACKBONE+HEAD (resnet18+mmc)')
    pretrained_backbone: Optional[str] = _f(None, 'for an MM head on a timm backbone (--model BACKBONE+HEAD, e.g. '
                                            'resnet18+mmc): start the backbone from "timm" (its timm weights; the HF '
                                            'cache when offline) or a safetensors file of them; default: from scratch')
    loss: Optional[str] = _f(None, 'training loss; default follows the head (timm_mmc.heads.HEADS)',
                             choices=('sce', 'mmlda', 'mmc', 'center', 'lgm'))
    center_norm: Optional[float] = _f(None, 'override the MM center norm C (model default 10: "MMC-10")')
    feature_dim: Optional[int] = _f(None, 'override the feature width that meets the centers (default 256)')
    drop_rate: float = _f(0.0, 'dropout before the feature layer')
    zero_init_last: Optional[bool] = _f(None, 'start every residual block as its shortcut (Goyal et al. 2017: the '
                                              'last batch-norm scale of a basic block, the last conv of a bottleneck, '
                                              'zero) in models that take it; unset, each model keeps its own default '
                                              '(off for the CIFAR ResNets, on for timm ResNet backbones)')
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
    mixup: float = _f(0.0, 'mixup (Zhang et al. 2018): blend image pairs with a Beta(a, a) weight drawn per batch and '
                           'weigh the two labels\' losses by it (for MMC: a pull toward the weighted mean of the two '
                           'centers); train_acc then counts each label by its weight; a = this value, 0 = off')
    mixup_off_last: int = _f(0, 'train the last N epochs without mixup, on whole images (GluonCV\'s CIFAR-10 mixup '
                                'recipe turns it off for its last 20 of 220 epochs)')
    # optimisation
    epochs: int = _f(30, 'training epochs (paper: 200)')
    batch_size: int = _f(128, 'global batch size, split over processes (paper: 50)')
    lr: float = _f(0.02, 'peak learning rate (paper: 0.01 with a step schedule)')
    momentum: float = _f(0.9, 'SGD momentum')
    nesterov: bool = _f(True, 'Nesterov momentum')
    weight_decay: float = _f(5e-4, 'weight decay on conv / linear weights only (not BN, biases, centers)')
    schedule: str = _f('onecycle', 'lr schedule: onecycle (linear up, linear down to 0), cosine (linear up, half a '
                                   'cosine down to 0) or step', choices=('onecycle', 'step', 'cosine'))
    warmup_frac: float = _f(0.25, 'onecycle and cosine: fraction of the steps spent warming up linearly (0: none)')
    milestones: List[int] = _f([100, 150], 'step schedule: epochs where lr is multiplied by gamma')
    gamma: float = _f(0.1, 'step schedule factor')
    grad_clip: Optional[float] = _f(None, 'clip the gradient norm to this value (metrics.jsonl records the norms '
                                          'before clipping: grad_norm, grad_norm_max)')
    ema_decay: float = _f(0.0, 'per-step decay of an exponential moving average of the weights and batch-norm '
                          'statistics (timm ModelEmaV3), evaluated every epoch; 0 = off')
    export_weights: str = _f('auto', 'which weights a run without --select-best exports: auto (the weight average '
                                     'where its clean accuracy at the last epoch beats the last weights\', measured on '
                                     'the --holdout images, else on the test split), ema (the weight average, fixed '
                                     'before training, so no split of this run chooses) or last; --select-best '
                                     'chooses instead',
                             choices=('auto', 'ema', 'last'))
    # adversarial training
    adv: str = _f('none', 'adversarial training: none; pgd; fgsm (FGSM with random start, Wong et al. 2020); nfgsm '
                          '(N-FGSM, de Jorge et al. 2022: noise of adv_noise eps, one step of eps, no projection)',
                  choices=('none', 'pgd', 'fgsm', 'nfgsm'))
    eps: float = _f(8 / 255, 'Linf radius in pixel units (8/255 or 0.0314)', pixels=True)
    adv_noise: float = _f(2.0, 'N-FGSM: half-width of the uniform start in units of eps (de Jorge et al. use 2)')
    adv_step: float = _f(2 / 255, 'PGD step size in pixel units (2/255)', pixels=True)
    adv_steps: int = _f(10, 'PGD steps')
    adv_targeted: Optional[bool] = _f(None, 'targeted inner attack; default: targeted for MM heads, not for SCE')
    adv_ratio: float = _f(1.0, 'share of each batch replaced by adversarial examples (paper: 1.0)')
    # evaluation during training
    test_every: int = _f(1, 'measure clean test accuracy (last weights and weight average) every K epochs and at the '
                            'last; each costs two passes over the test split (about 11 s of a 100 s epoch on 2 cores)')
    robust_every: int = _f(5, 'measure PGD-10 (adaptive objective) robust accuracy every K epochs; 0 = never')
    robust_n: int = _f(500, 'test images used for that robust accuracy when nothing is held out')
    holdout: int = _f(0, 'set aside N training images (a seeded draw, never trained on); robust accuracy is then '
                         'measured on them instead of the test split, so that choosing an epoch never sees test data')
    select_best: bool = _f(False, 'export the weights (last or weight average) of the epoch with the best held-out '
                                  'accuracy (--select-on), not the final ones: early stopping against (robust) '
                                  'overfitting; needs --holdout, and --robust-every 1 when it ranks robust accuracy')
    select_on: str = _f('robust', 'what --select-best ranks epochs by on the held-out images: robust (PGD-10, for '
                                  'adversarial training) or clean (standard training, whose weight average peaks '
                                  'before the last epoch); with --holdout, clean accuracy there is measured every '
                                  'epoch', choices=SELECT_ON)
    select_tolerance: float = _f(0.0, 'with --select-best: take the latest epoch whose held-out accuracy (the one '
                                      '--select-on names) is within this much (a fraction) of the best, not the best '
                                      'alone; the standard error of 1000 held-out images at 40% is about 0.015. 0: '
                                      'the best')
    # speed and reproducibility
    precision: str = _f('auto', 'auto (bf16 where the CPU or GPU has it natively, else fp32: emulated bf16 was 13x '
                                'slower on an AVX2 CPU), bf16 (autocast) or fp32; args.yaml records the one chosen; '
                                'the only precision setting (accelerate\'s own is not used)',
                        choices=('auto', 'bf16', 'fp32'))
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
    init_from: Optional[str] = _f(None, 'start from these weights: a safetensors or weights-only .pth file, a release '
                                     'or run folder, hf-hub:ORG/REPO, or a released name (resnet32_mmc.cifar10)')
    progress: bool = _f(True, 'progress bar on the main process')

    def validate(self, refuse_ignored: bool = True) -> None:
        """Raise :class:`ConfigError` for values of the wrong type or that cannot run.

        Args:
            refuse_ignored: Also refuse options set away from their default that this run would ignore. A resume
                passes False: its run started with them (older code allowed them) and has already run without them.
        """
        check_types(self)
        for f in dataclasses.fields(self):
            choices = f.metadata.get('choices')
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise ConfigError(f'{_flag(f.name)} must be one of {", ".join(choices)} (got {value!r}).')
        if self.epochs < 1:
            raise ConfigError(f'--epochs must be >= 1 (got {self.epochs}).')
        if self.batch_size < 1:
            raise ConfigError(f'--batch-size must be >= 1 (got {self.batch_size}).')
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f'--lr must be a finite number > 0 (got {self.lr}).')
        if not (math.isfinite(self.eps) and 0 < self.eps <= 1):
            raise ConfigError(f'--eps must lie in (0, 1] in pixel units (got {self.eps}); 8/255 is 0.0314.')
        if self.adv_steps < 1:
            raise ConfigError(f'--adv-steps must be >= 1 (got {self.adv_steps}).')
        if not self.adv_step > 0:
            raise ConfigError(f'--adv-step must be > 0 (got {self.adv_step}).')
        if not 0 < self.adv_ratio <= 1:
            raise ConfigError(f'--adv-ratio must lie in (0, 1] (got {self.adv_ratio}).')
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ConfigError(f'--grad-clip must be a finite number > 0 (got {self.grad_clip}); leave it out for no '
                              f'clipping.')
        if not (math.isfinite(self.mixup) and self.mixup >= 0):
            raise ConfigError(f'--mixup is the Beta distribution\'s a, >= 0 (got {self.mixup}); 0 = off, 0.2 to 1 '
                              f'typical.')
        if not 0 <= self.mixup_off_last <= self.epochs:
            raise ConfigError(f'--mixup-off-last must lie in [0, --epochs] (got {self.mixup_off_last}).')
        if self.zero_init_last is not None and (self.init_from or self.pretrained_backbone):
            raise ConfigError('--zero-init-last / --no-zero-init-last choose initial weights, which --init-from and '
                              '--pretrained-backbone replace: drop one of them.')
        if self.mixup > 0 and self.adv != 'none':
            raise ConfigError('--mixup with --adv is not defined here (which image would the attack perturb?): drop '
                              'one of them.')
        if self.cutout < 0:
            raise ConfigError(f'--cutout must be >= 0 pixels (got {self.cutout}).')
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f'--ema-decay must lie in [0, 1) (got {self.ema_decay}); 0.999 is typical, '
                              f'0 turns it off.')
        # (a resume's command alone lacks the run's --ema-decay: checked where its options are whole)
        if refuse_ignored and self.export_weights == 'ema' and not self.ema_decay > 0 and not self.select_best:
            raise ConfigError('--export-weights ema (the standard CPU recipes set it) exports the weight average, '
                              'which --ema-decay 0 turns off: add --export-weights last, or keep --ema-decay (0.999 '
                              'is typical).')
        if self.test_every < 1:
            raise ConfigError(f'--test-every must be >= 1 epochs (got {self.test_every}); the last epoch is always '
                              f'measured, so a large value measures only the end.')
        if self.robust_every < 0 or self.robust_n < 1:
            raise ConfigError('--robust-every must be >= 0 and --robust-n >= 1.')
        if not (math.isfinite(self.adv_noise) and self.adv_noise >= 0):
            raise ConfigError(f'--adv-noise must be >= 0 in units of eps (got {self.adv_noise}); N-FGSM uses 2.')
        if self.holdout < 0:
            raise ConfigError(f'--holdout must be >= 0 training images (got {self.holdout}).')
        if self.select_best and not self.holdout > 0:
            raise ConfigError('--select-best picks an epoch by its accuracy on held-out training images, so it needs '
                              '--holdout N (e.g. 1000).')
        if self.select_best and self.select_on == 'robust' and self.robust_every != 1:
            raise ConfigError('--select-best --select-on robust ranks every epoch by its held-out robust accuracy, so '
                              'it needs --robust-every 1 (or --select-on clean for standard training).')
        if not (math.isfinite(self.select_tolerance) and 0 <= self.select_tolerance < 1):
            raise ConfigError(f'--select-tolerance is a fraction of accuracy in [0, 1) (got '
                              f'{self.select_tolerance}); 0.015 is about the error of 1000 held-out images.')
        if self.checkpoint_every < 0 or self.keep_checkpoints < 1:
            raise ConfigError('--checkpoint-every must be >= 0 and --keep-checkpoints >= 1.')
        for name in ('train_limit', 'test_limit', 'threads'):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f'--{name.replace("_", "-")} must be >= 1 (got {v}).')
        for name, (ok, where) in _RANGES.items():  # caught here, not as a traceback at the first step
            v = getattr(self, name)
            if not (math.isfinite(v) and ok(v)):
                raise ConfigError(f'{_flag(name)} must be {where} (got {v}).')
        for name, (needed, on) in _ACTS_ONLY_WITH.items() if refuse_ignored else ():  # set, never used
            if getattr(self, name) != _default(name) and not on(self):
                raise ConfigError(f'{_flag(name)} acts only with {needed}, which this run does not have, so it would '
                                  f'change nothing: add {needed} or drop {_flag(name)}.')

    def check_loss_options(self, loss: str) -> None:
        """Raise :class:`ConfigError` for a loss option set away from its default that ``loss`` would ignore."""
        for name, users in _LOSS_OPTIONS.items():
            if getattr(self, name) != _default(name) and loss not in users:
                raise ConfigError(f'{_flag(name)} is for the {" / ".join(users)} loss only; the {loss} loss would '
                                  f'ignore it: drop it.')

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# Float options checked by range alone: (test, the range in words).
_RANGES = dict(
    drop_rate=(lambda v: 0 <= v < 1, 'in [0, 1)'), label_smoothing=(lambda v: 0 <= v < 1, 'in [0, 1)'),
    momentum=(lambda v: 0 <= v < 1, 'in [0, 1)'), warmup_frac=(lambda v: 0 <= v < 1, 'in [0, 1)'),
    gamma=(lambda v: 0 < v <= 1, 'in (0, 1]'), weight_decay=(lambda v: v >= 0, '>= 0'),
    lambda_c=(lambda v: v >= 0, '>= 0'), lgm_alpha=(lambda v: v >= 0, '>= 0'), lgm_lambda=(lambda v: v >= 0, '>= 0'))

# Loss options and the losses that read them (timm_mmc.losses).
_LOSS_OPTIONS = dict(label_smoothing=('sce',), lambda_c=('center',), lgm_alpha=('lgm',), lgm_lambda=('lgm',))

# Options that act only under another (the other option in words, and whether this run has it): set away from their
# default without it, they are refused rather than silently ignored.
_ACTS_ONLY_WITH = dict(
    mixup_off_last=('--mixup A (A > 0)', lambda c: c.mixup > 0),
    select_on=('--select-best', lambda c: c.select_best), select_tolerance=('--select-best', lambda c: c.select_best),
    milestones=('--schedule step', lambda c: c.schedule == 'step'),
    gamma=('--schedule step', lambda c: c.schedule == 'step'),
    adv_noise=('--adv nfgsm', lambda c: c.adv == 'nfgsm'))


def _default(name: str) -> Any:
    """A :class:`TrainConfig` option's default."""
    f = next(f for f in dataclasses.fields(TrainConfig) if f.name == name)
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _flag(name: str) -> str:
    return '--' + name.replace('_', '-')


def parse_pixels(text: str) -> float:
    """A value in pixel units, as a number (``0.0314``) or a fraction (``8/255``): how train and eval read eps.

    Raises:
        ValueError: Not a number; the message names both forms.
    """
    text = str(text).strip()
    try:
        if '/' in text:
            num, den = text.split('/', 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f'{text!r} is not a number; write it in pixel units as 8/255 or 0.0314.') from None


def _pixels(text: str) -> float:
    try:
        return parse_pixels(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _type_name(tp: Any) -> str:
    return {int: 'an integer', float: 'a number', bool: 'true or false', str: 'a string'}.get(tp, str(tp))


def check_types(cfg: 'TrainConfig') -> None:
    """Check every field against its annotation; ints are not floats (``epochs: 1.5``), bools are not ints.

    Raises:
        ConfigError: Naming the option (as its YAML key and flag), the expected type and the value found.
    """
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        tp, value = hints[f.name], getattr(cfg, f.name)
        optional = typing.get_origin(tp) is typing.Union and type(None) in typing.get_args(tp)
        base = _base_type(tp)
        if value is None:
            if optional:
                continue
            ok = False
        elif typing.get_origin(base) in (list, List):
            item = typing.get_args(base)[0]
            ok = isinstance(value, list) and all(_is(v, item) for v in value)
            base = f'a list of {_type_name(item).split(" ", 1)[1]}s'
        else:
            ok = _is(value, base)
        if not ok:
            want = base if isinstance(base, str) else _type_name(base)
            raise ConfigError(f'option {f.name} ({_flag(f.name)}) must be {want}{" or null" if optional else ""}, '
                              f'got {value!r} ({type(value).__name__}).')
        if base is float:
            setattr(cfg, f.name, float(value))


def _is(value: Any, tp: Any) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def _base_type(tp: Any) -> Any:
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


RECIPES_DIR = Path(__file__).parent / 'recipes'  # shipped as package data: cpu/, gpu/, paper/*.yaml
_RECIPE_FOLDERS = ('gpu', 'paper')  # named with their folder (gpu/resnet32_mmc_at); cpu/ is the default


def recipe_names() -> List[str]:
    """Names ``-c`` takes besides a path: ``resnet32_mmc`` (the CPU recipes), ``gpu/...`` and ``paper/...``."""
    names = sorted(p.stem for p in (RECIPES_DIR / 'cpu').glob('*.yaml'))
    for folder in _RECIPE_FOLDERS:
        names += sorted(f'{folder}/{p.stem}' for p in (RECIPES_DIR / folder).glob('*.yaml'))
    return names


def resolve_recipe(spec: str) -> Path:
    """A YAML path, or a recipe name from :func:`recipe_names` (``cpu/`` is the default folder).

    Raises:
        ConfigError: Neither a file nor a known recipe; the message lists the recipes.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    name = spec[:-len('.yaml')] if spec.endswith('.yaml') else spec
    name = name.removeprefix('configs/').removeprefix('cpu/')
    cand = RECIPES_DIR / (name + '.yaml' if name.startswith(tuple(f + '/' for f in _RECIPE_FOLDERS))
                          else f'cpu/{name}.yaml')
    if '..' not in Path(name).parts and cand.is_file():
        return cand
    raise ConfigError(f'config {spec!r} is neither a file nor a recipe name; recipes: {", ".join(recipe_names())}.')


def _help(f: dataclasses.Field) -> str:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    choices = f.metadata.get('choices')
    text = f.metadata.get('help', '')
    if choices:
        text += f' [choices: {", ".join(choices)}]'
    return f'{text} (default: {default})'.replace('%', '%%')


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='timm_mmc.train', description='Standard and adversarial Max-Mahalanobis training.',
        argument_default=argparse.SUPPRESS,
        epilog='recipes for -c: ' + ', '.join(recipe_names()) + f' (in {RECIPES_DIR}).')
    p.add_argument('-c', '--config', help='a recipe name (listed below) or a YAML file of these options; flags '
                                          'given on the command line override it')
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        tp = _base_type(hints[f.name])
        if tp is bool:
            p.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, help=_help(f))
        elif typing.get_origin(tp) in (list, List):
            p.add_argument(_flag(f.name), type=typing.get_args(tp)[0], nargs='+', help=_help(f))
        else:
            p.add_argument(_flag(f.name), type=_pixels if f.metadata.get('pixels') else tp, help=_help(f),
                           choices=f.metadata.get('choices'),
                           metavar=f.name.upper() if f.metadata.get('choices') else None)
    return p


def _read_yaml(spec: str) -> Dict[str, Any]:
    path = resolve_recipe(spec)
    try:
        with open(path) as fh:
            loaded = yaml.safe_load(fh)
    except yaml.YAMLError as e:
        raise ConfigError(f'config {str(path)!r} is not valid YAML: {e}') from e
    except OSError as e:
        raise ConfigError(f'cannot read config {str(path)!r}: {e}') from e
    loaded = {} if loaded is None else loaded
    if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
        raise ConfigError(f'config {str(path)!r} must hold a mapping of option: value (see --help).')
    loaded = {k.replace('-', '_'): v for k, v in loaded.items()}
    unknown = sorted(set(loaded) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise ConfigError(f'unknown options in {str(path)!r}: {unknown}; see --help for the valid ones.')
    for f in dataclasses.fields(TrainConfig):  # "eps: 8/255" reads as the flag --eps 8/255 does
        if f.metadata.get('pixels') and isinstance(loaded.get(f.name), str):
            try:
                loaded[f.name] = parse_pixels(loaded[f.name])
            except ValueError as e:
                raise ConfigError(f'{f.name} in {str(path)!r}: {e}') from None
    return loaded


def parse_config(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """Defaults < YAML (``-c``) < command-line flags. Exits with status 2 on unknown or invalid values.

    The options set by the YAML or the command line (not left at their defaults) are in ``cfg.given``, so that a
    resumed run can tell what the command asked for from what it left to the run.
    """
    parser = _parser()
    ns = vars(parser.parse_args(argv))
    values: Dict[str, Any] = {}
    cfg_path = ns.pop('config', None)
    try:
        if cfg_path:
            values.update(_read_yaml(cfg_path))
        values.update(ns)
        cfg = TrainConfig(**values)
        # a resume's options are whole only once merged with its args.yaml (merge_resumed): "--resume --gamma 0.2"
        # repeats an option of a run whose --schedule step this command leaves out
        cfg.validate(refuse_ignored=not cfg.resume)
    except (ConfigError, TypeError) as e:
        parser.error(str(e))
    cfg.given = frozenset(values)
    return cfg


def merge_resumed(cfg: TrainConfig, given: Set[str], recorded: Dict[str, Any], where: str
                  ) -> Tuple[TrainConfig, Dict[str, Tuple[Any, Any]]]:
    """The options of a resumed run: the ones it recorded, with what this command changed on top.

    Options the command left unset come from the run. Options it sets to another value are refused unless they are
    in :data:`RESUME_MUTABLE` (they change how the run is carried on, not what it computes).

    Args:
        cfg: This command's config (its ``output`` names the run).
        given: The options this command set (``cfg.given``).
        recorded: The options the run started with (its ``args.yaml``).
        where: The recorded options' file, for messages.

    Returns:
        The config to resume with, and ``{option: (was, now)}`` for the options this command changed.

    Raises:
        ConfigError: A changed option that would rewrite the run's history, or recorded options that no longer make
            a valid config.
    """
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in recorded.items() if k in names}
    changed, refused = {}, []
    for key in sorted(given & names - {'resume', 'overwrite', 'output'}):
        now = getattr(cfg, key)
        if now == DEFERS_TO_RUN.get(key, object()):  # "whatever the run chose": the run's recorded choice stands
            continue
        was = values.get(key, _default(key))  # a run from before an option existed ran with its default
        if was != now:
            (changed.__setitem__(key, (was, now)) if key in RESUME_MUTABLE else refused.append(key))
        values[key] = now
    if refused:
        detail = ', '.join(f'{k}={recorded.get(k, _default(k))!r} (asked: {getattr(cfg, k)!r})' for k in refused)
        raise ConfigError(f'cannot resume {str(Path(cfg.output))!r} with other options: it was started with {detail}. '
                          f'Leave them out (the run keeps its own), or start over with --overwrite. Only '
                          f'{", ".join(sorted(RESUME_MUTABLE - {"resume", "overwrite", "output"}))} may change on a '
                          f'resume.')
    values.update(resume=True, overwrite=False, output=cfg.output)
    try:
        merged = TrainConfig(**values)
        merged.validate(refuse_ignored=False)
    except (ConfigError, TypeError) as e:
        raise ConfigError(f'{where!r} no longer makes a valid config ({e}); start over with --overwrite.') from e
    return merged, changed
