"""The command line of ``python -m eval.robustness``: its flags, and the checks argparse makes of each value.

What the flags mean together (suites, exit status, ``--resume``) is told in :mod:`eval.robustness`, which runs them.
"""
from __future__ import annotations

import argparse
from typing import Callable

from timm_mmc import OBJECTIVES

from .specs import SUITES
from .threat import AttackFamily, parse_eps

__all__ = ['build_parser']

DESCRIPTION = "Evaluate any timm model's adversarial robustness, honestly (suites, outputs, exit status: " \
              "eval/README.md)."


def _eps_arg(text: str) -> float:
    try:
        return parse_eps(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _pos_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not an integer.') from None
    if v < 1:
        raise argparse.ArgumentTypeError(f'{text!r} must be >= 1.')
    return v


def _attack_arg(text: str) -> AttackFamily:
    try:
        return AttackFamily(text.lower())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'unknown attack {text!r}; choose from {", ".join(a.value for a in AttackFamily)}.') from None


def _objective_arg(text: str) -> str:
    if text not in OBJECTIVES:
        raise argparse.ArgumentTypeError(f'unknown objective {text!r}; choose from {", ".join(OBJECTIVES)}.')
    return text


def _number_in(what: str, low: float, high: float, unit: str) -> Callable[[str], float]:
    """An argparse type: a number in ``[low, high]`` (NaN refused too), named ``what`` in its messages."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{what} {text!r} is not a number.') from None
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f'{what} {text!r} must lie in [{low:g}, {high:g}] {unit}.')
        return v
    return parse


def _device_arg(text: str) -> str:
    """A device torch knows and this machine has, as given (``cpu``, ``cuda``, ``cuda:1``)."""
    import torch
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a device; give cpu, cuda or cuda:N.') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f'{text!r}: this machine has no CUDA device; give cpu or leave --device out.')
    if device.type == 'cuda' and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f'{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s), '
                                         f'numbered from 0.')
    return text


_sigma_arg = _number_in('noise sigma', 0, 1, '(pixel units; the paper: 0.05)')
_degrees_arg = _number_in('rotation', 0, 180, 'degrees (the paper: 30)')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='python -m eval.robustness', description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group('model and data')
    g.add_argument('--model', required=True, help='registered name (with --pretrained), hf-hub:org/repo, '
                   'local-dir:path, or a name plus --checkpoint.')
    g.add_argument('--checkpoint', help='weights file (.safetensors preferred) for --model NAME.')
    g.add_argument('--pretrained', action='store_true', help="load the registered model's pretrained weights.")
    g.add_argument('--random-weights', action='store_true',
                   help='evaluate --model NAME with its random initial weights (a check of the pipeline, never a '
                        'result); without it a name needs --pretrained or --checkpoint.')
    g.add_argument('--dataset', required=True, help='Hub id (uoft-cs/cifar10) or a local folder in the Hub layout.')
    g.add_argument('--split', default='test')
    g.add_argument('--image-column')
    g.add_argument('--label-column')
    g.add_argument('--n-examples', type=_pos_int, default=None, help='evaluate the first N examples of the split '
                   '(after --start); default 1000, or the whole split when it is smaller.')
    g.add_argument('--start', type=int, default=0, help='first example of the split to evaluate.')
    g = p.add_argument_group('suite')
    g.add_argument('--suite', choices=SUITES, default='quick')
    g.add_argument('--attacks', type=_attack_arg, nargs='+', metavar='NAME',
                   help=f'keep only these attack families of the suite: {", ".join(a.value for a in AttackFamily)}.')
    g.add_argument('--eps', type=_eps_arg, nargs='+', default=[8 / 255, 16 / 255],
                   help='Linf radii in pixel units: 8/255 16/255 (default) or 0.0314.')
    g.add_argument('--pgd-steps', type=_pos_int, nargs='+', default=[10, 50])
    g.add_argument('--pgd-alpha', type=_eps_arg, default=2 / 255, help='PGD step (default 2/255).')
    g.add_argument('--objectives', type=_objective_arg, nargs='+',
                   help='PGD objectives (default: mm margin for MM heads, ce margin otherwise).')
    g.add_argument('--cw-n', type=_pos_int, help='C&W on the first N evaluated points (default: 500 as the paper on '
                   'a GPU, 25 on a CPU, where C&W costs ~2500-3500 gradient steps a point).')
    g.add_argument('--cw-binary-steps', type=_pos_int, default=9)
    g.add_argument('--cw-max-iter', type=_pos_int, default=1000)
    g.add_argument('--spsa-n', type=_pos_int, help='SPSA on the first N evaluated points (default: 1000 as the paper '
                   'on a GPU, 25 on a CPU, where SPSA costs ~1300 forward passes a point and eps).')
    g.add_argument('--spsa-samples', type=_pos_int, default=128)
    g.add_argument('--noise-sigma', type=_sigma_arg, nargs='+', default=[0.05])
    g.add_argument('--rotation', type=_degrees_arg, default=30.0, help='max rotation in degrees (uniform in +-).')
    g.add_argument('--transfer-from', help='source model of the black-box transfer attacks (any --model form).')
    g.add_argument('--transfer-checkpoint', help='weights for --transfer-from NAME.')
    g.add_argument('--aa-version', choices=('standard', 'rand', 'fast'), default=None,
                   help='AutoAttack version (default: fast for quick/full, standard for the autoattack suite).')
    g.add_argument('--aa-eps', type=_eps_arg, default=8 / 255)
    g.add_argument('--aa-n', type=_pos_int, help='AutoAttack on the first N evaluated points (default: all; '
                   '100 for quick).')
    g.add_argument('--aa-n-iter', type=_pos_int, help='APGD iterations (default 100).')
    g.add_argument('--aa-target-classes', type=_pos_int, help='APGD-T target classes (default 9; 3 for fast).')
    g.add_argument('--tta-flip', action='store_true', help='also report clean accuracy with flip test-time '
                   'augmentation (mean logits of the image and its mirror; twice the forward passes), beside the '
                   'single-pass figure, which stays the headline.')
    g.add_argument('--standalone', action='store_true', help='run every attack on every correctly classified point '
                   '(no skipping of points already broken); comparable one by one with published tables.')
    g = p.add_argument_group('run')
    g.add_argument('--seed', type=int, default=0)
    g.add_argument('--batch-size', type=_pos_int, default=250)
    g.add_argument('--threads', type=_pos_int, help='torch CPU threads (default: torch\'s; 1 is fastest on a busy '
                   'machine).')
    g.add_argument('--device', type=_device_arg, help='cpu, cuda, ... (default: cuda if available).')
    g.add_argument('--out', default='results', help='output folder for JSON, Markdown and PNG (default results/).')
    g.add_argument('--name', help='stem of the output files, a plain file name (default: from the model, the '
                   'checkpoint\'s folder and file, and the suite).')
    g.add_argument('--overwrite', action='store_true', help='replace an existing report of the same --out and --name '
                   '(refused otherwise); without --resume it also drops an unfinished one and starts over.')
    g.add_argument('--resume', action='store_true', help='continue an evaluation that stopped before its report was '
                   'written, from OUT/NAME.partial/: the same options (only --threads, --device, --tta-flip, '
                   '--overwrite, --no-progress and the options of attack families the suite lacks may differ), and '
                   'the attacks it finished are not run again.')
    g.add_argument('--no-progress', action='store_true')
    return p
