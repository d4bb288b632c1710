"""Export: a training run and its evaluation report become a release folder, checked before it appears.

Everything is written into a temporary folder beside the target and renamed into place at the end, so a failure
leaves no half-written release. The report must be the evaluation of exactly the exported weights (its
``checkpoint_sha256``); ``allow_unverified_eval`` overrides that, and the card then says so.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..fileio import staged_folder
from ..report import EvalReport
from ..runfolder import RunFolder
from .card import nondefault_args, write_card
from .common import (CARD_FILE, CONFIG_FILE, EVAL_FILE, SUMMARY_FILE, TRAINING_DIR, TRAINING_FILES, WEIGHTS_FILE,
                     HubError, default_repo_id, folder_config, norm_dataset, read_json, read_report, read_yaml)
from .plot import write_plot
from .robustbench import write_robustbench

__all__ = ['read_run', 'export', 'self_check', 'write_side_files']


def read_run(run_dir: os.PathLike) -> Dict[str, Any]:
    """Read a training run folder written by ``timm_mmc/train.py``.

    Requires ``model.safetensors`` and ``config.json``; ``args.yaml``, ``summary.json`` and ``metrics.jsonl`` are
    optional, except that a folder with the trainer's checkpoints needs its ``summary.json`` (a finished export).

    Returns:
        ``{'dir', 'config', 'args', 'files'}``; ``files`` maps the optional file names present to paths.

    Raises:
        HubError: Missing folder, weights or config; a run whose export did not finish; unreadable files.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise HubError(f'training run {str(run)!r} is not a folder; pass --run runs/<name> (written by '
                       f'timm_mmc/train.py).')
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (run / name).is_file():
            raise HubError(f'{str(run / name)!r} is missing: a run folder needs model.safetensors and config.json '
                           f'(timm save_for_hf output). Re-run training or its final save step.')
    if RunFolder(run).export_unfinished():  # the trainer writes summary.json last
        raise HubError(f'{str(run)!r} holds checkpoints but no {SUMMARY_FILE}: the run\'s export did not finish, so '
                       f'its {WEIGHTS_FILE} need not be the run\'s final weights. Finish it with python -m '
                       f'timm_mmc.train --output {run} --resume, which exports again.')
    config = read_json(run / CONFIG_FILE, 'config')
    if not isinstance(config, dict) or not config.get('architecture'):
        raise HubError(f'{str(run / CONFIG_FILE)!r} has no "architecture"; it must be timm\'s config.json '
                       f'(save_for_hf).')
    files = {name: run / name for name in TRAINING_FILES if (run / name).is_file()}
    args = read_yaml(files['args.yaml']) if 'args.yaml' in files else {}
    return dict(dir=run, config=config, args=args, files=files)


def _build_model(arch: str, tag: str, model_args: Dict[str, Any], checkpoint: Path) -> Any:
    """Model ``arch.tag`` with ``model_args``, strict-loaded from a safetensors / weights-only checkpoint."""
    import timm

    from ..io import ModelLoadError, check_state_dict_fits, load_state_dict_safe

    try:
        state = load_state_dict_safe(checkpoint)
    except ModelLoadError as e:
        raise HubError(str(e)) from None
    try:
        model = timm.create_model(f'{arch}.{tag}', pretrained=False,
                                  **{k: v for k, v in model_args.items() if v is not None})
    except Exception as e:
        raise HubError(f'could not build {arch}.{tag} from config.json model_args ({type(e).__name__}: {e}).') from None
    try:
        check_state_dict_fits(model, state, checkpoint, f'{arch} with the run\'s model_args')
    except ModelLoadError as e:
        raise HubError(f'{e} Export the run folder whose config.json matches these weights.') from None
    model.load_state_dict(state)
    return model.eval()


def _holds_the_run_weights(model: Any, run_weights: Path) -> bool:
    """Whether ``model`` (built from ``--checkpoint``) has exactly the weights of the run's own export (False when
    that file cannot be read: nothing then ties the run's figures to these weights)."""
    from ..io import ModelLoadError, load_state_dict_safe

    try:
        theirs = load_state_dict_safe(run_weights)
    except ModelLoadError:
        return False
    ours = model.state_dict()
    return theirs.keys() == ours.keys() and all(theirs[k].equal(ours[k]) for k in ours)


