"""Training throughput: the project's loop vs a bare PyTorch loop, SCE vs MMC heads, PGD-10 / FGSM-RS steps.

    python bench/train_throughput.py [--images 2560] [--dataset PATH]

Everything runs in one process, same model (ResNet-32), batch 128, bf16 + channels_last, 2 threads:
* project: ``Trainer.fit`` for one epoch on ``--images`` images (its own img/s, measured over the training loop);
* bare: the same batches and augmentation through a plain forward / backward / SGD step loop;
* SCE vs MMC: the bare step with each head;
* adversarial: the project's loop with PGD-10 and with FGSM-RS inner attacks.
Targets: project / bare >= 0.95, MMC / SCE step time <= 1.02.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line  # noqa: E402

from timm_mmc.config import TrainConfig  # noqa: E402
from timm_mmc.data import augment_batch, write_synthetic_dataset  # noqa: E402
from timm_mmc.train import Trainer  # noqa: E402


def project(dataset: str, out: str, model: str, images: int, adv: str = 'none') -> float:
    cfg = TrainConfig(model=model, dataset=dataset, output=out, epochs=1, batch_size=128, robust_every=0,
                      progress=False, overwrite=True, train_limit=images, test_limit=128, adv=adv)
    trainer = Trainer(cfg)
    trainer.log = lambda msg: None
    trainer.fit()
    return trainer.history[0]['img_per_s']


def bare(dataset: str, model: str, images: int) -> float:
    """The same work as the project's loop written as plainly as possible."""
    cfg = TrainConfig(model=model, dataset=dataset, output=tempfile.mkdtemp(), epochs=1, batch_size=128,
                      train_limit=images, test_limit=128)
    t = Trainer(cfg)  # only for the identical model, loss, optimizer and data
    net, opt, data = t.net, t.optimizer, t.train_set
    perm = torch.randperm(len(data))
    gen = torch.Generator().manual_seed(0)
    steps = len(data) // 128
    t0 = time.perf_counter()
    for s in range(steps):
        idx = perm[s * 128:(s + 1) * 128]
        x = augment_batch(data.images[idx].float().div_(255), generator=gen).contiguous(
            memory_format=torch.channels_last)
        y = data.labels[idx]
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss, _ = net(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * 128 / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--images', type=int, default=2560, help='training images per measurement (multiple of 128)')
    p.add_argument('--dataset', default=None, help='data set (default: a synthetic 10-class set written to a temp dir)')
    args = p.parse_args()
    tmp = tempfile.mkdtemp()
    dataset = args.dataset or str(write_synthetic_dataset(Path(tmp) / 'ds', n_train=args.images, n_test=128,
                                                          num_classes=10))
    torch.set_num_threads(2)
    bare(dataset, 'resnet32_mmc', 256)  # warm-up: allocator, kernels
    rows = []
    b_mmc = bare(dataset, 'resnet32_mmc', args.images)
    p_mmc = project(dataset, f'{tmp}/p_mmc', 'resnet32_mmc', args.images)
    b_sce = bare(dataset, 'resnet32_sce', args.images)
    p_sce = project(dataset, f'{tmp}/p_sce', 'resnet32_sce', args.images)
    pgd = project(dataset, f'{tmp}/pgd', 'resnet32_mmc', min(args.images, max(256, args.images // 8)), adv='pgd')
    fgsm = project(dataset, f'{tmp}/fgsm', 'resnet32_mmc', min(args.images, max(512, args.images // 4)), adv='fgsm')
    rows = [('project loop, MMC', p_mmc), ('bare loop, MMC', b_mmc), ('project loop, SCE', p_sce),
            ('bare loop, SCE', b_sce), ('project loop, MMC + PGD-10 AT', pgd), ('project loop, MMC + FGSM-RS AT', fgsm)]
    print(machine_line())
    print(f'ResNet-32, batch 128, bf16 + channels_last, {args.images} images per clean measurement')
    for name, v in rows:
        print(f'{name:34s} {v:7.1f} img/s')
    print(f'project / bare (MMC): {p_mmc / b_mmc:.3f}   (target >= 0.95)')
    print(f'project / bare (SCE): {p_sce / b_sce:.3f}')
    print(f'MMC / SCE step time (bare): {b_sce / b_mmc:.3f}   (target <= 1.02)')
    print(f'PGD-10 AT cost: {p_mmc / pgd:.1f}x a clean step; FGSM-RS AT: {p_mmc / fgsm:.1f}x')


if __name__ == '__main__':
    main()
