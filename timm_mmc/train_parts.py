"""The parts the training loop is assembled from: the model a run asks for (checked, then built, and its
``--init-from`` weights checked and loaded), batch norm over all processes, the model with its loss, the optimizer
and learning-rate schedule, the run's clocks and stop signal, and the words a run uses to describe itself (the
claim). What the machine is and which precision it trains in: :mod:`timm_mmc.machine`.
"""
from __future__ import annotations

import math
import platform
import signal
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from timm.layers import BatchNormAct2d

from .config import TrainConfig
from .data import ImageSplit
from .io import ModelLoadError, check_state_dict_fits, load_named_weights, unwrap_training_state
from .models import WRAPPER_ARCH, PretrainedWeightsError, model_display_name, resolve_model_name
from .runfolder import EpochRecord, RunSummary
from .status import RunFailure

__all__ = ['TrainError', 'TrainingFailed', 'TrainingStopped', 'StopSignal', 'resolve_model', 'build_model',
           'load_init_weights', 'GlobalBatchNorm2d', 'GlobalBatchNormAct2d', 'set_global_batch_norm',
           'local_batch_norms', 'ModelWithLoss', 'lr_lambda', 'step_seed', 'build_optimizer', 'epoch_figures',
           'predict_classes', 'run_summary', 'claim_line']


class TrainError(ValueError):
    """A run that cannot start as asked; the message says how to fix it."""


class TrainingFailed(TrainError, RunFailure):
    """A run that failed once training had begun (a non-finite loss; a run folder changed by hand under it): exit
    status 1, with nothing exported."""


class TrainingStopped(TrainingFailed):
    """A SIGTERM stopped the run between two steps, after a checkpoint there: exit status 1; ``--resume`` continues
    from that step."""