def _training_files(run: Dict[str, Any], model: Any, checkpoint: Optional[os.PathLike],
                    log: Callable[[str], None]) -> Dict[str, Path]:
    """The run's files the release carries. ``summary.json`` describes the run's own ``model.safetensors`` (which
    weights, their clean accuracy, the epoch chosen): a ``--checkpoint`` of other weights leaves it out, so that
    neither the card nor the README table states it of weights it does not describe."""
    files = dict(run['files'])
    other = checkpoint is not None and not _holds_the_run_weights(model, run['dir'] / WEIGHTS_FILE)
    if other and SUMMARY_FILE in files:
        del files[SUMMARY_FILE]
        log(f'note: --checkpoint holds other weights than {run["dir"] / WEIGHTS_FILE}, so the run\'s {SUMMARY_FILE} '
            f'(which weights, their accuracy, hardware and wall time) is left out of the release; args.yaml and the '
            f'training curve are kept.')
    return files


def _resolve_tag(arch: str, tag: Optional[str], run: Dict[str, Any], rep: EvalReport) -> str:
    import timm

    from ..models import arch_tags

    if not timm.is_model(arch):
        raise HubError(f'config.json names architecture {arch!r}, which timm_mmc does not register; see '
                       f'timm.list_models("resnet*_mmc") and timm.list_models("mmc_wrapper").')
    run_ds, eval_ds = norm_dataset(run['args'].get('dataset')), norm_dataset(rep.dataset)
    adv = run['args'].get('adv')  # None for runs without args.yaml: nothing to check the tag against
    suffix = '_at' if adv not in (None, 'none') else ''
    given = tag
    tag = next((c for c in (tag, run_ds and run_ds + suffix, eval_ds and eval_ds + suffix,
                            (run['config'].get('pretrained_cfg') or {}).get('tag')) if c), None)
    if given and adv is not None and given.endswith('_at') != bool(suffix):
        raise HubError(f'--tag {given} does not fit the run: it was trained with adv {adv!r}, so its tag is '
                       f'{"an _at one (e.g. cifar10_at)" if suffix else "a standard one (e.g. cifar10)"}; an '
                       f'adversarially trained release must never replace a standard one, nor the other way round.')
    known = arch_tags(arch)  # every registered tag: a release may be the first of its tag
    if suffix and tag not in known:
        raise HubError(f'the run was adversarially trained (adv {adv!r}), but {arch} has no adversarially trained tag '
                       f'(its tags: {known}); a release under a standard tag would pass for a standard model. Register '
                       f'an _at tag for it (timm_mmc/models/cifar_resnet.py, _AT_ARCHS) first.')
    if tag not in known:
        raise HubError(f'cannot tell which pretrained tag {arch} gets (found {tag!r}); pass --tag, one of {known}.')
    for what, ds in (('training args.yaml', run_ds), ('evaluation report', eval_ds)):
        if ds and ds != norm_dataset(tag):
            raise HubError(f'the {what} says dataset {ds!r} but the release tag is {tag!r}; pass the matching '
                           f'--run / --eval / --tag.')
    return tag


def _check_eval_model(rep: EvalReport, name: str) -> None:
    """The report's model, where it names one (``resnet32_mmc``, ``resnet18+mmc``, a release folder), is ``name``."""
    from ..models import model_display_name, resolve_model_name

    given = rep.model.split(':', 1)[-1].rstrip('/').split('/')[-1].split('.')[0]
    try:
        timm_name, args = resolve_model_name(given)
    except ValueError:
        return  # a run folder or file name that names no model
    if model_display_name(timm_name.split('.', 1)[0], args) != name:
        raise HubError(f'the evaluation report is for model {rep.model!r}, not {name!r}; evaluate this run with '
                       f'python -m eval.robustness and pass that report.')


