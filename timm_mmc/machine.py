"""What machine a run trains on, and the precision it trains in there: bf16 only where it is native (emulated bf16
made a ResNet-32 step 13x slower on an AVX2-only CPU, docs/recipes.md), and the words that name the machine in a
run's log, ``summary.json`` and card.
"""
from __future__ import annotations

import dataclasses
import os
import platform
from typing import Any, Optional, Set, Tuple

import torch

from .config import TrainConfig

__all__ = ['native_bf16', 'cpu_flags', 'resolve_precision', 'agree_precision', 'cpu_name', 'hardware_line']


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products run in hardware here: AVX512-BF16 or AMX on a CPU, bf16 support on a GPU.

    Without it oneDNN emulates bf16 on the CPU: a ResNet-32 train step took 13x as long as in fp32 on an AVX2-only
    AMD EPYC (docs/recipes.md), where AVX512-BF16 made it 1.6x faster than fp32. On the CPU it asks torch's own
    probes and, where this torch lacks them (they are private), the processor's flags in ``/proc/cpuinfo``.
    """
    if device.type == 'cuda':
        return torch.cuda.is_bf16_supported(including_emulation=False)  # emulated on GPUs before compute capability 8
    probes = [getattr(torch.cpu, name, None) for name in ('_is_avx512_bf16_supported', '_is_amx_tile_supported')]
    if any(probe is not None for probe in probes):  # private to torch.cpu, so a torch version may lack them
        return any(probe() for probe in probes if probe is not None)
    return bool(cpu_flags() & {'avx512_bf16', 'amx_bf16'})


def cpu_flags(cpuinfo: str = '/proc/cpuinfo') -> Set[str]:
    """The processor's feature flags as Linux lists them on x86 (the ``flags`` line of ``cpuinfo``), or an empty set
    where there is no such line (other systems; ARM's ``Features`` line names no bf16 matrix unit torch uses)."""
    try:
        with open(cpuinfo) as f:
            return set(next(line.split(':', 1)[1].split() for line in f if line.startswith('flags')))
    except (OSError, StopIteration, IndexError):
        return set()


def resolve_precision(precision: str, device: torch.device, resumed: bool = False) -> Tuple[str, Optional[str]]:
    """The precision a run trains in (``auto``: bf16 where it is native, else fp32), and a note for its log (why
    ``auto`` chose as it did, or that an explicit bf16 will be emulated), or None.

    Args:
        precision: ``auto``, ``bf16`` or ``fp32`` as asked (on a resume: as the run recorded it).
        device: Where the run trains.
        resumed: A resumed run keeps its precision, so the note names the way out that remains (a new run).
    """
    native = native_bf16(device)
    where = 'this GPU' if device.type == 'cuda' else 'this CPU'
    if precision == 'auto':
        chosen = 'bf16' if native else 'fp32'
        why = 'bf16 is native' if native else 'bf16 would be emulated (no AVX512-BF16 or AMX), about 13x slower'
        return chosen, f'--precision auto: {chosen}, since on {where} {why}'
    if precision == 'bf16' and not native:
        way_out = ('this run recorded bf16 and keeps it; only a new run (--overwrite, or another --output) with '
                   '--precision auto or fp32 avoids it') if resumed else '--precision auto or fp32 avoids it'
        return precision, (f'note: {where} has no native bf16 (AVX512-BF16 or AMX), so bf16 autocast is emulated and '
                           f'about 13x slower than fp32 on an AVX2-only CPU; {way_out}')
    return precision, None


def agree_precision(cfg: TrainConfig, accelerator: Any) -> TrainConfig:
    """``cfg`` with the precision this run trains in (:func:`resolve_precision`), decided by the main process for
    all (hosts may differ), with the notes it prints; accelerate's own mixed-precision request is overruled, since
    it would autocast the forward pass behind the run's back."""
    precision, note = resolve_precision(cfg.precision, accelerator.device, resumed=cfg.resume)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list
        precision = broadcast_object_list([precision], from_process=0)[0]
    if note:
        accelerator.print(note)
    cfg = dataclasses.replace(cfg, precision=precision) if precision != cfg.precision else cfg
    env_mp = os.environ.get('ACCELERATE_MIXED_PRECISION', 'no')
    if env_mp not in ('no', {'bf16': 'bf16', 'fp32': 'no'}[cfg.precision]):
        accelerator.print(f'note: accelerate asked for mixed precision {env_mp!r}; this run uses --precision '
                          f'{cfg.precision} as its args.yaml records (set --precision to change it).')
    return cfg


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def hardware_line(device: torch.device, world: int) -> str:
    """What a run trains on, for its log and ``summary.json``: the GPU, or the CPU with its vector unit (which names
    the machine where the model name does not: every lent 2-core machine is an 'AMD EPYC'), threads and processes."""
    if device.type == 'cuda':
        return f'{torch.cuda.get_device_name()} x {world}'
    return (f'{cpu_name()} ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads x '
            f'{world} proc')