class StopSignal:
    """A SIGTERM during training (a scheduler's preemption, ``timeout``, a session that ends) noted by a handler,
    for the loop to act on between steps: it checkpoints there and stops, so that a resume loses no step. Installed
    only on the main thread (where Python runs signal handlers); the previous handler comes back on exit."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> 'StopSignal':
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._note)
        return self

    def _note(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def resolve_model(cfg: TrainConfig) -> Tuple[str, Dict[str, Any]]:
    """``--model`` as timm name and arguments (:func:`timm_mmc.models.resolve_model_name`), checked before work."""
    import timm
    try:
        timm_name, name_args = resolve_model_name(cfg.model)
    except ValueError as e:
        raise TrainError(str(e)) from None
    arch = timm_name.split('.', 1)[0]
    if arch not in timm.list_models(module=['cifar_resnet', 'wrapper']):
        raise TrainError(f'{cfg.model!r} has no MM / SCE head of timm_mmc; train it with one: {arch}+mmc (or '
                         f'+sce, +mmlda, ...) puts the head on that timm backbone.')
    if cfg.pretrained_backbone is not None:
        if arch != WRAPPER_ARCH:
            raise TrainError(f'--pretrained-backbone is for an MM head on a timm backbone (--model BACKBONE+HEAD, '
                             f'e.g. resnet18+mmc), not {cfg.model!r}; use --init-from for weights of it.')
        if cfg.pretrained_backbone != 'timm' and not Path(cfg.pretrained_backbone).is_file():
            raise TrainError(f'--pretrained-backbone {cfg.pretrained_backbone!r}: give "timm" (the backbone\'s '
                             f'timm weights) or an existing safetensors file of them.')
    return timm_name, name_args


def _rounded(t: torch.Tensor) -> str:
    return '(' + ', '.join(f'{v:.3f}' for v in t.flatten().tolist()) + ')'


def build_model(cfg: TrainConfig, timm_name: str, name_args: Dict[str, Any], train_set: ImageSplit,
                log: Callable[[str], None]) -> nn.Module:
    """The model, seeded, with its input normalisation stored in it (it takes pixel inputs): the training images'
    per-channel statistics, or for a pretrained backbone (``--pretrained-backbone``) the mean and std its weights were
    trained with (its timm pretrained config), which it would otherwise see inputs scaled apart from."""
    import timm
    kwargs: Dict[str, Any] = dict(name_args, num_classes=train_set.num_classes, drop_rate=cfg.drop_rate)
    if cfg.pretrained_backbone is None:
        x = train_set.images
        chans = name_args.get('in_chans', 3)
        if x.shape[1] != chans:
            raise TrainError(f'the training images have {x.shape[1]} channel(s), {cfg.model!r} takes {chans}: write '
                             f'the data set with {chans} (a gray channel repeated, as the Hub-layout loader does).')
        sample = x[:: max(1, len(x) // 10000)].float().div_(255)
        std = sample.std((0, 2, 3))
        if not (std > 0).all():
            raise TrainError(f'channel(s) {(std <= 0).nonzero().flatten().tolist()} of the training images hold one '
                             f'value throughout, so the input normalisation would divide by zero: check the data set.')
        kwargs.update(norm_mean=[float(v) for v in sample.mean((0, 2, 3))], norm_std=[float(v) for v in std])
    if cfg.center_norm is not None:
        kwargs['center_norm'] = cfg.center_norm
    if cfg.feature_dim is not None:
        kwargs['feature_dim'] = cfg.feature_dim
    if cfg.zero_init_last is not None:  # only when asked: a wrapped backbone without the argument builds as before
        kwargs['zero_init_last'] = cfg.zero_init_last
    torch.manual_seed(cfg.seed)
    try:
        model = timm.create_model(timm_name, pretrained=False, **kwargs)
    except ValueError as e:
        raise TrainError(f'cannot build {cfg.model!r}: {e}') from e
    except TypeError as e:
        if 'zero_init_last' not in str(e):
            raise
        raise TrainError(f'cannot build {cfg.model!r} with --zero-init-last / --no-zero-init-last: its backbone takes '
                         f'no zero_init_last ({e}); drop the flag.') from e
    if cfg.pretrained_backbone is not None:
        try:
            where = model.load_backbone_weights(cfg.pretrained_backbone)
        except (PretrainedWeightsError, ModelLoadError) as e:
            raise TrainError(f'--pretrained-backbone: {e}') from e
        log(f'backbone weights: {where}; input normalisation: its own, mean {_rounded(model.mean)} std '
            f'{_rounded(model.std)}')
    return model


def load_init_weights(model: nn.Module, cfg: TrainConfig, timm_name: str, name_args: Dict[str, Any],
                      num_classes: int) -> Optional[str]:
    """Load ``--init-from`` (a weights file, a release or run folder, ``hf-hub:`` or a released name; see
    :func:`timm_mmc.io.load_named_weights`) into ``model`` after checking that the weights are this model.

    MM checkpoints hold no class-sized tensor, so the shapes alone cannot tell a 10-class model from a 100-class one;
    the config beside the weights (``config.json``) or in their metadata, when there is one, names the architecture
    and the number of classes.

    Returns:
        The sha256 of the weights file, where there is one (recorded in ``args.yaml``, named on the card).
    """
    named = load_named_weights(cfg.init_from)
    state = unwrap_training_state(named.state, model.state_dict())
    if named.config is not None:
        arch, classes = named.config.get('architecture'), named.config.get('num_classes')
        named_as = model_display_name(arch, named.config.get('model_args') or {}) if arch else None
        if named_as not in (None, model_display_name(timm_name, name_args)) or classes not in (None, num_classes):
            raise TrainError(f'--init-from {cfg.init_from!r} is a {arch!r} with {classes} classes (its config), '
                             f'not a {cfg.model!r} with {num_classes}: it does not fit.')
    check_state_dict_fits(model, state, cfg.init_from, cfg.model)
    model.load_state_dict(state)
    return named.sha256


def _global_batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor) -> Optional[torch.Tensor]:
    """``bn`` of ``x`` with the statistics of the whole batch over all processes; None outside training in a group.

    Statistics in float32 from per-process sums; gradients flow through the all-reduce. The running statistics are
    updated as ``nn.BatchNorm2d`` updates them (unbiased variance, momentum or cumulative average).
    """
    if not (bn.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    from torch.distributed.nn.functional import all_reduce
    xf = x.float()  # (N, C, H, W)
    count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
    stats = all_reduce(torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count]))  # (2C + 1,)
    c, n = bn.num_features, stats[-1]
    mean = stats[:c] / n
    var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            bn.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=m)
    y = (xf - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + bn.eps)
    if bn.affine:
        y = y * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    return y.to(x.dtype)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics are reduced over all processes (CPU-capable SyncBatchNorm).

    Outside a process group it is a plain BatchNorm2d. Same parameters and buffers, so checkpoints are
    interchangeable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _global_batch_norm(self, x)
        return super().forward(x) if y is None else y


class GlobalBatchNormAct2d(BatchNormAct2d):
    """timm's ``BatchNormAct2d`` (batch norm, dropout, activation) with :class:`GlobalBatchNorm2d`'s statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _global_batch_norm(self, x)
        return super().forward(x) if y is None else self.act(self.drop(y))


_GLOBAL = {nn.BatchNorm2d: GlobalBatchNorm2d, BatchNormAct2d: GlobalBatchNormAct2d}


