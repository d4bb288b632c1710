"""The model card: ``README.md`` of a release folder, rendered from the folder's own files and the card template.

The prose is package data (``timm_mmc/cards/template.md`` and ``prose.yaml``); this module fills it with facts read
from ``config.json``, ``results/eval.json`` (through :mod:`timm_mmc.report`) and ``training/``. Every accuracy the
card shows comes from the report; the model-index is :func:`timm_mmc.hub.modelindex.eval_results`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..fileio import atomic_write_text
from ..report import EvalReport, fmt_eps
from ..runfolder import METRICS_FILE, EpochRecord, RunError, read_metrics
from .card_eval import eval_tables, pct, subset_text
from .common import (CARD_FILE, CONFIG_FILE, EVAL_FILE, PLOT_FILE, TEMPLATE_PATH, TRAINING_DIR, WEIGHTS_FILE,
                     HubError, dataset_info, default_repo_id, folder_config, head_key, md, norm_dataset, prose,
                     read_report, training_files, wrapped_backbone_text)
from .modelindex import eval_results
from .paper import paper_rows

__all__ = ['render_card', 'write_card', 'nondefault_args', 'weights_match']


def nondefault_args(arch: str, tag: str, model: Any) -> Dict[str, Any]:
    """Model arguments that differ from what ``timm.create_model(arch.tag)`` builds (needed by the named path)."""
    import timm

    default = timm.create_model(f'{arch}.{tag}', pretrained=False).model_args()
    out = {}
    for k, v in model.model_args().items():
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


def weights_match(folder: Path, rep: EvalReport) -> bool:
    """The report's weights hash is this release's ``model.safetensors``."""
    from ..io import file_sha256

    return rep.checkpoint_sha256 is not None and (folder / WEIGHTS_FILE).is_file() and \
        rep.checkpoint_sha256.lower() == file_sha256(folder / WEIGHTS_FILE)


def _training_text(folder: Path, caveat: str, info: Dict[str, Any]) -> str:
    args, summary = training_files(folder)
    lines: List[str] = []
    if args:
        lines += ['The resolved training configuration (`training/args.yaml`, written by `timm_mmc/train.py`):', '',
                  '| option | value |', '| --- | --- |']
        lines += [f'| `{md(k)}` | `{md(v)}` |' for k, v in args.items()]
    else:
        lines.append('The training configuration was not shipped with this release (no `training/args.yaml`).')
    lines.append('')
    facts = []
    if summary.epochs is not None:
        facts.append(f'- Epochs: {summary.epochs}')
    if args.get('init_from'):  # epochs and wall time count this run only, not the training of its starting weights
        sha = prose()['notes']['init_from_sha256'].format(sha256=args['init_from_sha256']) \
            if args.get('init_from_sha256') else ''
        facts.append('- Started from: ' + prose()['notes']['init_from'].format(path=md(args['init_from'])) + sha)
    sel = summary.selected
    if sel:  # every accuracy on the card is the evaluation report's, except the held-out ones
        which = 'weight average (EMA)' if sel.get('weights') == 'ema' else 'last weights'
        tol = sel.get('tolerance') or 0
        key = 'weights_selected' + ('_near' if tol > 0 else '') + ('_clean' if summary.select_on == 'clean' else '')
        facts.append('- Weights: ' + prose()['notes'][key].format(
            epoch=sel.get('epoch'), which=which, robust=pct(sel.get('robust_acc')), clean=pct(sel.get('clean_acc')),
            tolerance=f'{100 * tol:.1f}'))
    elif summary.weights in ('ema', 'last') and (summary.weights == 'ema' or summary.test_acc_ema is not None):
        # which of the two a run with a weight average exported, and what chose it (releases from before it was
        # recorded: the test split)
        chosen = {'heldout': '_heldout', 'recipe': '_recipe'}.get(summary.weights_chosen_on, '')
        facts.append('- Weights: ' + prose()['notes'][f'weights_{summary.weights}{chosen}'])
    if summary.hardware is not None:
        facts.append(f'- Hardware: {md(summary.hardware)}')
    if summary.wall_time_s is not None:
        paused = (', ' + prose()['notes']['wall_time_paused'].format(paused=_duration(summary.paused_time_s))
                  if summary.paused_time_s else '')
        facts.append(f'- Wall time: {_duration(summary.wall_time_s)}{paused}')
    if summary.cpu_time_s is not None:
        facts.append(f'- CPU time of the training process, all threads: {_duration(summary.cpu_time_s)}')
    if summary.versions is not None:
        facts.append(f'- Software: {md(summary.versions)}')
    if facts:
        lines += ['From `training/summary.json`:', ''] + facts
    else:
        lines.append('Hardware and wall time were not recorded with this release (no `training/summary.json`).')
    lines += ['', f'Data set: {info["pretty"]} (official train / test split, laid out like the Hub data set '
                  f'`{info["hf_id"]}`). {caveat}']
    if (folder / TRAINING_DIR / METRICS_FILE).is_file():
        try:
            records = read_metrics(folder / TRAINING_DIR / METRICS_FILE)
        except RunError as e:
            raise HubError(str(e)) from e
        lines += _heldout_curve(records, sel, args.get('holdout'), summary.select_on == 'clean')
        lines += ['', 'Per-epoch training logs are in `training/metrics.jsonl`.']
    return '\n'.join(lines)


def _duration(seconds: float) -> str:
    """``2 h 26 min (8767 s)``: hours and minutes, then the seconds as recorded."""
    h, rem = divmod(int(round(seconds)), 3600)
    return f'{h} h {rem // 60:02d} min ({seconds:g} s)'


def _heldout_curve(records: List[EpochRecord], selected: Any, n: Any, on_clean: bool) -> List[str]:
    """The held-out clean / PGD-10 accuracy of every epoch as a table (none when the run held nothing out)."""
    rows = [r for r in records if r.heldout_clean_acc is not None]
    if not rows:
        return []
    chosen = (selected.get('epoch'), selected.get('weights')) if isinstance(selected, dict) else None
    ema = any(r.robust_acc_ema is not None or r.heldout_clean_acc_ema is not None for r in rows)
    attack = next((r.robust_attack for r in reversed(rows) if r.robust_attack), None)
    note = prose()['notes']['heldout_curve_clean' if on_clean else 'heldout_curve']
    lines = ['', note.format(n=n, attack=md(attack) if attack else 'not measured'), '',
             '| epoch | clean (%) | PGD-10 (%) |' + (' clean, weight average (%) | PGD-10, weight average (%) |'
                                                     if ema else ''),
             '| --- | --- | --- |' + (' --- | --- |' if ema else '')]
    for r in rows:
        cells = [str(r.epoch), pct(r.heldout_clean_acc), pct(r.robust_acc)]
        if ema:
            cells += [pct(r.heldout_clean_acc_ema), pct(r.robust_acc_ema)]
        if chosen and chosen[0] == r.epoch:
            at = 3 if chosen[1] == 'ema' and ema else 1
            mark = 0 if on_clean else 1  # the figure the choice ranked gets the "(exported)"
            cells[at:at + 2] = [f'**{c}** (exported)' if i == mark else f'**{c}**'
                                for i, c in enumerate(cells[at:at + 2])]
        if r.collapse:
            cells[0] += ' (collapse)'
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def _summary(rep: EvalReport, arch: str, head: str, info: Dict[str, Any]) -> str:
    """What the model does under attack, in one paragraph (numbers from the report only)."""
    text = (f'`{arch}` trained on {info["pretty"]} with a `{head}` head, released with its robustness evaluation. '
            f'On {subset_text(rep)} it has **{pct(rep.clean_accuracy)}% clean accuracy**')
    if rep.clean_accuracy_flip_tta is not None:
        text += (f' ({pct(rep.clean_accuracy_flip_tta)}% with flip test-time augmentation, which doubles the forward '
                 f'passes; every other figure is single-pass)')
    attacked = [c for c in rep.columns.values() if c.family not in ('noise', 'rotation', 'cw')]
    if rep.worst_case:
        text += ('; robust accuracy under the whole evaluation suite (per image, the worst case over every Linf '
                 'attack within the budget): ' + ', '.join(f'**{pct(w.accuracy)}% at eps {fmt_eps(w.eps)}**'
                                                          for w in rep.worst_case.values()) + '.')
        if rep.worst_case_slice:
            text += (' Some attacks ran on the first points only; the same worst case on those points: '
                     + ', '.join(f'**{pct(w.accuracy)}% at eps {fmt_eps(w.eps)} (first {w.n})**'
                                 for w in rep.worst_case_slice.values()) + '.')
    elif attacked:
        worst = min(attacked, key=lambda c: c.accuracy)
        text += f'; the strongest attack evaluated ({worst.name}) leaves **{pct(worst.accuracy)}%**.'
    else:
        text += '. **No attack was evaluated: this card makes no robustness claim.**'
    return text + ' Every accuracy in this card is read from `results/eval.json`; see the data caveat below.'


def _provenance(folder: Path, rep: EvalReport) -> str:
    """Whether the report is the evaluation of exactly these weights (its sha256), said plainly."""
    notes = prose()['notes']
    if weights_match(folder, rep):
        return notes['verified'].format(sha=rep.checkpoint_sha256)
    said = f'records weights sha256 `{rep.checkpoint_sha256}`' if rep.checkpoint_sha256 else \
        'records no weights sha256'
    return notes['unverified'].format(said=said)


def _usage(arch: str, tag: str, repo_id: str, default_repo: str, extra_args: Dict[str, Any], pretty: str) -> str:
    kw = ''.join(f', {k}={v!r}' for k, v in extra_args.items())
    if repo_id == default_repo:
        lines = [f'model = timm.create_model("{arch}.{tag}", pretrained=True{kw}).eval()  # from {repo_id}',
                 f'# or: timm.create_model("hf-hub:{repo_id}", pretrained=True)']
    else:
        lines = [f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()']
    lines += ['# or, from a local copy of this repo:',
              f'# timm.create_model("local-dir:path/to/{repo_id.split("/")[-1]}", pretrained=True)',
              'x = torch.rand(8, 3, 32, 32)  # images in [0, 1], no normalisation', 'with torch.no_grad():',
              '    pred = model(x).argmax(1)', f'labels = model.pretrained_cfg["label_names"]  # {pretty} class names']
    return '\n'.join(lines)


def _architecture(model: Any, arch: str) -> str:
    wrapped = wrapped_backbone_text(arch, model.model_args())
    if wrapped:
        return wrapped
    if getattr(model, 'block', 'basic') == 'preact_bottleneck':
        return (f'the MMC authors\' pre-activation bottleneck ResNet of depth {model.depth} (He et al., ECCV 2016), '
                f'which their code calls "resnet32v2"')
    return f'CIFAR ResNet-{model.depth} with basic blocks, 16/32/64 channels (He et al., CVPR 2016)'


def _paper_keys(arch: str, model_args: Dict[str, Any], variant: str) -> List[str]:
    keys = ['pang2020'] + list(prose().get('head_papers', {}).get(variant, []))
    keys.append('he2016identity' if model_args.get('block') == 'preact_bottleneck' or 'v2' in arch else 'he2016')
    return keys + ['croce2020']


def _build(arch: str, model_args: Dict[str, Any], where: Path) -> Any:
    import timm

    try:
        return timm.create_model(arch, pretrained=False, **{k: v for k, v in model_args.items() if v is not None})
    except Exception as e:
        raise HubError(f'{str(where)!r} does not describe a timm-mmc model ({type(e).__name__}: {e}); re-export the '
                       f'release.') from None


def _repo_id(folder: Path, repo_id: Optional[str], default_repo: str) -> str:
    from huggingface_hub import ModelCard

    if repo_id is None and (folder / CARD_FILE).is_file():
        try:
            repo_id = ModelCard.load(folder / CARD_FILE).data.model_name
        except Exception:
            repo_id = None
    return repo_id or default_repo


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
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    cfg, tag = folder_config(folder)
    arch = cfg['architecture']
    if not (folder / EVAL_FILE).is_file():
        raise HubError(f'{str(folder / EVAL_FILE)!r} is missing; export with --eval results/<model>.json.')
    if not TEMPLATE_PATH.is_file():
        raise HubError(f'card template {str(TEMPLATE_PATH)!r} is missing; reinstall timm-mmc (it is package data).')
    rep = read_report(folder / EVAL_FILE)
    dataset = norm_dataset(rep.dataset) or norm_dataset(tag) or tag
    info = dataset_info(dataset)
    model_args = dict(cfg.get('model_args') or {})
    default_repo = default_repo_id(arch, tag, model_args)  # only released tags have an hf_hub_id now
    repo_id = _repo_id(folder, repo_id, default_repo)
    train_args = training_files(folder)[0]
    model = _build(arch, model_args, folder / CONFIG_FILE)
    extra_args = nondefault_args(arch, tag, model) if extra_args is None else extra_args
    head, variant = model_args.get('head', 'mmc'), head_key(model_args)
    caveat = info['caveat_text']
    pgd_row, aa_row, sources, arch_caveat = paper_rows(dataset, arch, model_args, train_args)
    eval_table, eval_notes = eval_tables(rep, pgd_row, aa_row, sources, arch_caveat, caveat)
    text = prose()
    limitations = [s.format(subset=subset_text(rep), caveat=caveat) for s in text['limitations']]
    if extra_args:
        limitations.append(text['notes']['nondefault_args'].format(args=sorted(extra_args)))
    keys = _paper_keys(arch, model_args, variant)
    head_desc = (f'`{head}`, feature dim {model_args.get("feature_dim")}'
                 + (f', center norm C = {model_args.get("center_norm"):g}, centers `{model_args.get("center_kind")}` '
                    f'(fixed, rebuilt from config.json, never stored)' if head in ('mmc', 'mmlda') else '')
                 + (', trainable means' if head == 'lgm' else ''))
    card_data = ModelCardData(
        library_name='timm', license=(cfg.get('pretrained_cfg') or {}).get('license', 'apache-2.0'),
        tags=['image-classification', 'timm', 'timm-mmc', 'pytorch', 'adversarial-robustness', 'max-mahalanobis',
              dataset],
        datasets=[info['hf_id']], metrics=['accuracy'], pipeline_tag='image-classification', model_name=repo_id,
        eval_results=eval_results(rep, dataset))
    meta = [f'suite `{md(rep.suite)}`', f'seed {rep.seed}', f'device {md(rep.device)}' if rep.device else '',
            f'report version {rep.version}']
    return ModelCard.from_template(
        card_data, template_path=str(TEMPLATE_PATH), model_title=f'{arch}.{tag}',
        summary=_summary(rep, arch, head, info), data_caveat=caveat,
        model_description=text['heads'].get(variant, '').format(center_norm=float(model_args.get('center_norm', 10))),
        architecture=arch, arch_description=_architecture(model, arch), head_description=head_desc,
        num_classes=cfg.get('num_classes'), dataset_pretty=info['pretty'],
        num_params=f'{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M',
        paper_list='; '.join(text['papers'][k]['text'] for k in keys) + '.',
        training_text=_training_text(folder, caveat, info), subset=subset_text(rep),
        jpeg=info['caveat'] == 'jpeg', eval_meta=', '.join(m for m in meta if m),
        per_column=any(len(c.attacks) > 1 for c in rep.columns.values()), provenance=_provenance(folder, rep),
        eval_table=eval_table, eval_notes=eval_notes, plot_file=PLOT_FILE if (folder / PLOT_FILE).is_file() else None,
        usage_code=_usage(arch, tag, repo_id, default_repo, extra_args, info['pretty']),
        limitations='\n'.join(f'- {x}' for x in limitations),
        bibtex='\n\n'.join(text['papers'][k]['bibtex'] for k in keys))


def write_card(folder: os.PathLike, repo_id: Optional[str] = None,
               extra_args: Optional[Dict[str, Any]] = None) -> Path:
    """Render and (atomically) write ``README.md`` of a release folder. Returns its path."""
    folder = Path(folder)
    card = render_card(folder, repo_id=repo_id, extra_args=extra_args)
    return atomic_write_text(folder / CARD_FILE, str(card))
