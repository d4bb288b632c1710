"""``python -m eval.robustness``: evaluate any timm model's adversarial robustness, honestly.

Examples::

    python -m eval.robustness --model local-dir:hub_cards/resnet32_mmc.cifar10 --dataset uoft-cs/cifar10 \\
        --split test --n-examples 1000 --suite paper --out results/
    python -m eval.robustness --model resnet32_mmc --checkpoint runs/mmc/model.safetensors \\
        --dataset ../shared/data/cifar10 --suite autoattack --aa-version standard --n-examples 200
    accelerate launch -m eval.robustness ...   # examples sharded over processes, results gathered
    torchrun --nproc_per_node 2 -m eval.robustness ...   # the same on a CPU-only machine

Suites (Linf; eps in /255 units in names; every seed fixed and recorded):

* ``quick``: PGD-10 untargeted and targeted at the first eps + AutoAttack ``fast`` on a slice (``--aa-n``).
* ``paper``: the ICLR 2020 MMC paper's tables: PGD-10/50 targeted/untargeted at each eps with the adaptive objectives
  (MM heads) and the margin loss, C&W L2, SPSA, Gaussian noise, rotation (+ transfer with ``--transfer-from``).
* ``autoattack``: AutoAttack (``--aa-version`` standard / rand / fast) at ``--aa-eps``.
* ``full``: everything.

A killed evaluation keeps what it had measured in ``OUT/NAME.partial/`` (:mod:`eval.partial`); the same command with
``--resume`` runs only the attacks still to do, and gives the figures an uninterrupted run gives.

Exit status (``timm_mmc.ExitStatus``, as every command gives it): 0 on success; 2 for bad input (the command line, the
model, the data; a model name without weights unless ``--random-weights``; a ``--resume`` whose options, weights or
clean predictions differ from the evaluation it would continue, whose state is then kept), refused before any attack;
1 when a run-time check fails (eps-ball, [0, 1], robust <= clean). No report is written then, and the partial state of
a failed check is removed.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from timm_mmc import (RULES, CheckError, DataError, EvalReport, ExitStatus, HeadFromNameWarning, ModelLoadError,
                      TooFewExamples, cpu_name, eps_key, file_sha256, inject_fault, load_model, load_split,
                      names_weights, package_versions, random_targets, status_of)

from . import partial
from .aa import resolved_budget
from .options import build_parser
from .report import OutputError, check_outputs, default_name, write_outputs
from .suite import (ResumeMismatch, SuiteOptions, build_suite, default_objectives, is_mm_model, merge_records,
                    run_suite, summarise, unused_options)
from .threat import AttackFamily

__all__ = ['main', 'build_parser']


class EvalError(RuntimeError):
    """A problem with the model, data or options found after parsing; the message names the fix."""


def _resolved_budgets(opts: SuiteOptions, n: int, aa_budget: Tuple[int, Optional[int]]) -> Dict[str, int]:
    """The example counts and AutoAttack budget the suite runs with, for a resume's identity: ``--cw-n 1000`` on 500
    examples is ``--cw-n 500``, and ``--aa-n-iter 100`` is AutoAttack's own default.

    Args:
        opts: The suite's options.
        n: Examples evaluated, over all processes (an attack's ``n_limit`` counts global positions).
        aa_budget: ``(APGD iterations, APGD-T target classes)`` as AutoAttack runs them (:func:`resolved_budget`).

    Returns:
        ``cw_n``, ``spsa_n`` and ``aa_n`` as the number of examples each attack covers (None is all ``n``), and
        ``aa_n_iter`` and ``aa_target_classes`` as AutoAttack runs them.
    """
    counts = {k: n if v is None else min(v, n) for k, v in (('cw_n', opts.cw_n), ('spsa_n', opts.spsa_n),
                                                            ('aa_n', opts.aa_n))}
    return dict(counts, aa_n_iter=aa_budget[0], aa_target_classes=aa_budget[1])


def _checkpoint_sha(spec: str, checkpoint: Optional[str], model) -> Optional[str]:
    if checkpoint:
        return file_sha256(checkpoint)
    if spec.startswith('local-dir:'):
        folder = Path(spec.split(':', 1)[1])
        for fname in ('model.safetensors', 'pytorch_model.bin'):
            if (folder / fname).is_file():
                return file_sha256(folder / fname)
        return None
    hub_id = spec.split(':', 1)[1] if spec.startswith('hf-hub:') else \
        (getattr(model, 'pretrained_cfg', {}) or {}).get('hf_hub_id')
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
            for fname in ('model.safetensors', 'pytorch_model.bin'):
                path = try_to_load_from_cache(hub_id, fname)
                if isinstance(path, str) and os.path.isfile(path):
                    return file_sha256(path)
        except Exception:
            return None
    return None


def _refuse_repeats(args: argparse.Namespace) -> None:
    """Each value of a list option names attacks, so a repeated one would name the same attack twice: refused before
    any loading (``--eps`` by its /255 key, as the attack names write it)."""
    for flag, values, key in (('--eps', args.eps, eps_key), ('--pgd-steps', args.pgd_steps, str),
                              ('--objectives', args.objectives or (), str),
                              ('--noise-sigma', args.noise_sigma, lambda v: f'{v:g}')):
        keys = [key(v) for v in values]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise EvalError(f'{flag} repeats {", ".join(repeated)}; give each value once.')


def _refuse_random_weights(flag: str, spec: str, checkpoint: Optional[str], pretrained: bool, random_weights: bool,
                           checkpoint_flag: str = '--checkpoint') -> None:
    """A model name with no weights would be measured (or attack from) its random initial weights: refused, unless
    ``--random-weights`` asks for it (a check of the pipeline; the report then says so)."""
    if not (random_weights or names_weights(spec, checkpoint, pretrained)):
        raise EvalError(f'{flag} {spec} names an architecture but no weights, so its random initial weights would be '
                        f'used; add --pretrained (the released weights), {checkpoint_flag} FILE (.safetensors), or '
                        f'give hf-hub:ORG/REPO or local-dir:FOLDER (--random-weights, if a random model is what you '
                        f'mean).')


def _load(spec: str, checkpoint: Optional[str], pretrained: bool, device: torch.device, said: List[str]):
    """The model, evaluation-ready; the loader's warnings (e.g. a checkpoint that does not say its head) are printed
    and added to ``said``, which the report carries."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always', HeadFromNameWarning)
            model = load_model(spec, checkpoint=checkpoint, pretrained=pretrained)
    except ModelLoadError as e:
        raise EvalError(str(e)) from None
    for w in caught:
        if issubclass(w.category, HeadFromNameWarning):
            said.append(str(w.message))
            print(f'warning: {w.message}', file=sys.stderr)
        else:  # not ours to record: shown as they would have been
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _machine(device: torch.device) -> str:
    """The processor that computes the figures: the GPU's name, or the CPU's model and vector unit (which tells the
    lent 2-core machines apart where the model name does not)."""
    if device.type == 'cuda':
        return f'{torch.cuda.get_device_name(device)} (cuda)'
    return f'cpu: {cpu_name()} ({torch.backends.cpu.get_cpu_capability()})'


def _device_words(device: torch.device) -> str:
    if device.type == 'cuda':
        return _machine(device)
    return f'{_machine(device)}, {torch.get_num_threads()} threads, {os.cpu_count()} cores'


def evaluate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    t_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    distributed = int(os.environ.get('WORLD_SIZE', '1')) > 1
    if distributed:  # accelerate launch / torchrun: one shard of the examples per process
        import torch.distributed as dist
        use_cuda = torch.cuda.is_available() and (args.device or 'cuda').startswith('cuda')
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', '0')))  # all_gather_object over NCCL needs it
        if not dist.is_initialized():
            dist.init_process_group('nccl' if use_cuda else 'gloo')
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get('LOCAL_RANK', '0'))
        device = torch.device(args.device if args.device and not use_cuda else (f'cuda:{local}' if use_cuda
                                                                                   else 'cpu'))
    else:
        rank, world = 0, 1
        device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    main_proc = rank == 0
    say = print if main_proc else (lambda *a, **k: None)
    if device.type == 'cuda':  # full float32 numerics, as on a CPU: TF32 convolutions would shift logits ~1e-3
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    stem = args.name if args.name is not None else default_name(args.model, args.checkpoint, args.suite)
    if main_proc:
        check_outputs(args.out, stem, args.overwrite, args.resume)
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise EvalError(f'checkpoint {args.checkpoint!r} does not exist; give the path of a .safetensors file.')
    if args.start < 0:
        raise EvalError(f'--start must be >= 0 (got {args.start}).')
    _refuse_repeats(args)
    if args.random_weights and names_weights(args.model, args.checkpoint, args.pretrained):
        raise EvalError('--random-weights contradicts the weights that --model, --checkpoint or --pretrained name; '
                        'drop one.')
    load_warnings: List[str] = []
    torch.manual_seed(args.seed)  # --random-weights: the same random weights every time (and on a resume)
    model = _load(args.model, args.checkpoint, args.pretrained, device, load_warnings)
    _refuse_random_weights('--model', args.model, args.checkpoint, args.pretrained, args.random_weights)
    mm = is_mm_model(model)
    num_classes = getattr(model, 'num_classes', None)

    try:
        data = load_split(args.dataset, args.split, args.image_column, args.label_column,
                          limit=None if args.n_examples is None else args.start + args.n_examples,
                          progress=main_proc and not args.no_progress)
    except TooFewExamples as e:
        raise EvalError(f'{e} Lower --n-examples (and --start) to fit the split.') from None
    except DataError as e:
        raise EvalError(str(e)) from None
    if num_classes is None:
        raise EvalError(f'{args.model} does not say how many classes it has (model.num_classes).')
    if num_classes != data.num_classes:
        raise EvalError(f'{args.model} has {num_classes} classes but {args.dataset}:{args.split} has '
                        f'{data.num_classes}; evaluate it on the data set it was trained for.')
    if int(data.labels.max()) >= num_classes:
        raise EvalError(f'labels up to {int(data.labels.max())} do not fit a {num_classes}-class model.')
    n_examples = args.n_examples if args.n_examples is not None else min(1000, len(data) - args.start)
    if n_examples < 1:
        raise EvalError(f'--start {args.start} leaves no example of the {len(data)} in {args.dataset}:{args.split}.')
    indices = torch.arange(args.start, args.start + n_examples)
    n = indices.numel()
    if data.images.shape[1] != getattr(model, 'in_chans', data.images.shape[1]):
        raise EvalError(f'images have {data.images.shape[1]} channels, the model takes {model.in_chans}.')

    source = None
    src_obj = 'ce'
    if args.transfer_from:
        if args.transfer_checkpoint and not Path(args.transfer_checkpoint).is_file():
            raise EvalError(f'transfer checkpoint {args.transfer_checkpoint!r} does not exist.')
        source_pretrained = args.pretrained and not args.transfer_checkpoint
        source = _load(args.transfer_from, args.transfer_checkpoint, source_pretrained, device, load_warnings)
        _refuse_random_weights('--transfer-from', args.transfer_from, args.transfer_checkpoint, source_pretrained,
                               args.random_weights, '--transfer-checkpoint')
        src_obj = default_objectives(is_mm_model(source))[0]
        if getattr(source, 'num_classes', num_classes) != num_classes:
            raise EvalError(f'the transfer source {args.transfer_from} has {source.num_classes} classes, the target '
                            f'{num_classes}.')
    elif args.transfer_checkpoint:
        raise EvalError('--transfer-checkpoint needs --transfer-from.')

    aa_version = args.aa_version or ('standard' if args.suite == 'autoattack' else 'fast')
    aa_n = args.aa_n if args.aa_n is not None else (min(100, n) if args.suite == 'quick' else None)
    aa_budget = resolved_budget(aa_version, args.aa_n_iter, args.aa_target_classes, num_classes)
    # as it runs (C - 1 at most), so that the report names the attack by what ran
    aa_targets = aa_budget[1] if args.aa_target_classes is not None else None
    opts = SuiteOptions(
        eps=tuple(args.eps), pgd_steps=tuple(args.pgd_steps), pgd_alpha=args.pgd_alpha,
        objectives=tuple(args.objectives) if args.objectives else default_objectives(mm),
        cw_n=args.cw_n or (500 if device.type == 'cuda' else 25), cw_binary_steps=args.cw_binary_steps,
        cw_max_iter=args.cw_max_iter, spsa_n=args.spsa_n or (1000 if device.type == 'cuda' else 25),
        spsa_samples=args.spsa_samples, noise_sigmas=tuple(args.noise_sigma),
        rotation_degrees=args.rotation, aa_version=aa_version, aa_eps=args.aa_eps, aa_n=aa_n,
        aa_n_iter=args.aa_n_iter, aa_target_classes=aa_targets, standalone=args.standalone,
        seed=args.seed, batch_size=args.batch_size)
    if opts.spsa_samples % 2:
        raise EvalError(f'--spsa-samples must be even (+- pairs), got {opts.spsa_samples}.')
    specs = build_suite(args.suite, opts, families=args.attacks, transfer=source is not None,
                        source_objective=src_obj)
    if not specs:
        raise EvalError(f'--attacks {" ".join(a.value for a in args.attacks)} selects nothing from suite '
                        f'{args.suite!r}; pick families the suite has.')
    if args.attacks and AttackFamily.TRANSFER in args.attacks and source is None:
        raise EvalError('--attacks transfer needs --transfer-from MODEL.')

    weights_sha = _checkpoint_sha(args.model, args.checkpoint, model)
    transfer_sha = _checkpoint_sha(args.transfer_from, args.transfer_checkpoint, source) if source else None
    identity = partial.identity_of(  # the suite's options as resolved: --cw-n 25 on a CPU is no change from none
        vars(args), leave_out=unused_options(specs), **{**opts.to_dict(), **_resolved_budgets(opts, n, aa_budget)},
        n_examples=n_examples, checkpoint_sha256=weights_sha,
        transfer_sha256=transfer_sha,
        dataset_source=data.source, indices=indices.tolist(), attacks_in_order=[s.name for s in specs],
        device_type=device.type, num_processes=world, versions=package_versions(),
        gpu=torch.cuda.get_device_name(device) if device.type == 'cuda' else None)
    unfinished = partial.partial_dir(Path(args.out), stem)
    done, earlier_s, machines, here = None, 0.0, {}, _machine(device)  # machines: where each finished attack ran
    if args.resume:
        state = partial.resume(unfinished, rank, world, identity, device)
        done, earlier_s, machines = state.records, state.elapsed_s, state.machines
    if not args.resume and main_proc:
        partial.remove(unfinished)  # --overwrite: start over (check_outputs refused it otherwise)
    if distributed and not args.resume:
        import torch.distributed as dist
        dist.barrier()  # nobody saves into the folder before it is gone

    def save_state(so_far) -> None:
        machines.update({name: here for name in so_far.attacks if name not in machines})
        partial.save(unfinished, rank, identity, so_far, earlier_s + time.perf_counter() - t_start, machines)
        if distributed:  # every process has saved this attack before any goes on: a cut then never finds a process
            import torch.distributed as dist  # with no state while another had finished an attack (the faster one's
            dist.barrier()  # shard is smaller), which --resume has to refuse
        inject_fault('eval-attack', len(so_far.attacks))

    torch.manual_seed(args.seed)
    y_all = data.labels[indices]
    targets_all = random_targets(y_all, num_classes, torch.Generator().manual_seed(args.seed + 1))
    positions = torch.arange(n)[rank::world]
    x = data.float_images(indices[positions]).to(device)
    y, targets = y_all[positions].to(device), targets_all[positions].to(device)

    say(f'[eval] {args.model}{" + " + args.checkpoint if args.checkpoint else ""} ({"MM" if mm else "linear"} head, '
        f'{num_classes} classes) on {args.dataset}:{args.split}, n={n} (indices {args.start}..'
        f'{args.start + n - 1}), suite {args.suite}, {len(specs)} attacks, seed {args.seed}')
    say(f'[eval] device {_device_words(device)}, {world} process(es); ' +
        ', '.join(f'{k} {v}' for k, v in package_versions().items()))
    if done is not None:
        say(f'[eval] resuming: {len(done.attacks)} of {len(specs)} attacks finished before, in {earlier_s:.0f}s '
            f'({", ".join(done.attacks) or "none"})')
    say(f'[eval] each finished attack is kept in {unfinished} until the report is written: if this run is cut, the '
        f'same command with --resume continues it')
    try:  # a failed run-time check (on any process) leaves no state to continue from
        rec = run_suite(model, specs, opts, x, y.long(), targets.long(), positions, num_classes, source_model=source,
                        progress=main_proc and not args.no_progress,
                        diagnostic_objectives=('ce', 'mm', 'margin') if mm else ('ce', 'margin'), done=done,
                        after_attack=save_state)
        # every process takes part in each collective: the flip-TTA sum before the non-main ones leave
        tta = _flip_tta_accuracy(model, x, y, args.batch_size, world) if args.tta_flip else None
        if distributed:
            import torch.distributed as dist
            parts = [None] * world
            dist.all_gather_object(parts, _to_cpu(rec))
            if not main_proc:
                return ExitStatus.OK
            rec = merge_records(parts)
        rep = EvalReport(
            model=args.model, dataset=args.dataset, split=args.split, n=n, suite=args.suite, seed=args.seed,
            checkpoint=args.checkpoint, checkpoint_sha256=weights_sha,
            pretrained=args.pretrained and not args.checkpoint,  # --pretrained then only serves the transfer source
            logits='distance' if mm else 'linear', own_objective=default_objectives(mm)[0],
            dataset_source=data.source, indices=indices.tolist(), options=opts.to_dict(),
            clean_accuracy_flip_tta=tta,
            versions=package_versions(), device=_device_words(device), num_processes=world,
            transfer_from=args.transfer_from, transfer_sha256=transfer_sha, rules=dict(RULES),
            command=' '.join(shlex.quote(a) for a in ['python', '-m', 'eval.robustness', *argv]))
        rep = summarise(_to_cpu(rec), specs, rep)
    except CheckError:
        partial.remove(unfinished)
        raise
    moved = partial.machine_note(machines, here, [s.name for s in specs])
    rep.warnings = load_warnings + ([moved] if moved else []) + rep.warnings
    rep.timings = dict(rec.times, total_s=earlier_s + time.perf_counter() - t_start)
    if args.resume:
        rep.timings['before_resume_s'] = earlier_s
    paths = write_outputs(rep, Path(args.out), stem)
    partial.remove(unfinished)
    _print_claims(rep, say)
    say(_summary_table(rep))
    say(f'[eval] wrote {paths["json"]}, {paths["md"]}, {paths["png"]}')
    return ExitStatus.OK


