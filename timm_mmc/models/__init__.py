"""Model families; importing registers them with timm."""
from ._pretrained import RELEASED, PretrainedWeightsError, arch_tags, hub_repo_id, released_tags
from .cifar_resnet import CifarResNet
from .wrapper import (MMCWrapper, create_mmc_model, model_display_name, release_name, resolve_model_name,
                      WRAPPER_ARCH)