def set_global_batch_norm(model: nn.Module, enable: bool = True) -> int:
    """Swap every batch norm of ``model`` for its all-process twin (``enable``) or back, in place.

    Only the class changes (the same parameters and buffers), so a model switched back exports as timm builds it.
    Subclasses other than timm's ``BatchNormAct2d`` are left alone. Returns how many modules changed.
    """
    swap = _GLOBAL if enable else {v: k for k, v in _GLOBAL.items()}
    changed = 0
    for m in model.modules():
        if type(m) in swap:
            m.__class__ = swap[type(m)]
            changed += 1
    return changed


def local_batch_norms(model: nn.Module) -> List[str]:
    """Names of the batch norms of ``model`` that keep per-process statistics (no all-process twin)."""
    shared = tuple(_GLOBAL.values())
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, shared)]


class ModelWithLoss(nn.Module):
    """Model + training objective in one module, so DDP also reduces gradients of loss parameters (center loss)."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_pair: Optional[torch.Tensor] = None,
                lam: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """The loss of labels ``y``, or with mixup (``y_pair`` and the 0-dim ``lam``) ``lam * L(y) + (1 - lam) *
        L(y_pair)``, and the logits."""
        feats = self.model.forward_features(x)
        z = self.model.forward_head(feats, pre_logits=True)  # (N, feature_dim)
        logits = self.model.get_classifier()(z)  # (N, num_classes) float32 for MM heads
        loss = self.loss_fn(logits, y, z)
        if y_pair is not None:
            loss = lam * loss + (1 - lam) * self.loss_fn(logits, y_pair, z)
        return loss, logits


def step_seed(seed: int, epoch: int, step: int, salt: int = 0) -> int:
    """The seed of one random draw of a run (``salt`` tells draws of one step apart): a function of where the run is,
    so a run resumed from any checkpoint draws what the uninterrupted run drew."""
    return (seed * 1_000_003 + epoch * 100_003 + step * 101 + salt) % (2 ** 62)


def mixup_weight(alpha: float, seed: int) -> Optional[float]:
    """Mixup's weight of each image itself for one batch, a Beta(alpha, alpha) draw from ``seed``; None when
    ``alpha`` is 0 (mixup off)."""
    return float(np.random.default_rng(seed).beta(alpha, alpha)) if alpha > 0 else None


def build_optimizer(net: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD (Nesterov when asked) with weight decay on the weights only: not on batch norm, biases or trained class
    centers (center loss, L-GM means; the MM heads' fixed centers are buffers, not parameters)."""
    decay, no_decay = [], []
    for n, p in net.named_parameters():
        is_weight = p.ndim > 1 and not n.endswith(('means', 'centers'))
        (decay if is_weight else no_decay).append(p)
    return torch.optim.SGD([dict(params=decay, weight_decay=cfg.weight_decay), dict(params=no_decay, weight_decay=0.0)],
                           lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Per-step multiplier of the peak lr: ``onecycle`` and ``cosine`` rise linearly over the first ``warmup_frac`` of
    the steps, then fall toward 0 (reached just after the last step), in a line or along half a cosine (Loshchilov &
    Hutter 2017, arXiv:1608.03983, without restarts); ``step`` multiplies by ``gamma`` at each milestone epoch."""
    total = cfg.epochs * steps_per_epoch
    warm = max(1, int(cfg.warmup_frac * total))

    def f(step: int) -> float:
        if cfg.schedule in ('onecycle', 'cosine'):
            if step < warm:
                return (step + 1) / warm
            if cfg.schedule == 'onecycle':
                return max(0.0, (total - step) / max(1, total - warm))
            done = min(1.0, (step - warm) / max(1, total - warm))  # share of the decay behind this step
            return 0.5 * (1 + math.cos(math.pi * done))
        epoch = step // steps_per_epoch
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return f


class StepTally:
    """What the steps since the last fold measured, kept on the device so that no step waits for it."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)  # summed over images
        self.correct = torch.zeros((), device=device)
        self.norms = torch.zeros(3, device=device)  # the gradient norms' sum, largest and count
        self.seen, self.t0 = 0, time.time()

    def add(self, loss: torch.Tensor, correct: torch.Tensor, grad_norm: torch.Tensor, n: int) -> None:
        """One step's mean loss, number correct and gradient norm, over its ``n`` images."""
        self.loss += loss * n
        self.correct += correct
        self.norms[0] += grad_norm
        self.norms[1] = torch.maximum(self.norms[1], grad_norm)
        self.norms[2] += 1
        self.seen += n

    def fold(self, sums: Dict[str, float]) -> None:
        """Add the tally to an epoch's ``sums`` (the keys of ``EPOCH_SUMS``, which checkpoints carry) and restart it."""
        sums['loss'] += float(self.loss)
        sums['correct'] += float(self.correct)
        sums['seen'] += self.seen
        sums['time'] += time.time() - self.t0
        sums['steps'] += int(self.norms[2])
        sums['grad_norm'] += float(self.norms[0])
        sums['grad_norm_max'] = max(sums['grad_norm_max'], float(self.norms[1]))
        self.loss.zero_(), self.correct.zero_(), self.norms.zero_()
        self.seen, self.t0 = 0, time.time()


def gather_sums(sums: Dict[str, float], accelerator: Any) -> float:
    """Gather every process's part of an epoch's loss, correct and seen into the main process's ``sums`` (the others
    start again from zero), so that a checkpoint, which holds the main process's, holds the whole epoch so far (every
    process takes part); returns the loss summed so far."""
    keys = ('loss', 'correct', 'seen')
    totals = accelerator.reduce(torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=accelerator.device),
                                'sum').tolist()
    sums.update({k: v if accelerator.is_main_process else 0.0 for k, v in zip(keys, totals)})
    return totals[0]


