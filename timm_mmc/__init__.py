"""timm-mmc: Max-Mahalanobis training for timm models.

``import timm_mmc`` registers the CIFAR ResNets (``resnet32_mmc`` etc.) with timm.

The public surface is :data:`__all__`: the names below are what :mod:`eval` and the users of the package import
(``from timm_mmc import PGD``); the submodules themselves are internal, and may move what they do not export here.
"""
from .attacks import (NFGSM, OBJECTIVES, PGD, BestAdversarial, CheckError, FGSMRandomStart, ScaledLogits, adam_update,
                      check_box, check_eps, check_linf_batch, choose_logit_scale, is_fooled, logit_margin, objective,
                      predict, project_linf, random_targets, resolve_targets, uniform_start)
from .centers import max_pairwise_cosine, mm_centers
from .config import parse_pixels
from .data import DataError, ImageSplit, TooFewExamples, load_split
from .fileio import atomic_write_bytes, atomic_write_set, atomic_write_text
from .heads import HEAD_KINDS, HEADS, CenterClassifier, HeadConfig, HeadSpec, MMHead, distance_logits, head_spec
from .io import HeadFromNameWarning, ModelLoadError, file_sha256, load_model
from .losses import LOSSES, build_loss, default_loss_for_head
from .machine import cpu_name
from .models import CifarResNet, MMCWrapper, create_mmc_model
from .models._pretrained import PretrainedWeightsError
from .models.wrapper import model_display_name, release_name, resolve_model_name
from .plot import robustness_png
from .report import (REPORT_VERSION, RULES, AttackResult, Column, EvalReport, ReportError, WorstCase, eps_key,
                     names_weights, percent)
from .report import load as load_report
from .status import ExitStatus, RunFailure, inject_fault, status_of
from .versions import package_versions

__version__ = '0.1.0'

__all__ = [
    # centers, heads and losses
    'mm_centers', 'max_pairwise_cosine', 'HEAD_KINDS', 'HEADS', 'HeadConfig', 'HeadSpec', 'MMHead', 'CenterClassifier',
    'distance_logits', 'head_spec', 'LOSSES', 'build_loss', 'default_loss_for_head',
    # models and their weights
    'CifarResNet', 'MMCWrapper', 'create_mmc_model', 'load_model', 'ModelLoadError', 'HeadFromNameWarning',
    'file_sha256',
    'PretrainedWeightsError', 'resolve_model_name', 'model_display_name', 'release_name',
    # data
    'load_split', 'ImageSplit', 'DataError', 'TooFewExamples',
    # attacks and what every attack shares
    'OBJECTIVES', 'objective', 'logit_margin', 'PGD', 'FGSMRandomStart', 'NFGSM', 'project_linf', 'uniform_start',
    'is_fooled',
    'BestAdversarial', 'CheckError', 'check_eps', 'check_box', 'check_linf_batch', 'random_targets', 'resolve_targets',
    'predict', 'parse_pixels',
    'ScaledLogits', 'choose_logit_scale', 'adam_update',
    # the evaluation report (schema), its plot, whole-or-nothing writes
    'REPORT_VERSION', 'RULES', 'EvalReport', 'AttackResult', 'Column', 'WorstCase', 'eps_key', 'percent',
    'ReportError', 'load_report', 'names_weights',
    # what every command's exit status means
    'ExitStatus', 'RunFailure', 'status_of', 'inject_fault',
    'package_versions', 'cpu_name', 'robustness_png', 'atomic_write_bytes', 'atomic_write_text', 'atomic_write_set',
]
