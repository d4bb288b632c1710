"""Shared bits of the benchmark scripts: what machine and versions the figures come from."""
import os
import platform

import torch


def machine_line() -> str:
    import timm
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return (f'{cpu}; {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; torch {torch.__version__}, '
            f'timm {timm.__version__}, python {platform.python_version()}')
