"""timm-mmc: Max-Mahalanobis training for timm models.

``import timm_mmc`` registers the CIFAR ResNets (``resnet32_mmc`` etc.) with timm.
"""
from .centers import max_pairwise_cosine, mm_centers
from .heads import HEAD_KINDS, HEADS, HeadConfig, HeadSpec, MMHead, distance_logits, head_spec
from .losses import LOSSES, build_loss, default_loss_for_head
from .models import CifarResNet, MMCWrapper, create_mmc_model

__version__ = '0.1.0'