@torch.no_grad()
def _flip_tta_accuracy(model, x: torch.Tensor, y: torch.Tensor, batch_size: int, world: int) -> float:
    """Clean accuracy of the mean logits of each image and its horizontal mirror (over all processes)."""
    correct = torch.zeros((), dtype=torch.float64, device=x.device)
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        logits = model(xb).float() + model(xb.flip(3)).float()
        correct += (logits.argmax(1) == y[i:i + batch_size]).sum()
    total = torch.stack([correct, torch.tensor(float(len(x)), dtype=torch.float64, device=x.device)])
    if world > 1:
        import torch.distributed as dist
        dist.all_reduce(total)
    return float(total[0] / total[1])


def _leave_process_group() -> None:
    """Destroy the process group a sharded run made, on every process, before the interpreter shuts down.

    A process that exits with a Gloo group still alive can abort (SIGABRT) while Python is being torn down, and
    torchrun then fails the whole run although the report was written. Only called on success: after an error the
    process exits non-zero and torchrun stops the others.
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _to_cpu(rec):
    rec.positions = rec.positions.cpu()
    rec.clean = rec.clean.cpu()
    rec.attacks = {k: {kk: vv.cpu() for kk, vv in v.items()} for k, v in rec.attacks.items()}
    rec.zero_grad = {k: v.cpu() for k, v in rec.zero_grad.items()}
    return rec


def _print_claims(rep: EvalReport, say) -> None:
    say(f'[eval] clean accuracy {100 * rep.clean_accuracy:.2f}% (n={rep.n})')
    if rep.clean_accuracy_flip_tta is not None:
        say(f'[eval] clean accuracy with flip test-time augmentation {100 * rep.clean_accuracy_flip_tta:.2f}% '
            f'(n={rep.n}, two forward passes an image; every robust figure is single-pass)')
    for a in rep.attacks.values():
        if a.family == 'cw':
            say(f'[eval] {a.name:28s} success {100 * a.success_rate:.1f}%  mean L2 {a.l2_mean:.4f}  median '
                f'{a.l2_median:.4f}  paper figure {a.l2_paper:.4f}  (n={a.n}, {a.time_s:.0f}s)')
        else:
            say(f'[eval] {a.name:28s} {100 * a.accuracy:6.2f}%  (n={a.n}, attacked {a.n_attacked}, {a.time_s:.1f}s)')
    for c in rep.find_columns(family='pgd'):
        if len(c.attacks) > 1:
            say(f'[eval] {c.name:28s} {100 * c.accuracy:6.2f}%  worst case over {", ".join(c.attacks)}')
    for k, w in rep.worst_case.items():
        say(f'[eval] ROBUST ACCURACY UNDER THE SUITE at eps {k}/255: {100 * w.accuracy:.2f}% '
            f'(per-sample worst case over {len(w.attacks)} attacks, n={w.n})')
    for k, w in rep.worst_case_slice.items():
        fewer = f', of which {", ".join(w.partial)} on fewer points' if w.partial else ''
        say(f'[eval] ROBUST ACCURACY UNDER THE SUITE at eps {k}/255 on the first {w.n} points: '
            f'{100 * w.accuracy:.2f}% (per-sample worst case over {len(w.attacks)} attacks{fewer})')
    for w in rep.all_warnings():
        say(f'[eval] WARNING: {w}')
    say(f'[eval] total {rep.timings["total_s"]:.0f}s')


def _summary_table(rep: EvalReport) -> str:
    """One Markdown row per attack and the worst case, the numbers the README quotes."""
    rows = ['| attack | n | attacked | robust accuracy % |', '| --- | --- | --- | --- |',
            f'| clean | {rep.n} | - | {100 * rep.clean_accuracy:.1f} |']
    if rep.clean_accuracy_flip_tta is not None:
        rows.append(f'| clean, flip TTA (2 passes) | {rep.n} | - | {100 * rep.clean_accuracy_flip_tta:.1f} |')
    rows += [f'| {a.name} | {a.n} | {a.n_attacked} | {100 * a.accuracy:.1f} |' for a in rep.attacks.values()
             if a.family != 'cw']
    rows += [f'| **worst case at {k}/255** | {w.n} | - | **{100 * w.accuracy:.1f}** |'
             for k, w in rep.worst_case.items()]
    rows += [f'| **worst case at {k}/255, first {w.n}** | {w.n} | - | **{100 * w.accuracy:.1f}** |'
             for k, w in rep.worst_case_slice.items()]
    return '\n'.join(rows)


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt  # a SIGTERM (a session's or a scheduler's end) stops the run as Ctrl-C does


def _error(text: str, alike_everywhere: bool = False) -> None:
    """Print an error on stderr. In a sharded run every process meets its own: the main process prints it as it is,
    another names itself (``[process 1 of 2] error: ...``), and a message that every process has alike (a stop) is
    printed by the main process only."""
    rank, world = int(os.environ.get('RANK', '0')), int(os.environ.get('WORLD_SIZE', '1'))
    if world > 1 and rank:
        if alike_everywhere:
            return
        text = f'[process {rank} of {world}] {text}'
    print(text, file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    on_main_thread = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _stop) if on_main_thread else None
    try:
        code = evaluate(args, argv)
        _leave_process_group()
        return code
    except KeyboardInterrupt:
        _error('error: stopped before the report was written; the attacks it finished are kept in OUT/NAME.partial/: '
               'the same command with --resume continues it.', alike_everywhere=True)
        return ExitStatus.FAILED
    except (EvalError, OutputError, partial.PartialError, ResumeMismatch) as e:  # refused before any attack
        _error(f'error: {e}')
        return ExitStatus.BAD_INPUT
    except CheckError as e:  # a run-time check failed (eps-ball, [0, 1], robust <= clean): no report is written
        _error(f'error: run-time check failed, no report written: {e}')
        return status_of(e)
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, before)


if __name__ == '__main__':
    sys.exit(main())
