"""Shared bits of the benchmark scripts: what machine and versions the figures come from."""
import os
import platform

import torch


def machine_line() -> str:
    import timm
    from timm_mmc.machine import cpu_name
    return (f'{cpu_name()}; {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; '
            f'torch {torch.__version__}, timm {timm.__version__}, python {platform.python_version()}')
