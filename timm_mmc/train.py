"""Train any timm_mmc model, standard or adversarial, on one CPU, many CPUs or GPUs (through accelerate).

    accelerate launch timm_mmc/train.py --model resnet32_mmc --dataset uoft-cs/cifar10 --output runs/mmc
    python -m timm_mmc.train -c resnet32_mmc --dataset ../shared/data/cifar10
    torchrun --nproc_per_node 2 timm_mmc/train.py ...   # same global batch, same result as one process

Design:
* The data set is decoded once into a uint8 tensor (:mod:`timm_mmc.data`); batches are cut from a seeded
  permutation and augmented on the device. Each process takes its slice of every global batch, and batch norm
  statistics are reduced over the global batch, so N processes compute what one process would.
* Every random draw is seeded from ``(seed, epoch, step)``: a run resumed from any checkpoint continues exactly.
* Checkpoints (``accelerator.save_state``) are written to a temporary folder and renamed into place; ``latest``
  names the last complete one. A kill at any moment leaves the previous checkpoint usable.
* Adversarial training attacks the head's own objective: for MM heads the feature distance ``||z - mu_y||^2``
  (untargeted) or ``||z - mu_t||^2`` (targeted), never a saturated cross-entropy.
"""
from __future__ import annotations

import math
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

if __package__ in (None, ''):  # run as a script (accelerate launch timm_mmc/train.py): import the installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402

from timm_mmc.adversarial import (collapse_warning, ema_beats_last, pgd_accuracy, robust_objectives,  # noqa: E402
                                  training_attack)
from timm_mmc.augment import augment_batch, mixup_batch  # noqa: E402
from timm_mmc.config import ConfigError, TrainConfig, parse_config  # noqa: E402
from timm_mmc.data import DataError, hold_out, load_split  # noqa: E402
from timm_mmc.io import ModelLoadError, config_metadata  # noqa: E402
from timm_mmc.heads import head_spec  # noqa: E402
from timm_mmc.losses import build_loss, default_loss_for_head  # noqa: E402
from timm_mmc.runfolder import (EPOCH_SUMS, EpochRecord, RunError, RunFolder, RunSummary, TrainerState,  # noqa: E402
                                resolve_resume)
from timm_mmc.select_best import BestKeeper  # noqa: E402
from timm_mmc.machine import agree_precision, hardware_line  # noqa: E402
from timm_mmc.train_parts import (ModelWithLoss, RunClock, StepTally, StopSignal, TrainError,  # noqa: E402
                                  TrainingFailed, TrainingStopped, build_model, build_optimizer, claim_line,
                                  epoch_figures, gather_sums, load_init_weights, local_batch_norms, lr_lambda,
                                  mixup_weight, predict_classes, resolve_model, run_summary, set_global_batch_norm,
                                  step_seed)
from timm_mmc.status import ExitStatus, inject_fault, status_of  # noqa: E402
from timm.utils import ModelEmaV3  # noqa: E402

__all__ = ['Trainer', 'main', 'TrainError']