def _check_eval_weights(rep: EvalReport, source: Path, exported: Path, allow_unverified: bool) -> Optional[str]:
    """The report's ``checkpoint_sha256`` must be the exported weights' (the card ties its figures to those bytes;
    the run folder's ``model.safetensors`` re-saves to the same bytes, a checkpoint with another layout does not).

    Returns:
        None when verified, else what is wrong (only with ``allow_unverified``).

    Raises:
        HubError: A missing or different hash without ``allow_unverified``.
    """
    from ..io import file_sha256

    sha = rep.checkpoint_sha256
    if sha is not None and sha.lower() == file_sha256(exported):
        return None
    if sha is not None and sha.lower() == file_sha256(source):
        if allow_unverified:  # the card ties figures to the released file's bytes, which differ from the source's
            return (f'the evaluation report names {str(source)!r}, whose bytes differ from the released '
                    f'model.safetensors (another key layout or metadata), so the card cannot tie its figures to them')
        raise HubError(f'the evaluation report names {str(source)!r}, but the release re-saves it as other bytes '
                       f'(another key layout or metadata), so the card could not tie its figures to the released '
                       f'file. Export once with --allow-unverified-eval to a scratch folder, evaluate that folder '
                       f'(python -m eval.robustness --model local-dir:FOLDER ...) and export again with that report; '
                       f'or export from the run folder whose model.safetensors was evaluated.')
    problem = (f'the evaluation report was computed on other weights (sha256 {sha[:12]}...) than {str(source)!r}'
               if sha else 'the evaluation report records no weights sha256, so it cannot be tied to these weights')
    if not allow_unverified:
        raise HubError(f'{problem}; evaluate these weights (python -m eval.robustness --model local-dir:RUN) and pass '
                       f'that report, or pass --allow-unverified-eval to export anyway (the card will say the '
                       f'figures are unverified).')
    return problem


def _verify_weights(path: Path, model: Any) -> None:
    from safetensors.torch import load_file

    saved = load_file(str(path))
    own = model.state_dict()
    if set(saved) != set(own) or any(not saved[k].equal(own[k].cpu()) for k in own):
        raise HubError(f'internal error: {path} does not hold the model\'s weights; nothing was exported.')


def self_check(folder: Path) -> None:
    """The card must parse back and carry exactly the report's numbers (in any order the model-index groups them)."""
    from huggingface_hub import ModelCard

    from .modelindex import eval_results

    card = ModelCard.load(folder / CARD_FILE)
    dataset = norm_dataset(read_report(folder / EVAL_FILE).dataset) or norm_dataset(folder_config(folder)[1])
    expected = eval_results(read_report(folder / EVAL_FILE), dataset)
    key = (lambda r: repr(sorted(vars(r).items())))
    if sorted(map(key, card.data.eval_results or [])) != sorted(map(key, expected)):
        raise HubError('internal error: the rendered card\'s model-index differs from the evaluation report; '
                       'nothing was written.')


def write_side_files(folder: Path, repo_id: Optional[str] = None, extra_args: Optional[Dict[str, Any]] = None,
                     plot: bool = True, name: Optional[str] = None) -> None:
    """(Re)write everything a release derives from its report: the plot, the RobustBench file, the card. ``name``:
    the release's name where ``folder`` is not yet its final place (default the folder's name)."""
    if plot:
        write_plot(folder, name)
    write_robustbench(folder)
    write_card(folder, repo_id=repo_id, extra_args=extra_args)


def _files_not_in(old: Path, new: Path) -> List[str]:
    """Release files of the folder ``old`` (when it exists) that ``new`` does not have."""
    from .push import release_files
    return sorted(set(release_files(old)) - set(release_files(new))) if old.is_dir() else []


