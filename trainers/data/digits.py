"""The embedded default: scikit-learn's bundled handwritten digits (1,797 real 8x8 images).

Pixel values 0..16 are scaled to [0, 1] exactly (float32). The test split (397 images) is fixed
(stratified, seed 0) so numbers are comparable across runs; the validation split is carved from the
remaining 1,400 with `split_seed`. The default eps is 0.2 (docs/evaluation.md#threat-model: at 0.2 a natural CNN
collapses and adversarial training shows the accuracy/robustness trade-off, like 8/255 on CIFAR).
"""
from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from trainers.data.base import DATASETS, Dataset, DatasetInfo, Split, carve_validation, stratified_holdout

TEST_SIZE = 397
# Mean and std of all 1,797 images after scaling to [0, 1].
MEAN, STD = (0.3053,), (0.3760,)


@DATASETS.register
def digits(*, val_size: int = 200, split_seed: int = 0) -> Dataset:
    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1).contiguous()
    y = torch.from_numpy(bunch.target).long()
    full = Split(x, y)
    train_idx, test_idx = stratified_holdout(y, TEST_SIZE, seed=0)
    train, val = carve_validation(full.subset(train_idx), val_size, split_seed)
    info = DatasetInfo(name="digits", num_classes=10, channels=1, image_size=8, mean=MEAN, std=STD,
                       eps=0.2, crop_padding=1, flip=False)
    return Dataset(info, train, val, full.subset(test_idx))
