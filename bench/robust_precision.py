"""What the training precision does to the PGD-10 figure a run selects its epoch on (``--select-best``).

    python bench/robust_precision.py --dataset ../shared/data/cifar10 [--n 1000] [--release hub_cards/NAME ...]

During training, held-out robust accuracy (:func:`timm_mmc.adversarial.pgd_accuracy`: PGD-10 at 8/255, per image the
worst of the head's objective and the margin) runs under the run's precision, bf16 autocast for the CPU recipes. A
weaker attack in bf16 would raise the figure the epoch is chosen on. This measures the same attack on the same images
with the release's weights under bf16 autocast and in float32, and prints both (and the time each took).
"""
import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line  # noqa: E402

from timm_mmc import head_spec, load_model, load_split  # noqa: E402
from timm_mmc.adversarial import pgd_accuracy, robust_objectives  # noqa: E402

RELEASES = ('hub_cards/resnet32_mmc.cifar10_at', 'hub_cards/resnet32_sce.cifar10_at')


def default_spec(folder: Path) -> str:
    """How a release folder loads when no ``--model`` is given: as users load it where it has its ``config.json``
    (architecture and head arguments from there), else by the folder's name (``NAME.TAG`` -> ``NAME``)."""
    return f'local-dir:{folder}' if (folder / 'config.json').is_file() else folder.name.split('.')[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--dataset', required=True, help='data set with a test split (e.g. ../shared/data/cifar10)')
    p.add_argument('--n', type=int, default=1000, help='first n test images')
    p.add_argument('--release', nargs='+', default=list(RELEASES), help='release folders (model.safetensors inside)')
    p.add_argument('--model', nargs='*', help='model names, one per release (default: local-dir:FOLDER where it holds '
                   'config.json, else the folder name before ".")')
    p.add_argument('--threads', type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = args.model or [default_spec(Path(r)) for r in args.release]
    if len(names) != len(args.release):
        p.error(f'--model names {len(names)} models for {len(args.release)} releases; give one per release.')
    data = load_split(args.dataset, 'test', limit=args.n, progress=False)
    print(f'# {machine_line()}; {args.dataset}:test, first {len(data)} images')
    precisions = (('bf16', lambda: torch.autocast('cpu', dtype=torch.bfloat16)), ('fp32', nullcontext))
    for folder, name in zip(args.release, names):
        weights = None if name.startswith('local-dir:') else Path(folder) / 'model.safetensors'
        model = load_model(name, checkpoint=weights).to(memory_format=torch.channels_last)
        objectives = robust_objectives(head_spec(model.head_config.head, model.head_config.center_kind).objective)
        for label, autocast in precisions:
            t = time.perf_counter()
            clean, robust, seen = pgd_accuracy(model, data.images, data.labels, objectives, 0, autocast,
                                               torch.device('cpu'), True).tolist()
            print(f'{folder} {label}: clean {100 * clean / seen:.1f}%, PGD-10 8/255 (worst of {"/".join(objectives)}) '
                  f'{100 * robust / seen:.1f}%, {time.perf_counter() - t:.0f} s')


if __name__ == '__main__':
    main()
