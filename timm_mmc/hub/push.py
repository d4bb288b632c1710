"""Uploading a release folder to a Hub model repo, after checking it is whole, safe and consistent.

The repo ends up holding exactly the folder's files. The token comes from the caller, ``HF_TOKEN`` or the login cache,
and is never printed; every Hub error becomes a :class:`HubError` that says what to do.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, List, Optional

from .common import (CARD_FILE, CONFIG_FILE, EVAL_FILE, PICKLE_SUFFIXES, ROBUSTBENCH_FILE, WEIGHTS_FILE, HubError,
                     HubFailed, read_json, read_report)
from .release import self_check
from .robustbench import folder_model_info as robustbench_info

__all__ = ['release_files', 'check_release', 'card_repo', 'push']


def release_files(folder: os.PathLike) -> List[str]:
    """Relative paths (posix) of the files a release folder uploads: everything except hidden files/folders.

    Raises:
        HubError: A symbolic link in the folder (it would upload whatever it points to, e.g. a whole run folder).
    """
    folder = Path(folder)
    out = []
    for p in sorted(folder.rglob('*')):
        rel = p.relative_to(folder)
        if any(part.startswith('.') for part in rel.parts):
            continue
        if p.is_symlink():
            raise HubError(f'{str(p)!r} is a symbolic link; a release folder holds its own files only. Replace it by '
                           f'the file itself or remove it.')
        if p.is_file():
            out.append(rel.as_posix())
    return out


def check_release(folder: Path, repo_id: Optional[str]) -> List[str]:
    """Check a release folder before it leaves this machine (push) or enters a cache.

    It must hold the weights, config, card, report and RobustBench file, no pickle, a card that parses and carries
    exactly the report's numbers (and the RobustBench file likewise), weights that load as users load them, and a
    card naming ``repo_id`` (when given).

    Returns:
        The files to upload.

    Raises:
        HubError: What is wrong, with the command that fixes it.
    """
    from huggingface_hub import ModelCard

    if not folder.is_dir():
        raise HubError(f'{str(folder)!r} is not a release folder; create it with python -m timm_mmc.hub export.')
    files = release_files(folder)
    for need in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE, EVAL_FILE, ROBUSTBENCH_FILE):
        if need not in files:
            raise HubError(f'{str(folder / need)!r} is missing; re-run python -m timm_mmc.hub export (or, for the '
                           f'card, its plot and {ROBUSTBENCH_FILE}: python -m timm_mmc.hub card {folder}).')
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
    read_report(folder / EVAL_FILE)  # a bad report is named as such, not as a stale card
    try:
        self_check(folder)
    except HubError:
        raise HubError(f'{str(folder / CARD_FILE)!r} does not carry exactly the numbers of {EVAL_FILE}; re-render '
                       f'it: python -m timm_mmc.hub card {folder}') from None
    if read_json(folder / ROBUSTBENCH_FILE, 'RobustBench file') != robustbench_info(folder):
        raise HubError(f'{str(folder / ROBUSTBENCH_FILE)!r} does not match {EVAL_FILE}; re-render it: '
                       f'python -m timm_mmc.hub card {folder}')
    _check_weights_load(folder)
    if repo_id is not None and card.data.model_name != repo_id:
        raise HubError(f'the card names repo {card.data.model_name!r}, not {repo_id!r}; re-render it for this repo: '
                       f'python -m timm_mmc.hub card {folder} --repo-id {repo_id}')
    from .card import render_card
    if str(render_card(folder, repo_id=card.data.model_name)) != (folder / CARD_FILE).read_text(encoding='utf-8'):
        raise HubError(f'{str(folder / CARD_FILE)!r} is not what the folder\'s files render (the weights, config, '
                       f'report or training files changed after the card was written, e.g. weights whose sha256 the '
                       f'card does not name); re-export the release, or re-render the card: python -m timm_mmc.hub '
                       f'card {folder}')
    return files


def _check_weights_load(folder: Path) -> None:
    """The folder must load as users will load it: ``timm.create_model('local-dir:...', pretrained=True)``."""
    import timm

    try:
        timm.create_model(f'local-dir:{folder}', pretrained=True)
    except Exception as e:
        raise HubError(f'{str(folder)!r} does not load with timm.create_model("local-dir:...", pretrained=True) '
                       f'({type(e).__name__}: {e}); re-export it.') from None


def card_repo(folder: Path) -> str:
    """The Hub repo a release's card names (``model_name``)."""
    from huggingface_hub import ModelCard

    repo_id = ModelCard.load(folder / CARD_FILE).data.model_name
    if not repo_id:
        raise HubError(f'{str(folder / CARD_FILE)!r} names no repo; pass --repo-id ORG/NAME.')
    return repo_id


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
    files = check_release(folder, repo_id)
    if dry_run:
        log(f'dry run: would create {"private " if private else ""}model repo {repo_id} (if missing) on '
            f'{constants.ENDPOINT} and upload {len(files)} files from {folder}'
            f'{f" to branch {revision}" if revision else ""}:')
        from ..io import file_sha256
        for f in files:
            p = folder / f
            log(f'  {f}  {p.stat().st_size} bytes  sha256 {file_sha256(p)[:16]}')
        log(f'and delete every file of {repo_id} not in this list (the push makes the repo exactly this folder, in '
            f'one commit)')
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
    except Exception as e:
        raise HubError(_describe_hub_error(e, repo_id, token)) from None
    try:  # one commit: every file or none, but the repo now exists (exit status 1)
        info = api.upload_folder(repo_id=url.repo_id, folder_path=str(folder), allow_patterns=files,
                                 delete_patterns=['*'], revision=revision, repo_type='model',
                                 commit_message=commit_message or f'Upload {folder.name} (timm-mmc '
                                                                  f'{timm_mmc.__version__})')
    except Exception as e:
        raise HubFailed(f'{_describe_hub_error(e, repo_id, token)} The repo {url.repo_id} exists now; check what '
                        f'it holds, then push again.') from None
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
