"""Where a timm_mmc model's pretrained weights come from, and a clear error when they cannot be had.

timm lists a tag in ``timm.list_pretrained`` exactly when its cfg names a source (``hf_hub_id``, ``url`` or ``file``),
so only tags with released weights (:data:`RELEASED`) get an ``hf_hub_id``; the other tags stay creatable with
``pretrained=False``. timm itself answers ``pretrained=True`` without a source with a warning and random weights, and
an unreachable Hub with an error that names neither the repo nor a way out. :func:`build_pretrained` instead looks for
an unreleased tag in its conventional repo (``timm-mmc/<release name>``: found once ``python -m timm_mmc.hub cache``
put a release folder into the HF cache, or once it is published) and raises a :class:`PretrainedWeightsError` that
says what to do when the weights cannot be had.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable

from timm.models import build_model_with_cfg, get_arch_pretrained_cfgs, resolve_pretrained_cfg

__all__ = ['HUB_NAMESPACE', 'RELEASED', 'CIFAR10_LABELS', 'CIFAR100_LABELS', 'PretrainedWeightsError', 'hub_repo_id',
           'build_pretrained', 'arch_tags', 'released_tags']

HUB_NAMESPACE = 'timm-mmc'
# the release folders in the repository's hub_cards/ (ARCH.TAG): the only tags with weights, once pushed on the Hub
RELEASED = ('resnet32_sce.cifar10', 'resnet32_mmlda.cifar10', 'resnet32_mmc.cifar10', 'resnet32_sce.cifar10_at',
            'resnet32_mmc.cifar10_at')


# the class names of the data sets the tags name, in label order (every model family's pretrained cfgs)
CIFAR10_LABELS = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
CIFAR100_LABELS = (
    'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle', 'bicycle', 'bottle', 'bowl', 'boy',
    'bridge', 'bus', 'butterfly', 'camel', 'can', 'castle', 'caterpillar', 'cattle', 'chair', 'chimpanzee', 'clock',
    'cloud', 'cockroach', 'couch', 'crab', 'crocodile', 'cup', 'dinosaur', 'dolphin', 'elephant', 'flatfish',
    'forest', 'fox', 'girl', 'hamster', 'house', 'kangaroo', 'keyboard', 'lamp', 'lawn_mower', 'leopard', 'lion',
    'lizard', 'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain', 'mouse', 'mushroom', 'oak_tree', 'orange',
    'orchid', 'otter', 'palm_tree', 'pear', 'pickup_truck', 'pine_tree', 'plain', 'plate', 'poppy', 'porcupine',
    'possum', 'rabbit', 'raccoon', 'ray', 'road', 'rocket', 'rose', 'sea', 'seal', 'shark', 'shrew', 'skunk',
    'skyscraper', 'snail', 'snake', 'spider', 'squirrel', 'streetcar', 'sunflower', 'sweet_pepper', 'table', 'tank',
    'telephone', 'television', 'tiger', 'tractor', 'train', 'trout', 'tulip', 'turtle', 'wardrobe', 'whale',
    'willow_tree', 'wolf', 'woman', 'worm')


class PretrainedWeightsError(RuntimeError):
    """``pretrained=True`` for weights that are not released, or not reachable; the message names the way out."""


def hub_repo_id(release_name: str) -> str:
    """The Hub repo of a release folder name (``resnet32_mmc.cifar10`` -> ``timm-mmc/resnet32_mmc.cifar10``)."""
    return f'{HUB_NAMESPACE}/{release_name}'


def _hub_errors() -> tuple:
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled
    return EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled


def _error_text(error: BaseException) -> str:
    first = str(error).splitlines()[0] if str(error) else ''
    return f'{type(error).__name__}: {first}'


def _no_weights_message(name: str, arch: str, repo_id: str, error: BaseException) -> str:
    tags = [n for n in RELEASED if n.split('.', 1)[0] == arch]
    released = f'{arch} has {", ".join(tags)}' if tags else f'released: {", ".join(RELEASED)}'
    return (f'{name} has no released weights ({released}; timm.list_pretrained() lists them), and its repo {repo_id} '
            f'is neither in the local Hugging Face cache nor reachable ({_error_text(error)}). Build it with '
            f'pretrained=False and train it (python -m timm_mmc.train --model ...), or load weights you have: '
            f'`python -m timm_mmc.hub cache FOLDER` puts a release folder into the HF cache, '
            f'timm.create_model("local-dir:FOLDER", pretrained=True) loads one directly, '
            f'pretrained_cfg_overlay=dict(file="model.safetensors") loads a weights file.')


def _unreachable_message(name: str, repo_id: str, release_name: str, error: BaseException) -> str:
    return (f'the pretrained weights of {name} are the Hub repo {repo_id}, which is not in the local Hugging Face '
            f'cache and could not be fetched ({_error_text(error)}). Until it is published (or without a network), '
            f'use the release folder hub_cards/{release_name} of the timm-mmc repository: '
            f'`python -m timm_mmc.hub cache hub_cards/{release_name}` fills the HF cache so '
            f'that this call works offline (HF_HUB_OFFLINE=1), or load it directly with '
            f'timm.create_model("local-dir:hub_cards/{release_name}", pretrained=True).')


def build_pretrained(model_cls: Callable[..., Any], variant: str, pretrained: bool, release_name: Callable[[str], str],
                     display_name: str, **kwargs: Any) -> Any:
    """timm's ``build_model_with_cfg`` with an error that names the way out when the weights cannot be had.

    Args:
        model_cls: The model class.
        variant: The registered architecture.
        pretrained: Load weights from the resolved pretrained cfg.
        release_name: Maps the resolved tag to the release folder / Hub repo name (``ARCH.TAG``).
        display_name: The model's name in messages (``resnet32_mmc``, ``resnet18+mmc``).
        **kwargs: ``build_model_with_cfg`` arguments and model arguments (``pretrained_cfg`` may be a tag or cfg).

    Raises:
        PretrainedWeightsError: ``pretrained=True`` for a tag without released weights, or a Hub repo that is neither
            reachable nor cached.
    """
    if not pretrained:
        return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get('pretrained_cfg'),
                                 pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay'))
    name = release_name(cfg.tag or '')
    if not (cfg.has_weights or cfg.state_dict is not None):  # not released: its repo, if cached or published since
        kwargs['pretrained_cfg_overlay'] = dict(kwargs.get('pretrained_cfg_overlay') or {}, hf_hub_id=hub_repo_id(name))
        cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get('pretrained_cfg'),
                                     pretrained_cfg_overlay=kwargs['pretrained_cfg_overlay'])
    from_hub = cfg.hf_hub_id and not cfg.file and not cfg.url and cfg.state_dict is None
    try:
        return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    except _hub_errors() as e:
        if not from_hub:
            raise
        if name not in RELEASED:
            raise PretrainedWeightsError(_no_weights_message(f'{display_name}.{cfg.tag}', variant, cfg.hf_hub_id,
                                                             e)) from e
        raise PretrainedWeightsError(_unreachable_message(f'{display_name}.{cfg.tag}', cfg.hf_hub_id, name, e)) from e


def arch_tags(arch: str) -> Iterable[str]:
    """Every registered tag of an architecture, with or without weights."""
    return [name.split('.', 1)[-1] for name in get_arch_pretrained_cfgs(arch)]


def released_tags(arch: str) -> Dict[str, str]:
    """``{tag: hub repo id}`` of the released tags of an architecture."""
    return {n.split('.', 1)[1]: hub_repo_id(n) for n in RELEASED if n.split('.', 1)[0] == arch}