class RunClock:
    """Wall, CPU and paused seconds since a run began, going on from where its last checkpoint's ``sums`` left them.

    CPU time is this process's, all its threads (:func:`time.process_time`): unlike wall time it does not count pauses
    or what other jobs on the machine took. Paused time is wall time the process stood still (``kill -STOP``, Ctrl-Z,
    a frozen container): a daemon thread wakes every :attr:`TICK_S` and counts a wake-up :attr:`PAUSE_GAP_S` or more
    late as a pause (a loaded machine makes it late by far less). A suspended machine is not counted (its monotonic
    clock stops), nor a stop of another process of a multi-process run (this one then waits for it, running). A run
    cut before CPU or paused time was recorded has none after its resume.
    """
    TICK_S = 1.0
    PAUSE_GAP_S = 10.0

    def __init__(self, sums: Dict[str, float], global_step: int) -> None:
        self.wall0 = time.time() - sums.get('wall', 0.0)
        self.cpu0 = time.process_time() - sums.get('cpu', 0.0) if global_step == 0 or 'cpu' in sums else None
        self.paused0 = sums.get('paused', 0.0) if global_step == 0 or 'paused' in sums else None
        self.paused_here = 0.0  # seconds this process stood still; only the watcher writes it
        self._stop = threading.Event()
        threading.Thread(target=_watch_pauses, args=(weakref.ref(self), self._stop), daemon=True,
                         name='timm_mmc-pause-watch').start()

    def read(self) -> Dict[str, float]:
        """``wall``, ``cpu`` and ``paused`` seconds so far (``cpu`` and ``paused`` absent where not known)."""
        out = dict(wall=time.time() - self.wall0)
        if self.cpu0 is not None:
            out['cpu'] = time.process_time() - self.cpu0
        if self.paused0 is not None:
            out['paused'] = self.paused0 + self.paused_here
        return out

    def close(self) -> None:
        """Stop the watcher (it also stops once the clock is garbage)."""
        self._stop.set()


def _watch_pauses(clock_ref: Callable[[], Optional[RunClock]], stop: threading.Event) -> None:
    last = time.monotonic()  # CLOCK_MONOTONIC goes on while the process is stopped
    while not stop.wait(RunClock.TICK_S):
        clock = clock_ref()
        if clock is None:
            return
        now = time.monotonic()
        late = now - last - RunClock.TICK_S
        if late >= RunClock.PAUSE_GAP_S:
            clock.paused_here += late
        last, clock = now, None


def epoch_figures(rec: EpochRecord) -> str:
    """The accuracies and gradient norms an epoch measured, for its log line (``--test-every`` and ``--robust-every``
    skip some accuracies)."""
    parts = []
    if rec.test_acc is not None:
        parts.append(f'test {rec.test_acc:.4f}')
    if rec.robust_acc is not None:
        ema = f' (EMA {rec.robust_acc_ema:.4f})' if rec.robust_acc_ema is not None else ''
        parts.append(f'robust {rec.robust_acc:.4f}{ema}')
    if rec.test_acc_ema is not None:
        parts.append(f'test EMA {rec.test_acc_ema:.4f}')
    if rec.heldout_clean_acc_ema is not None:
        parts.append(f'held-out clean EMA {rec.heldout_clean_acc_ema:.4f}')
    if rec.grad_norm is not None:
        parts.append(f'grad norm {rec.grad_norm:.3g} (max {rec.grad_norm_max:.3g})')
    return ''.join(f', {p}' for p in parts)


