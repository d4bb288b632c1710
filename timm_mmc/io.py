"""Safe weight loading and one model resolver for every command line.

Weights come only from safetensors or ``torch.load(weights_only=True)``: a pickle that would run code is refused
before anything of it runs. ``load_model`` accepts what users type: a registered name (``resnet32_mmc``, optionally
``.tag`` and ``pretrained=True``; ``BACKBONE+HEAD`` such as ``resnet18+mmc`` for an MM head on a timm backbone),
``hf-hub:org/repo``, ``local-dir:path``, or a name plus a checkpoint file. The model arguments of a checkpoint
come from the ``config.json`` beside it (what exports write) or, for the weights a training run keeps in its
checkpoints and ``best/``, from the same config in the file's safetensors metadata (:func:`config_metadata`). A
Max-Mahalanobis head's centers are never stored in the weights, so a file with neither is loaded with the head the
name implies, and :func:`load_model` warns that the figures are only right if it was trained with that head.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

__all__ = ['UnsafeCheckpointError', 'load_state_dict_safe', 'load_model', 'file_sha256', 'ModelLoadError',
           'check_state_dict_fits', 'checkpoint_config', 'config_metadata', 'CONFIG_METADATA_KEY',
           'HeadFromNameWarning', 'unwrap_training_state', 'NamedWeights', 'load_named_weights']

CONFIG_METADATA_KEY = 'timm_mmc.config'  # safetensors metadata: the JSON of config.json's architecture and arguments
WEIGHTS_NAME = 'model.safetensors'  # the weights file of an export, a release and a Hub repo


class ModelLoadError(ValueError):
    """A model or checkpoint that cannot be loaded as asked; the message says how to fix it."""


class HeadFromNameWarning(UserWarning):
    """A checkpoint that does not say its head's arguments: the head was built from the model name alone."""


class UnsafeCheckpointError(ModelLoadError):
    """A checkpoint whose unpickling would execute code (refused without running it)."""


def file_sha256(path: os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def load_state_dict_safe(path: os.PathLike) -> Dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or, for other files, ``torch.load(weights_only=True)``.

    Accepts a full training checkpoint dict that holds the weights under ``state_dict`` or ``model``.

    Raises:
        ModelLoadError: Missing file or not a state dict.
        UnsafeCheckpointError: A pickle that needs code execution (``weights_only`` refused it).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f'checkpoint {str(path)!r} does not exist.')
    if path.suffix == '.safetensors':
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as e:  # SafetensorError, OSError: truncated, not safetensors at all, unreadable
            raise ModelLoadError(f'{str(path)!r} is not a readable safetensors file ({type(e).__name__}: {e}); it may '
                                 f'be truncated or of another format: download or export it again.') from e
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f'refused to load {str(path)!r}: it is a pickle that would run code on loading ({e}). '
            f'Convert it to safetensors in an environment you trust.') from e
    except Exception as e:
        raise ModelLoadError(f'could not read checkpoint {str(path)!r}: {type(e).__name__}: {e}') from e
    if isinstance(obj, dict):
        for key in ('state_dict', 'model', 'model_state_dict'):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f'{str(path)!r} does not hold a state dict of tensors.')
    return {k.removeprefix('module.'): v for k, v in obj.items()}


