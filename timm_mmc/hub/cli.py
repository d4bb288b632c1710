"""``python -m timm_mmc.hub`` (and the ``timm-mmc-hub`` script): export, card, push, table, curve, runs, cache.

Examples::

    python -m timm_mmc.hub export --run runs/mmc --eval results/resnet32_mmc.json --out hub_cards/resnet32_mmc.cifar10
    python -m timm_mmc.hub push hub_cards/resnet32_mmc.cifar10 --repo-id ORG/resnet32_mmc.cifar10 --dry-run
    python -m timm_mmc.hub card hub_cards/resnet32_mmc.cifar10     # re-render README.md, the plot, robustbench.json
    python -m timm_mmc.hub table hub_cards/*/                      # the README's results table
    python -m timm_mmc.hub curve runs/resnet32_mmc.cifar10 --every 5  # a run's learning curve (Markdown)
    python -m timm_mmc.hub runs runs/a runs/b --base resnet32_mmc     # runs in a table: what changed, time, accuracy
    python -m timm_mmc.hub cache hub_cards/resnet32_mmc.cifar10    # install into the local HF cache (offline use)

Exit status (``timm_mmc.ExitStatus``): 0; 2 for bad input or a Hub that refuses or cannot be reached before anything
is uploaded; 1 when the work failed half-way (a file that could not be read or written, an upload that failed after
the repo was created). The message says what to do.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from .cache import build_hf_cache
from .common import CONFIG_FILE, HubError
from .curve import compare_curves, learning_curve
from .push import card_repo, check_release, push
from .release import export, write_side_files
from .runs import runs_table
from .table import results_table

__all__ = ['build_parser', 'main']


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='python -m timm_mmc.hub', description='Release timm-mmc weights: export, card, '
                                'push, results table, local HF cache.',
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    e = sub.add_parser('export', help='build a release folder from a training run and its evaluation report')
    e.add_argument('--run', required=True, help='training run folder (model.safetensors + config.json, ...)')
    e.add_argument('--eval', required=True, help='evaluation report written by python -m eval.robustness')
    e.add_argument('--out', required=True, help='release folder to create, e.g. hub_cards/resnet32_mmc.cifar10')
    e.add_argument('--tag', default=None, help='pretrained tag (cifar10 / cifar100); default: the run\'s data set')
    e.add_argument('--checkpoint', default=None, help='weights to export instead of RUN/model.safetensors')
    e.add_argument('--repo-id', default=None, help='Hub repo the card names (default: the registered hf_hub_id)')
    e.add_argument('--overwrite', action='store_true', help='replace an existing --out folder')
    e.add_argument('--no-plot', action='store_true', help='skip results/robust_accuracy.png')
    e.add_argument('--allow-unverified-eval', action='store_true',
                   help='export although the report\'s weights sha256 is missing or names other weights; the card '
                        'then states that its figures are unverified')
    u = sub.add_parser('push', help='upload a release folder to the Hub')
    u.add_argument('folder')
    u.add_argument('--repo-id', required=True, help='ORG/NAME; the card must name the same repo')
    u.add_argument('--dry-run', action='store_true', help='list what would be uploaded; no network')
    u.add_argument('--private', action='store_true')
    u.add_argument('--revision', default=None, help='branch to push to')
    u.add_argument('--message', default=None, help='commit message')
    c = sub.add_parser('card', help='re-render README.md, the plot and robustbench.json of a release folder')
    c.add_argument('folder')
    c.add_argument('--repo-id', default=None, help='Hub repo the card names (default: keep the current one)')
    t = sub.add_parser('table', help="print the README's results table (Markdown) from release folders")
    t.add_argument('folders', nargs='+')
    v = sub.add_parser('curve', help="print a run's learning curve (Markdown) from its metrics.jsonl")
    v.add_argument('folder', help='a run folder, a release folder or a metrics.jsonl')
    v.add_argument('--every', type=int, default=5, help='one row every N epochs (plus the first, the last and the '
                   "weight average's best)")
    v.add_argument('--against', action='append', default=[], metavar='FOLDER',
                   help='another run (or release) to set beside this one, column by column (repeatable)')
    r = sub.add_parser('runs', help='print training runs as a table (Markdown): what each changed, its time and '
                                    'accuracy')
    r.add_argument('folders', nargs='+', help='run folders, release folders, or a folder of them (runs)')
    r.add_argument('--base', default=None, help='a recipe to name the changes against (default: the first run)')
    k = sub.add_parser('cache', help='install a release folder into the local HF cache (offline use)')
    k.add_argument('folder')
    k.add_argument('--repo-id', default=None, help='default: the repo the card names')
    k.add_argument('--cache-dir', default=None, help='default: HF_HUB_CACHE')
    return p


def _run(args: argparse.Namespace) -> None:
    if args.cmd == 'export':
        export(args.run, args.eval, args.out, tag=args.tag, checkpoint=args.checkpoint, repo_id=args.repo_id,
               overwrite=args.overwrite, plot=not args.no_plot, allow_unverified_eval=args.allow_unverified_eval)
    elif args.cmd == 'push':
        push(args.folder, args.repo_id, dry_run=args.dry_run, private=args.private, revision=args.revision,
             commit_message=args.message)
    elif args.cmd == 'card':
        folder = Path(args.folder)
        if not (folder / CONFIG_FILE).is_file():
            raise HubError(f'{str(folder)!r} is not a release folder (no config.json); run export first.')
        write_side_files(folder, repo_id=args.repo_id)
        print(f'wrote {folder / "README.md"}, its plot and robustbench.json')
    elif args.cmd == 'table':
        print(results_table(args.folders))
    elif args.cmd == 'curve':
        print(compare_curves([args.folder, *args.against], every=args.every) if args.against else
              learning_curve(args.folder, every=args.every))
    elif args.cmd == 'runs':
        print(runs_table(args.folders, base=args.base))
    elif args.cmd == 'cache':
        check_release(Path(args.folder), None)
        repo_id = args.repo_id or card_repo(Path(args.folder))
        snap = build_hf_cache(args.folder, repo_id, args.cache_dir)
        print(f'cached {repo_id} at {snap}')


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status (:class:`~timm_mmc.status.ExitStatus`, as the module
    docstring says)."""
    args = build_parser().parse_args(argv)
    from ..io import ModelLoadError
    from ..status import ExitStatus, status_of
    try:
        _check_output(args)
        _run(args)
    except (HubError, ModelLoadError) as e:
        print(f'error: {e}', file=sys.stderr)
        return status_of(e)
    except OSError as e:  # a file that turned out unreadable or unwritable half-way: say which, without a traceback
        print(f'error: could not read or write {e.filename or "a file"!s} ({e.strerror or e}); check it, or choose a '
              f'folder you can write to.', file=sys.stderr)
        return ExitStatus.FAILED
    return ExitStatus.OK


def _check_output(args: argparse.Namespace) -> None:
    """Before any work: the folder export writes (``--out``) or the cache fills (``--cache-dir``) can be written."""
    target = getattr(args, 'out', None) if args.cmd == 'export' else getattr(args, 'cache_dir', None)
    if target is None:
        return
    path = Path(target).absolute()
    probe = next((p for p in [path, *path.parents] if p.exists()), None)
    if probe is None or not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        flag = '--out' if args.cmd == 'export' else '--cache-dir'
        raise HubError(f'{flag} {str(target)!r} cannot be written ({str(probe)!r} is not a writable folder); choose a '
                       f'folder you can write to.')