@torch.no_grad()
def predict_classes(model: nn.Module, images: torch.Tensor, device: torch.device, autocast: Callable[[], Any],
                    channels_last: bool, batch: int = 500) -> torch.Tensor:
    """Predicted classes of uint8 images, returned on the CPU.

    Args:
        images: (N, C, H, W) uint8, as :class:`timm_mmc.data.ImageSplit` holds them; scaled to [0, 1] here.
        device: Where the model runs.
        autocast: The run's precision context (a no-op context for fp32).
        channels_last: Feed the model channels_last batches, as it was trained.
        batch: Images per forward pass.
    """
    preds = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch].to(device).float().div_(255)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            preds.append(model(x).argmax(1).cpu())
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def run_summary(cfg: TrainConfig, history: List[EpochRecord], test_acc: float, weights: str,
                selected: Optional[Dict[str, Any]], chosen_on: Optional[str], clocks: Dict[str, float], hardware: str,
                world: int, dataset: str) -> RunSummary:
    """What a finished run exports beside its weights (``summary.json``).

    Args:
        cfg: The run's options.
        history: Its epochs, oldest first (the last one's test figures and the last PGD-10 measured are kept).
        test_acc: Clean test accuracy of the exported weights.
        weights: Which weights are exported without ``--select-best``: 'ema' or 'last'.
        selected: What ``--select-best`` chose (its ``weights`` then win), or None.
        chosen_on: Which split chose between the weight average and the last weights ('test', 'heldout'), 'recipe'
            where ``--export-weights`` fixed them, None where ``--select-best`` chose.
        clocks: What :meth:`RunClock.read` says at the end.
        hardware: The machine line (:func:`timm_mmc.machine.hardware_line`).
        world: Number of processes.
        dataset: The training split's source.
    """
    import timm
    from . import __version__
    last = history[-1] if history else EpochRecord(epoch=0)
    robust = next((h for h in reversed(history) if h.robust_acc is not None), None)
    return RunSummary(model=cfg.model, test_acc=test_acc, weights=selected['weights'] if selected else weights,
                      selected=selected, weights_chosen_on=chosen_on, test_acc_last=last.test_acc,
                      test_acc_ema=last.test_acc_ema, robust_acc=robust.robust_acc if robust else None,
                      robust_attack=robust.robust_attack if robust else None,
                      robust_epoch=robust.epoch if robust else None, robust_weights='last' if robust else None,
                      epochs=cfg.epochs, wall_time_s=clocks['wall'], cpu_time_s=clocks.get('cpu'),
                      paused_time_s=clocks.get('paused'), hardware=hardware, world_size=world,
                      versions=dict(torch=torch.__version__, timm=timm.__version__, timm_mmc=__version__,
                                    python=platform.python_version()),
                      dataset=dataset)


def claim_line(summary: RunSummary, n_test: int, init_from: Optional[str] = None) -> str:
    """The run's result in one line: model, epochs, wall time, machine, clean accuracy of the exported weights; a run
    started from earlier weights (``--init-from``) says so, since its epochs and time are not the whole training."""
    other = ''
    sel = summary.selected
    if sel:
        clean = sel.get('select_on') == 'clean'
        metric, value = ('clean', sel['clean_acc']) if clean else ('PGD-10', sel['robust_acc'])
        other = (f' (epoch {sel["epoch"]}, {"weight average" if sel["weights"] == "ema" else "last weights"}: the best '
                 f'held-out {metric} accuracy, {100 * value:.2f}%)')
    elif summary.test_acc_ema is not None:
        other = (f' (weight average; last weights {100 * summary.test_acc_last:.2f}%)' if summary.weights == 'ema'
                 else f' (last weights; weight average {100 * summary.test_acc_ema:.2f}%)')
    times = [f'{summary.cpu_time_s / 60:.0f} CPU-min'] if summary.cpu_time_s is not None else []
    if summary.paused_time_s:
        times.append(f'{summary.paused_time_s / 60:.1f} min of it paused')
    cpu = f' ({", ".join(times)})' if times else ''
    start = f' from the weights in {init_from}' if init_from else ''
    return (f'claim: {summary.model}, {summary.epochs} epochs{start} in {summary.wall_time_s / 60:.1f} min{cpu} on '
            f'{summary.hardware}: clean accuracy {100 * summary.test_acc:.2f}% on {n_test} test images'
            f'{other}; torch {summary.versions["torch"]}, data {summary.dataset}')