def check_state_dict_fits(model: nn.Module, state: Dict[str, torch.Tensor], source: Any, spec: str) -> None:
    """Raise :class:`ModelLoadError` unless ``state`` has exactly the keys and shapes of ``model``'s state dict."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = []
        if wrong:
            k = wrong[0]
            detail.append(f'{len(wrong)} shape mismatches (e.g. {k}: checkpoint {tuple(state[k].shape)}, model '
                          f'{tuple(own[k].shape)})')
        if missing:
            detail.append(f'{len(missing)} missing keys (e.g. {missing[0]})')
        if unexpected:
            detail.append(f'{len(unexpected)} unexpected keys (e.g. {unexpected[0]})')
        raise ModelLoadError(f'checkpoint {str(source)!r} does not fit {spec!r}: {"; ".join(detail)}. '
                             f'Pass the architecture and num_classes it was trained with.')


def unwrap_training_state(state: Dict[str, torch.Tensor], own: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """Training checkpoints hold ``model.*`` (and the loss's ``loss_fn.*``): keep the model's part."""
    if own and not any(k in own for k in state) and any(k.startswith('model.') for k in state):
        return {k[len('model.'):]: v for k, v in state.items() if k.startswith('model.')}
    return state


def config_metadata(model: nn.Module) -> Dict[str, str]:
    """Safetensors metadata that makes a weights file self-describing: what ``config.json`` would say of ``model``
    (architecture, class count, model arguments), read back by :func:`checkpoint_config`."""
    config = dict(architecture=model.pretrained_cfg.get('architecture'), num_classes=model.num_classes,
                  model_args=model.model_args())
    return {'format': 'pt', CONFIG_METADATA_KEY: json.dumps(config)}


def _metadata_config(checkpoint: Path) -> Optional[str]:
    if checkpoint.suffix != '.safetensors' or not checkpoint.is_file():
        return None
    from safetensors import safe_open
    try:
        with safe_open(str(checkpoint), framework='pt') as f:
            return (f.metadata() or {}).get(CONFIG_METADATA_KEY)
    except Exception:  # an unreadable file fails, with its own message, when its weights are read
        return None


def checkpoint_config(checkpoint: os.PathLike) -> Optional[Dict[str, Any]]:
    """The timm ``config.json`` beside a checkpoint file, else the same config in its safetensors metadata; None
    when it has neither."""
    cfg = Path(checkpoint).parent / 'config.json'
    where = f'{str(cfg)!r} beside the checkpoint'
    try:
        if cfg.is_file():
            with open(cfg) as f:
                data = json.load(f)
        else:
            text = _metadata_config(Path(checkpoint))
            if text is None:
                return None
            where = f'the {CONFIG_METADATA_KEY!r} metadata of {str(checkpoint)!r}'
            data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f'{where} is not readable JSON ({type(e).__name__}: {e}); fix or remove it (it supplies '
                             f'the model arguments).') from e
    if not isinstance(data, dict) or not isinstance(data.get('model_args', {}), dict):
        raise ModelLoadError(f'{where} is not a timm config (a JSON object whose model_args is an object); fix or '
                             f'remove it.')
    return data


def _config_model_args(cfg: Optional[Dict[str, Any]], checkpoint: Path, spec: str, arch: str,
                       name_args: Dict[str, Any]) -> Dict[str, Any]:
    """The model arguments of a checkpoint's config (:func:`checkpoint_config`), checked against the name given."""
    from .models import model_display_name

    if cfg is None:
        return {}
    args = {k: v for k, v in dict(cfg.get('model_args', {}), num_classes=cfg.get('num_classes')).items()
            if v is not None}
    saved = cfg.get('architecture')
    if saved:
        try:
            saved_name, asked = model_display_name(saved, args), model_display_name(arch, name_args)
        except ValueError as e:
            raise ModelLoadError(f'{str(checkpoint.parent / "config.json")!r}: {e}; fix model_args there or remove '
                                 f'the file.') from None
        if saved_name != asked:
            raise ModelLoadError(f'checkpoint {str(checkpoint)!r} is a {saved_name!r} (its config.json says so), not '
                                 f'a {spec.split(".", 1)[0]!r}; pass --model {saved_name}.')
    return args


def load_model(spec: str, checkpoint: Optional[os.PathLike] = None, pretrained: bool = False,
               **kwargs: Any) -> nn.Module:
    """Build a model from what a user typed and load its weights.

    Args:
        spec: ``name[.tag]`` (a registered name, or ``BACKBONE+HEAD`` for an MM head on a timm backbone, see
            :func:`timm_mmc.models.resolve_model_name`), ``hf-hub:org/repo`` or ``local-dir:path``.
        checkpoint: A weights file for ``spec`` (safetensors preferred).
        pretrained: Load the registered pretrained weights of ``name[.tag]``.
        **kwargs: Extra model arguments (e.g. ``num_classes``).

    Raises:
        ModelLoadError: Unknown model, missing file, or a checkpoint of another architecture / class count.
    """
    import timm

    from .models import resolve_model_name  # importing it registers the models

    if spec.startswith(('hf-hub:', 'local-dir:')):
        if checkpoint is not None:
            raise ModelLoadError(f'{spec!r} already names its weights; drop --checkpoint or give a model name.')
        if spec.startswith('local-dir:'):
            folder = Path(spec.split(':', 1)[1])
            if not folder.is_dir():
                raise ModelLoadError(f'{spec!r}: no such folder; local-dir: takes a folder with config.json and '
                                     f'model.safetensors.')
            check_run_exported(folder)
        try:
            return timm.create_model(spec, pretrained=True, **kwargs)
        except Exception as e:
            raise ModelLoadError(f'could not load {spec!r}: {type(e).__name__}: {e}') from e
    try:
        timm_name, name_args = resolve_model_name(spec)
    except ValueError as e:
        raise ModelLoadError(str(e)) from None
    arch = timm_name.split('.', 1)[0]
    if checkpoint is None:
        try:
            return timm.create_model(timm_name, pretrained=pretrained, **name_args, **kwargs)
        except Exception as e:
            raise ModelLoadError(f'could not create {spec!r}: {type(e).__name__}: {e}') from e
    checkpoint = Path(checkpoint)
    state = load_state_dict_safe(checkpoint)
    saved = checkpoint_config(checkpoint)
    args = dict(_config_model_args(saved, checkpoint, spec, arch, name_args), **name_args)
    args.update(kwargs)
    try:
        model = timm.create_model(timm_name, pretrained=False, **args)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f'cannot build {spec!r} with the model_args of {str(checkpoint.parent / "config.json")!r} '
                             f'({type(e).__name__}: {e}); fix model_args there or remove the file.') from e
    state = unwrap_training_state(state, model.state_dict())
    check_state_dict_fits(model, state, checkpoint, spec)
    model.load_state_dict(state)
    head = getattr(getattr(model, 'head_config', None), 'head', 'linear')
    if head != 'linear' and saved is None:
        warnings.warn(f'{str(checkpoint)!r} has no config.json beside it and no model config in its metadata: its '
                      f'{head} head (centers, their norm and seed) was built from the name {spec!r}, since centers '
                      f'are never stored in weights. If it was trained with other head arguments every figure is '
                      f'wrong; put the run\'s config.json beside the file.', HeadFromNameWarning, stacklevel=2)
    return model


