"""Model families; importing registers them with timm (the CIFAR ResNets and ``mmc_wrapper``)."""
from ._pretrained import RELEASED, PretrainedWeightsError, arch_tags, hub_repo_id, released_tags
from .cifar_resnet import CifarResNet
from .wrapper import (WRAPPER_ARCH, MMCWrapper, create_mmc_model, model_display_name, release_name,
                      resolve_model_name)

__all__ = ['RELEASED', 'PretrainedWeightsError', 'arch_tags', 'hub_repo_id', 'released_tags', 'CifarResNet',
           'WRAPPER_ARCH', 'MMCWrapper', 'create_mmc_model', 'model_display_name', 'release_name', 'resolve_model_name']