def export(run_dir: os.PathLike, eval_path: os.PathLike, out_dir: os.PathLike, *, tag: Optional[str] = None,
           checkpoint: Optional[os.PathLike] = None, repo_id: Optional[str] = None, overwrite: bool = False,
           plot: bool = True, allow_unverified_eval: bool = False, log: Callable[[str], None] = print) -> Path:
    """Build a release folder (the exact content of a Hub repo) from a training run and its evaluation report.

    Args:
        run_dir: Training run folder (``model.safetensors`` + ``config.json``; optional ``args.yaml``,
            ``summary.json``, ``metrics.jsonl``).
        eval_path: Evaluation report from ``python -m eval.robustness`` for these weights.
        out_dir: Release folder to create, named as its Hub repo (:func:`timm_mmc.models.release_name`): e.g.
            ``hub_cards/resnet32_mmc.cifar10``, ``hub_cards/resnet18-mmc.cifar10`` for ``resnet18+mmc``.
        tag: Pretrained tag (``cifar10`` / ``cifar100`` / ``cifar10_at``); by default from the run's data set.
        checkpoint: Weights to export instead of ``run_dir/model.safetensors`` (safetensors, or a ``.pth`` read with
            ``torch.load(weights_only=True)``; a pickle that would run code is refused).
        repo_id: Hub repo the card's usage names; default the model's registered ``hf_hub_id``.
        overwrite: Replace an existing ``out_dir``. The folder is the export's alone: files in it that this export
            does not write are dropped, and the log names them.
        plot: Write ``results/robust_accuracy.png``.
        allow_unverified_eval: Export even when the report's weights hash is missing or names other weights; the
            card then states that its figures are not verified against these weights.
        log: Where progress lines go.

    Returns:
        The release folder.

    Raises:
        HubError: Bad or inconsistent input; nothing is left behind.
    """
    from timm.models import save_for_hf

    from ..models import model_display_name

    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise HubError(f'{str(out)!r} exists; pass --overwrite to replace it or choose another --out.')
    run = read_run(run_dir)
    rep = read_report(eval_path)
    arch = run['config']['architecture']
    tag = _resolve_tag(arch, tag, run, rep)
    weights = Path(checkpoint) if checkpoint is not None else run['dir'] / WEIGHTS_FILE
    model_args = dict(run['config'].get('model_args') or {})
    model_args.setdefault('num_classes', run['config'].get('num_classes'))
    model_name = model_display_name(arch, model_args)
    _check_eval_model(rep, model_name)
    model = _build_model(arch, tag, model_args, weights)
    default_repo = default_repo_id(arch, tag, model_args)
    extra_args = nondefault_args(arch, tag, model)
    with staged_folder(out) as tmp:  # the old folder stays until the new one is complete and checked
        labels = run['config'].get('label_names') or model.pretrained_cfg.get('label_names')  # the data's, or the tag's
        model_config = {'label_names': list(labels)} if labels and len(labels) == model.num_classes else None
        save_for_hf(model, str(tmp), model_config=model_config, model_args=model.model_args(),
                    safe_serialization=True)
        _verify_weights(tmp / WEIGHTS_FILE, model)
        unverified = _check_eval_weights(rep, weights, tmp / WEIGHTS_FILE, allow_unverified_eval)
        (tmp / 'results').mkdir()
        shutil.copyfile(eval_path, tmp / EVAL_FILE)
        files = _training_files(run, model, checkpoint, log)
        if files:
            (tmp / TRAINING_DIR).mkdir()
            for name, path in files.items():
                shutil.copyfile(path, tmp / TRAINING_DIR / name)
        write_side_files(tmp, repo_id=repo_id or default_repo, extra_args=extra_args, plot=plot, name=out.name)
        self_check(tmp)
        dropped = _files_not_in(out, tmp)
    if dropped:
        log(f'note: --overwrite dropped {len(dropped)} file(s) of the old {out} that this export does not write: '
            f'{", ".join(dropped)} (they are in git history or your backup; keep such files outside release folders)')
    if unverified:
        log(f'WARNING: {unverified}; exported anyway (--allow-unverified-eval) and the card says its figures are '
            f'unverified.')
    if out.name != default_repo.split('/')[-1]:
        log(f'note: the release of {model_name}.{tag} is named {default_repo.split("/")[-1]} (its Hub repo '
            f'{default_repo}); this folder is {out.name}.')
    if extra_args:
        log(f'note: this model differs from the registered {arch}.{tag} defaults in {sorted(extra_args)}; '
            f'timm.create_model("{arch}.{tag}", pretrained=True) needs them as keyword arguments (the card says so), '
            f'hf-hub: and local-dir: read them from config.json.')
    if (repo_id or default_repo) != default_repo:
        log(f'note: timm.create_model("{arch}.{tag}", pretrained=True) downloads from {default_repo}; this card '
            f'names {repo_id}, reachable as hf-hub:{repo_id}.')
    from .push import release_files
    log(f'exported {model_name}.{tag} to {out}: ' + ', '.join(release_files(out)))
    return out
