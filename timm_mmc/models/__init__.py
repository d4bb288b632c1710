"""Model families; importing registers them with timm."""
from .cifar_resnet import CifarResNet
from .wrapper import MMCWrapper, create_mmc_model