@dataclass
class NamedWeights:
    """Weights named the way a user names them (:func:`load_named_weights`), with what is known of where they came
    from."""
    state: Dict[str, torch.Tensor]  # the model's state dict (a run checkpoint's loss part already dropped)
    config: Optional[Dict[str, Any]]  # architecture, num_classes, model_args, where the weights say them
    sha256: Optional[str]  # of the weights file, when there is one to hash (a Hub release: its cached file)


def _hub_file(model: nn.Module) -> Optional[Path]:
    """The cached ``model.safetensors`` a model built with ``pretrained=True`` from the Hub was loaded from."""
    from huggingface_hub import try_to_load_from_cache

    repo = (getattr(model, 'pretrained_cfg', None) or {}).get('hf_hub_id')
    found = try_to_load_from_cache(repo, WEIGHTS_NAME) if repo else None
    return Path(found) if isinstance(found, str) else None


def check_run_exported(folder: Path) -> None:
    """Refuse a training run folder whose export has not finished (its ``model.safetensors``, if any, need not be the
    run's final weights); any other folder passes."""
    from .runfolder import RunFolder  # runfolder's own imports reach this module's importers
    if RunFolder(folder).export_unfinished():
        raise ModelLoadError(f'{str(folder)!r} is a training run whose export has not finished (checkpoints, no '
                             f'summary.json): finish it with python -m timm_mmc.train --output {folder} --resume, or '
                             f'give one of its checkpoints\' files.')


def load_named_weights(spec: str) -> NamedWeights:
    """The weights of a file, a folder, or a release, for training to start from (``--init-from``).

    Args:
        spec: A weights file (safetensors, or a weights-only ``.pth``; a run's checkpoint too), a folder holding
            ``model.safetensors`` (a release or finished run folder; ``local-dir:FOLDER`` says the same),
            ``hf-hub:org/repo``, or a released model name such as ``resnet32_mmc.cifar10``.

    Raises:
        ModelLoadError: Nothing loadable by that name; the message says what is accepted.
    """
    path = Path(spec.split(':', 1)[1] if spec.startswith('local-dir:') else spec)
    if path.is_dir():
        check_run_exported(path)
        path = path / WEIGHTS_NAME
        if not path.is_file():
            raise ModelLoadError(f'{spec!r} is a folder without model.safetensors; give a release or finished run '
                                 f'folder, or the weights file itself.')
    if path.is_file():
        return NamedWeights(load_state_dict_safe(path), checkpoint_config(path), file_sha256(path))
    accepted = ('give a weights file, a release or run folder, hf-hub:ORG/REPO, or a released name with its tag '
                '(e.g. resnet32_mmc.cifar10)')
    if not spec.startswith('hf-hub:') and ('/' in spec or spec.startswith('local-dir:') or
                                           path.suffix in ('.safetensors', '.pth', '.pt', '.bin')):
        raise ModelLoadError(f'{spec!r}: no such file or folder; {accepted}.')
    try:
        model = load_model(spec, pretrained=True)
    except ModelLoadError as e:
        raise ModelLoadError(f'{spec!r} is no file or folder here, and as a model: {e} ({accepted})') from e
    config = dict(architecture=model.pretrained_cfg.get('architecture'), num_classes=model.num_classes,
                  model_args=model.model_args())
    file = _hub_file(model)
    return NamedWeights(model.state_dict(), config, file_sha256(file) if file is not None else None)
