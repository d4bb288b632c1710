"""A suite of attacks, in three steps: :mod:`eval.specs` builds it, :mod:`eval.runner` runs it, :mod:`eval.summary`
fills what it measured into the report. This module gathers their public names for callers."""
from .runner import Records, ResumeMismatch, merge_records, run_suite
from .specs import (OPTION_READERS, SUITES, AttackConfig, AttackSpec, AutoAttackConfig, CWConfig, NoiseConfig,
                    PGDConfig, RotationConfig, SPSAConfig, SuiteOptions, TransferConfig, build_suite,
                    default_objectives, is_mm_model, unused_options)
from .summary import summarise

__all__ = ['SUITES', 'SuiteOptions', 'AttackSpec', 'AttackConfig', 'PGDConfig', 'TransferConfig', 'AutoAttackConfig',
           'SPSAConfig', 'CWConfig', 'NoiseConfig', 'RotationConfig', 'build_suite', 'Records', 'run_suite',
           'merge_records', 'ResumeMismatch', 'summarise', 'is_mm_model', 'default_objectives',
           'unused_options', 'OPTION_READERS']