class Trainer:
    """One training run. ``Trainer(cfg).fit()``; the pieces are public for benchmarks and tests."""

    def __init__(self, cfg: TrainConfig, resume_changes: Optional[Dict[str, Tuple[Any, Any]]] = None) -> None:
        from accelerate import Accelerator
        self.resume_changes = resume_changes or {}
        # --precision is the one precision setting: accelerate's own (ACCELERATE_MIXED_PRECISION, `accelerate launch
        # --mixed_precision`) would autocast the forward pass behind our back, so it is switched off here
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision='no')
        self.cfg = cfg = agree_precision(cfg, self.accelerator)  # args.yaml records what ran, for --resume
        acc = self.accelerator
        self.device = acc.device
        self.world = acc.num_processes
        self.rank = acc.process_index
        self.progress = cfg.progress and acc.is_main_process  # bars on the main process only
        if cfg.batch_size % self.world:
            raise TrainError(f'--batch-size {cfg.batch_size} must divide evenly over {self.world} processes.')
        if self.device.type == 'cpu':
            torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // self.world))
        self.run = RunFolder(cfg.output)
        self.out = self.run.path
        try:
            self.run.check_usable(cfg.resume, cfg.overwrite)
        except RunError as e:
            raise TrainError(str(e)) from e
        self.timm_name, self.name_args = resolve_model(cfg)
        # data before anything is written: a bad data set must leave no trace
        self.train_set = load_split(cfg.dataset, cfg.train_split, cfg.image_column, cfg.label_column,
                                    cfg.cache_dir, cfg.train_limit, progress=self.progress)
        self.test_set = load_split(cfg.dataset, cfg.test_split, cfg.image_column, cfg.label_column,
                                   cfg.cache_dir, cfg.test_limit, progress=self.progress)
        # robust accuracy during training: on held-out training images when asked (never the test split then)
        self.robust_set = self.test_set
        if cfg.holdout:
            self.train_set, self.robust_set = hold_out(self.train_set, cfg.holdout, cfg.seed)
        self.robust_n = len(self.robust_set) if cfg.holdout else min(cfg.robust_n, len(self.test_set))
        if cfg.resume:
            self.run.check_same_data(self.train_set, self.test_set)
        if len(self.train_set) < cfg.batch_size:
            raise TrainError(f'the training split has {len(self.train_set)} images, fewer than one batch of '
                             f'{cfg.batch_size}; lower --batch-size.')
        self.num_classes = self.train_set.num_classes
        if self.test_set.num_classes > self.num_classes:
            raise TrainError(f'the {cfg.test_split} split has {self.test_set.num_classes} classes, the '
                             f'{cfg.train_split} split {self.num_classes}: a model of the training split\'s classes '
                             f'would count the others wrong; pass two splits of one data set.')
        model = build_model(cfg, self.timm_name, self.name_args, self.train_set, self.accelerator.print)
        self.head = model.head_config.head
        self.loss_name = cfg.loss or default_loss_for_head(self.head)
        if not cfg.resume:  # a run part-way keeps what it started with, ignored options included (see validate)
            cfg.check_loss_options(self.loss_name)
        try:
            loss_fn = build_loss(self.loss_name, self.num_classes, model.head_hidden_size, head=self.head,
                                 label_smoothing=cfg.label_smoothing, lambda_c=cfg.lambda_c, alpha=cfg.lgm_alpha,
                                 lambda_lkd=cfg.lgm_lambda)
        except ValueError as e:
            raise TrainError(str(e)) from e
        self.stop = StopSignal()  # installed while the epochs run
        # a resume takes every weight from its checkpoint, so the starting weights need not be there any more
        self.init_sha256 = load_init_weights(model, cfg, self.timm_name, self.name_args, self.num_classes) \
            if cfg.init_from and not cfg.resume else None
        if self.world > 1:
            set_global_batch_norm(model)
            if local := local_batch_norms(model):
                self.log(f'warning: {len(local)} batch norm(s) of a kind without an all-process version keep '
                         f'per-process statistics (e.g. {local[0]}); results will differ from a one-process run.')
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.net = ModelWithLoss(model, loss_fn)
        optimizer = build_optimizer(self.net, cfg)
        self.local_batch = cfg.batch_size // self.world
        if cfg.adv != 'none' and round(cfg.adv_ratio * self.local_batch) == 0:
            raise TrainError(f'--adv-ratio {cfg.adv_ratio} of a batch of {self.local_batch} images (a process) is '
                             f'no image, which would train without attacks; raise it to at least '
                             f'{1 / self.local_batch:.3g}.')
        self.steps_per_epoch = len(self.train_set) // cfg.batch_size
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, self.steps_per_epoch))
        self.net, self.optimizer = self.accelerator.prepare(self.net, optimizer)
        self.model = self.accelerator.unwrap_model(self.net).model
        self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay) if cfg.ema_decay > 0 else None
        self._step_net = torch.compile(self.net) if cfg.compile else self.net
        spec = head_spec(self.head, model.head_config.center_kind)
        self.adv_loss = spec.objective
        self.robust_objectives = robust_objectives(spec.objective)
        self.adv_targeted = cfg.adv_targeted if cfg.adv_targeted is not None else spec.targeted_training
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.history: List[EpochRecord] = []
        self.best = BestKeeper(cfg, self.run, self.log, self.accelerator.is_main_process)  # best/
        self.sums = dict(EPOCH_SUMS)

    @property
    def ema_model(self) -> Optional[nn.Module]:
        """The weight average's model, or None when the run keeps no weight average."""
        return self.ema.module if self.ema is not None else None

    def autocast(self):
        if self.cfg.precision == 'bf16':
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # -- one step ---------------------------------------------------------------------------------------------
    def batch(self, epoch: int, step: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """This process's slice of global batch ``step`` of ``epoch``, augmented, in [0, 1]."""
        cfg = self.cfg
        perm = self._perm
        lo = step * cfg.batch_size + self.rank * self.local_batch
        idx = perm[lo:lo + self.local_batch]
        x = self.train_set.images[idx].to(self.device, non_blocking=True).float().div_(255)
        y = self.train_set.labels[idx].to(self.device, non_blocking=True)
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, epoch, step, 1))  # same draws on every process
        return augment_batch(x, generator=gen, offset=self.rank * self.local_batch, total=cfg.batch_size,
                             cutout=cfg.cutout), y

    def adversarial(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        """Replace the first ``adv_ratio`` share of the batch by adversarial examples of the head's objective."""
        cfg = self.cfg
        k = int(round(cfg.adv_ratio * x.shape[0]))
        if k == 0:
            return x
        attack = training_attack(cfg, self.model, self.adv_loss, self.adv_targeted, self.num_classes, seed)
        was_training = self.model.training
        self.model.eval()  # batch-norm statistics stay untouched by attack steps
        with self.autocast():
            x_adv = attack.perturb(x[:k], y[:k])
        self.model.train(was_training)
        return torch.cat([x_adv, x[k:]]) if k < x.shape[0] else x_adv

    def train_step(self, x: torch.Tensor, y: torch.Tensor, lam: Optional[float] = None
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step, with mixup at weight ``lam`` when given; returns the (detached) loss, the number correct
        (with mixup, each label counted by its weight) and the gradient's norm before any clipping (the same on every
        process: gradients are averaged before it), without a device sync."""
        y_pair, lam_t = None, None
        if lam is not None:
            lam_t = torch.tensor(lam, device=self.device)  # a tensor: a compiled step is not recompiled per value
            x, y_pair = mixup_batch(x, y, lam_t)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            loss, logits = self._step_net(x, y, y_pair, lam_t)
        self.accelerator.backward(loss)
        # the norm before clipping; without --grad-clip a limit of inf scales every gradient by exactly 1
        grad_norm = self.accelerator.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip or math.inf)
        if grad_norm is None:  # DeepSpeed clips inside its own step and returns no norm
            grad_norm = torch.full((), math.nan, device=self.device)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)
        self.optimizer.zero_grad(set_to_none=True)
        pred = logits.detach().argmax(1)
        hit = pred == y
        if y_pair is not None:
            hit = lam_t * hit + (1 - lam_t) * (pred == y_pair)
        return loss.detach(), hit.sum(), grad_norm.detach().float()

    # -- evaluation -------------------------------------------------------------------------------------------
    def test_accuracy(self, model: Optional[nn.Module] = None) -> float:
        """Clean accuracy on the test split, sharded over processes, of the trained model or ``model``."""
        model = self.model if model is None else model
        model.eval()
        idx = torch.arange(self.rank, len(self.test_set), self.world)
        preds = predict_classes(model, self.test_set.images[idx], self.device, self.autocast, self.cfg.channels_last)
        correct = (preds == self.test_set.labels[idx]).sum().float()
        total = self.accelerator.reduce(torch.stack([correct, torch.tensor(float(len(idx)))]).to(self.device),
                                        'sum')
        self.model.train()
        return float(total[0] / total[1])

    def robust_accuracy(self, model: Optional[nn.Module] = None, attack: bool = True) -> Tuple[float, float]:
        """Clean and PGD-10 accuracy (eps 8/255, untargeted, per sample the worst of the head's own objective and the
        logit margin) of the trained model or ``model`` on the held-out training images (``--holdout``) or else the
        first ``robust_n`` test images. ``attack=False``: clean only (both figures are the clean accuracy)."""
        objectives = self.robust_objectives if attack else ()
        counts = pgd_accuracy(self.model if model is None else model, self.robust_set.images[:self.robust_n],
                              self.robust_set.labels[:self.robust_n], objectives, self.cfg.seed,
                              self.autocast, self.device, self.cfg.channels_last, self.rank, self.world)
        total = self.accelerator.reduce(counts, 'sum')
        return float(total[0] / total[2]), float(total[1] / total[2])

    # -- checkpoints --------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Write a complete checkpoint (safetensors + JSON, atomically); ``latest`` then names it."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = TrainerState(epoch=self.epoch, step_in_epoch=self.step_in_epoch, global_step=self.global_step,
                                 history=self.history, sums=self.sums, model=self.cfg.model,
                                 num_classes=self.num_classes)
            self.run.save_checkpoint(
                state, acc.unwrap_model(self.net).state_dict(), self.optimizer.state_dict(),
                self.scheduler.state_dict(), self.ema.module.state_dict() if self.ema is not None else None,
                self.cfg.keep_checkpoints, before_rename=lambda: inject_fault('save', self.global_step),
                metadata=config_metadata(self.model))
        acc.wait_for_everyone()

    def load_checkpoint(self) -> str:
        """Continue from the newest readable checkpoint; returns its folder name."""
        try:
            ckpt = self.run.load_latest(with_ema=self.ema is not None, log=self.log)
        except RunError as e:
            raise TrainError(str(e)) from e
        st = ckpt.state
        if st.model != self.cfg.model or st.num_classes != self.num_classes:
            raise TrainError(f'checkpoint {str(ckpt.path)!r} is from {st.model!r} with {st.num_classes} classes, not '
                             f'{self.cfg.model!r} with {self.num_classes}; use --overwrite to start over.')
        try:
            self.accelerator.unwrap_model(self.net).load_state_dict(ckpt.model)
            self.optimizer.load_state_dict(ckpt.optimizer)
            if self.ema is not None:
                self.ema.module.load_state_dict(ckpt.ema)
        except (RuntimeError, KeyError, ValueError) as e:
            raise TrainError(f'checkpoint {str(ckpt.path)!r} does not fit this model: {type(e).__name__}: {e}') from e
        self.scheduler.load_state_dict(dict(ckpt.scheduler, lr_lambdas=[None] * len(self.optimizer.param_groups)))
        self.epoch, self.step_in_epoch, self.global_step = st.epoch, st.step_in_epoch, st.global_step
        # a checkpoint from before the gradient norms were kept lacks their sums: an epoch it cut records none
        self.history, self.sums = st.history, dict(EPOCH_SUMS, **st.sums)
        if not self.accelerator.is_main_process:  # the main process's sums hold every process's part (gather_sums)
            self.sums.update(loss=0.0, correct=0.0, seen=0.0)
        return ckpt.path.name

    # -- the run ----------------------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        self.accelerator.print(msg, flush=True)

    def _write_metrics(self) -> None:
        if self.accelerator.is_main_process:
            self.run.write_metrics(self.history)

    def _prepare_output(self) -> None:
        """A new run writes ``args.yaml``; a resumed one records what it changed in ``resumes.jsonl``."""
        acc = self.accelerator
        if acc.is_main_process:
            resolved = dict(self.cfg.to_dict(), loss=self.loss_name, adv_loss=self.adv_loss,
                            adv_targeted=self.adv_targeted, num_classes=self.num_classes,
                            train_source=self.train_set.source, test_source=self.test_set.source,
                            train_digest=self.train_set.digest, test_digest=self.test_set.digest,
                            world_size=self.world)
            if self.cfg.init_from:  # which weights the name stood for when the run began
                resolved['init_from_sha256'] = self.init_sha256
            self.run.prepare(self.cfg.overwrite, resolved)
        acc.wait_for_everyone()

    def fit(self) -> RunSummary:
        cfg, acc = self.cfg, self.accelerator
        if cfg.resume:
            name = self.load_checkpoint()
            if acc.is_main_process:
                self.run.record_resume(self.global_step, self.resume_changes, name)
            self._write_metrics()  # the checkpoint's epochs: a kill after the last checkpoint may have cut the file
            if cfg.select_best and self.step_in_epoch == 0:
                self.best.restore(self.history, self.model, self.ema_model)
            changed = ', '.join(f'{k} {a!r} -> {b!r}' for k, (a, b) in self.resume_changes.items())
            self.log(f'resumed from {name}: step {self.global_step} (epoch {self.epoch + 1}, step '
                     f'{self.step_in_epoch}){"; changed: " + changed if changed else ""}')
        else:
            self._prepare_output()
        hw = hardware_line(self.device, self.world)
        self.log(f'{cfg.model} ({self.head} head, loss {self.loss_name}, adv {cfg.adv}) on {self.train_set.source}: '
                 f'{len(self.train_set)} train / {len(self.test_set)} test, {cfg.epochs} epochs of '
                 f'{self.steps_per_epoch} steps, batch {cfg.batch_size}, {cfg.precision}; {hw}; '
                 f'torch {torch.__version__}, timm {timm.__version__}')
        clock = RunClock(self.sums, self.global_step)
        try:
            with self.stop:
                self._epochs(clock)
            clocks = clock.read()
        finally:
            clock.close()
        return self.export(clocks, hw)

    def begin_epoch(self) -> None:
        """Training mode and this epoch's seeded order of the training images (every process draws the same)."""
        self.net.train()
        self._perm = torch.randperm(len(self.train_set), generator=torch.Generator().manual_seed(
            step_seed(self.cfg.seed, self.epoch, 0)))

    def step(self, tally: StepTally) -> None:
        """The epoch's next global batch (after :meth:`begin_epoch`, while ``step_in_epoch < steps_per_epoch``): its
        seeded draws, the batch (partly adversarial where asked), one optimizer step, added to ``tally``; then the
        step counters move on. What the run does per step, and what ``bench/train_throughput.py`` times."""
        cfg, epoch, step = self.cfg, self.epoch, self.step_in_epoch
        torch.manual_seed(step_seed(cfg.seed, epoch, step, 7 + self.rank))  # dropout etc.
        x, y = self.batch(epoch, step)
        if cfg.adv != 'none':
            x = self.adversarial(x, y, step_seed(cfg.seed, epoch, step, 1000 + self.rank))
        alpha = cfg.mixup if epoch < cfg.epochs - cfg.mixup_off_last else 0.0
        lam = mixup_weight(alpha, step_seed(cfg.seed, epoch, step, 2))  # the same on every process
        tally.add(*self.train_step(x, y, lam), len(y))
        self.step_in_epoch += 1
        self.global_step += 1

    def _epochs(self, clock: RunClock) -> None:
        """Train from where the run stands to its last epoch: each epoch measured, logged and checkpointed."""
        cfg, acc = self.cfg, self.accelerator
        from tqdm import tqdm
        while self.epoch < cfg.epochs:
            epoch = self.epoch
            self.begin_epoch()
            bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, desc=f'epoch {epoch + 1}',
                       disable=not self.progress, leave=False, dynamic_ncols=True)
            tally = StepTally(self.device)
            while self.step_in_epoch < self.steps_per_epoch:
                self.step(tally)
                bar.update(1)
                inject_fault('step', self.global_step)
                stop = self._stop_asked()
                if self.step_in_epoch < self.steps_per_epoch and (stop or cfg.checkpoint_every and
                                                                  self.global_step % cfg.checkpoint_every == 0):
                    tally.fold(self.sums)
                    self._check_finite(gather_sums(self.sums, acc), f'in epoch {epoch + 1} (step {self.global_step}, '
                                                                    f'before its checkpoint)')
                    self.sums.update(clock.read())
                    self.save_checkpoint()
                    if stop:
                        raise self._stopped()
            bar.close()
            tally.fold(self.sums)
            totals = acc.reduce(torch.tensor([self.sums['loss'], self.sums['correct'], self.sums['seen']],
                                             device=self.device), 'sum')
            rec = EpochRecord(
                epoch=epoch + 1, train_loss=float(totals[0] / totals[2]), train_acc=float(totals[1] / totals[2]),
                img_per_s=float(totals[2]) / max(self.sums['time'], 1e-9), lr=self.scheduler.get_last_lr()[0])
            if self.sums['steps'] == self.steps_per_epoch and math.isfinite(self.sums['grad_norm']):
                rec.grad_norm = self.sums['grad_norm'] / self.sums['steps']
                rec.grad_norm_max = self.sums['grad_norm_max']
            self._check_finite(rec.train_loss, f'in epoch {epoch + 1}')  # before measuring or saving these weights
            if (epoch + 1) % cfg.test_every == 0 or epoch + 1 == cfg.epochs:
                rec.test_acc = self.test_accuracy()
                rec.test_acc_ema = self.test_accuracy(self.ema.module) if self.ema is not None else None
            if cfg.robust_every and ((epoch + 1) % cfg.robust_every == 0 or epoch + 1 == cfg.epochs):
                self._measure_robust(rec)
            elif cfg.holdout:
                self._measure_heldout_clean(rec)
            clocks = clock.read()
            rec.elapsed_s, rec.cpu_s, rec.paused_s = clocks['wall'], clocks.get('cpu'), clocks.get('paused')
            self.history.append(rec)
            self.log(f'epoch {epoch + 1}/{cfg.epochs}: loss {rec.train_loss:.4f}, train {rec.train_acc:.4f}'
                     f'{epoch_figures(rec)}, {rec.img_per_s:.0f} img/s, lr {rec.lr:.4g}, {rec.elapsed_s / 60:.1f} min'
                     f'{f" ({rec.paused_s / 60:.1f} paused)" if rec.paused_s else ""}')
            warning = collapse_warning(self.history) if rec.robust_acc is not None else None
            if warning:
                rec.collapse = True
                self.log(warning)
            self.epoch += 1
            self.step_in_epoch = 0
            self.sums = dict(EPOCH_SUMS, **clocks)
            self.save_checkpoint()
            inject_fault('best', self.global_step)
            if cfg.select_best:  # after the checkpoint, which holds these weights: a resume can write best/ again
                self.best.keep(self.history, rec.epoch, self.model, self.ema_model)
            inject_fault('metrics', self.global_step)
            self._write_metrics()
            if self.epoch < cfg.epochs and self._stop_asked():  # after the last epoch: export instead
                raise self._stopped()

    def _stop_asked(self) -> bool:
        """Whether a SIGTERM asked the run to stop; over several processes, whether any of them got one (they must
        all stop at the same step, since each writes its part of the checkpoint)."""
        if self.world == 1:
            return self.stop.requested
        flag = torch.tensor([float(self.stop.requested)], device=self.device)
        return bool(self.accelerator.reduce(flag, 'sum').item() > 0)

    def _stopped(self) -> TrainingStopped:
        return TrainingStopped(f'stopped by SIGTERM after step {self.global_step} (epoch {self.epoch + 1}, step '
                               f'{self.step_in_epoch} of {self.steps_per_epoch}), with a checkpoint there: continue '
                               f'with --resume and the same --output.')

    def _measure_robust(self, rec: EpochRecord) -> None:
        """Add PGD-10 robust accuracy to the epoch's record: of the last weights, and on held-out images also of the
        weight average, with the clean accuracy of both there (what --select-best chooses from)."""
        where = f'the {self.robust_n} held-out training images' if self.cfg.holdout else \
            f'first {self.robust_n} test images'
        rec.robust_attack = f'PGD-10 untargeted eps 8/255, worst of {" and ".join(self.robust_objectives)}, {where}'
        clean, rec.robust_acc = self.robust_accuracy()
        if self.cfg.holdout:
            rec.heldout_clean_acc = clean
            if self.ema is not None:
                rec.heldout_clean_acc_ema, rec.robust_acc_ema = self.robust_accuracy(self.ema.module)

    def _measure_heldout_clean(self, rec: EpochRecord) -> None:
        """Add the clean accuracy on the held-out training images, of the last weights and the weight average, to an
        epoch without PGD-10 (what ``--select-on clean`` ranks)."""
        rec.heldout_clean_acc, _ = self.robust_accuracy(attack=False)
        if self.ema is not None:
            rec.heldout_clean_acc_ema, _ = self.robust_accuracy(self.ema.module, attack=False)

    def _check_finite(self, loss: float, where: str) -> None:
        """Stop before weights trained on a non-finite loss are measured, checkpointed or exported."""
        if not math.isfinite(loss):
            raise TrainingFailed(f'the training loss became non-finite ({loss}) {where}: nothing was exported. Lower '
                                 f'--lr, set --grad-clip, or check the data; the last finite checkpoint is in '
                                 f'{str(self.run.ckpt_root)!r}.')

    def export(self, clocks: Dict[str, float], hardware: str) -> RunSummary:
        """``model.safetensors`` + ``config.json`` (timm's save_for_hf) and ``summary.json`` in the run folder;
        ``clocks`` is what :meth:`RunClock.read` says at the end."""
        acc = self.accelerator
        last = self.history[-1] if self.history else EpochRecord(epoch=0)
        # fixed before training (no split of this run chooses); with no weight average there is nothing to choose
        fixed = self.cfg.export_weights != 'auto' and self.ema is not None
        use_ema = self.ema is not None and (self.cfg.export_weights == 'ema' if fixed else
                                            ema_beats_last(last, heldout=self.cfg.holdout > 0))
        model = self.ema.module if use_ema else self.model
        test_acc, selected = last.test_acc_ema if use_ema else last.test_acc, None
        if self.cfg.select_best:
            model, selected = self.best.selected(self.history, self.model)
            test_acc = self.test_accuracy(model)
        summary = run_summary(self.cfg, self.history, test_acc, weights='ema' if use_ema else 'last', selected=selected,
                              chosen_on=None if selected else 'recipe' if fixed else 'heldout' if self.cfg.holdout
                              else 'test', clocks=clocks, hardware=hardware, world=self.world,
                              dataset=self.train_set.source)
        if acc.is_main_process:
            model = model.to(memory_format=torch.contiguous_format)
            set_global_batch_norm(model, enable=False)
            self.run.export(model, model.model_args(), self.train_set.class_names, summary)
            self.log(f'done: weights in {self.out / "model.safetensors"}')
            self.log(claim_line(summary, len(self.test_set), self.cfg.init_from))
        acc.wait_for_everyone()
        return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = parse_config(argv)
    try:
        changes: Dict[str, Tuple[Any, Any]] = {}
        if cfg.resume:
            RunFolder(cfg.output).check_usable(resume=True, overwrite=cfg.overwrite)
            cfg, changes = resolve_resume(cfg, set(getattr(cfg, 'given', ())))
        trainer = Trainer(cfg, changes)
        trainer.fit()
        # a sharded run's process group goes before Python shuts down (a live Gloo group can abort the exit)
        trainer.accelerator.end_training()
    except (TrainError, ConfigError, DataError, ModelLoadError, RunError) as e:
        print(f'error: {e}', file=sys.stderr)
        return status_of(e)
    return ExitStatus.OK


if __name__ == '__main__':
    sys.exit(main())
