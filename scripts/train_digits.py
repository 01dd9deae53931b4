"""Train a `*_digits` reference on scikit-learn's bundled 8x8 handwritten digits and write what ships.

    pip install -e ".[dev]"        # scikit-learn
    python scripts/train_digits.py NAME [--epochs 150] [--seed 0] [--threads 1]

NAME is one of the registered references (`hvt_digits`, `deit_digits`, `cvt_digits`, `resnas_digits`:
every zoo entry whose `reference_dataset` is "digits"; default `hvt_digits`). Writes
- models/weights/NAME.pth        the state dict (fp32, < 1 MB)
- models/weights/NAME.json       how it was made, its held-out top-1, parameters and training time
- deploy/data/digits_test.npz    the held-out split: uint8 8x8 images, labels, indices into load_digits()
- deploy/data/digits_train.npz   the training split, same layout (int8 calibration reads it)

The split is stratified, 25% held out (450 of 1,797 images), always seed 0 whatever `--seed` is (which
seeds the initialisation, the batch order and the jitter), so every reference is measured on the same
450 images. The split files are only rewritten when their arrays differ (`np.savez_compressed` stamps
the time into the zip, so rewriting equal arrays would still change the bytes).

Images are scaled 0..16 -> 0..255 and go through the same Pillow/numpy eval transform the harness uses
(`deploy.data.images.preprocess`: bicubic upsampling to 32x32, normalisation), so train and evaluation
see identical preprocessing. Training adds small random affine jitter (shift, rotation, scale) on the
upsampled images. The shipped weights are the last epoch's: the held-out top-1 printed every 10
epochs is for watching, never for picking a checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import models  # noqa: E402
from deploy.data.datasets import DIGITS_FILE, DIGITS_TRAIN_FILE, digits_image  # noqa: E402
from deploy.data.images import preprocess_for  # noqa: E402
from deploy.export.accuracy import topk  # noqa: E402
from models.complexity import count_params  # noqa: E402

SPLIT_SEED = 0


def references() -> list[str]:
    """The zoo entries trained on the shipped digits."""
    return [info.name for info in models.list_models() if info.reference_dataset == "digits"]


def load_split(seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = np.round(digits.images * 255 / 16).astype(np.uint8)
    train, test = train_test_split(np.arange(len(pixels)), test_size=0.25, stratify=digits.target,
                                   random_state=seed)
    return {"pixels": pixels, "labels": digits.target.astype(np.int64), "train": np.sort(train),
            "test": np.sort(test)}


def preprocessed(pixels: np.ndarray, info) -> torch.Tensor:
    transform = preprocess_for(info)
    return torch.from_numpy(np.stack([transform(digits_image(p)) for p in pixels]))


def jitter(x: torch.Tensor, info, generator: torch.Generator) -> torch.Tensor:
    """Random affine (±12°, ±10% scale, ±3 px shift) applied in pixel space so the border stays background."""
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) - 0.5) * math.radians(24)
    scale = 1 + (torch.rand(n, generator=generator) - 0.5) * 0.2
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * (2 * 3 / (x.shape[-1] / 2))
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    pixels = F.grid_sample(x * std + mean, grid, align_corners=False, padding_mode="zeros")
    return (pixels - mean) / std


def evaluate(model, x: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.inference_mode():
        return torch.cat([model(chunk) for chunk in x.split(256)]).numpy()


def train(args) -> None:
    torch.manual_seed(args.seed)
    info = models.get_model_info(args.model)
    split = load_split()
    x_train = preprocessed(split["pixels"][split["train"]], info)
    y_train = torch.from_numpy(split["labels"][split["train"]])
    x_test = preprocessed(split["pixels"][split["test"]], info)
    y_test = split["labels"][split["test"]]

    model = info.build()  # fresh random init (create_model would load the shipped weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    steps = args.epochs * math.ceil(len(x_train) / args.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for idx in order.split(args.batch):
            loss = F.cross_entropy(model(jitter(x_train[idx], info, generator)), y_train[idx], label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        if (epoch + 1) % 10 == 0 or epoch + 1 == args.epochs:
            top1 = topk(evaluate(model, x_test), y_test, 1)
            print(f"epoch {epoch + 1:4d}  loss {loss.item():.3f}  held-out top-1 {top1:.4f}  "
                  f"({time.time() - start:.0f} s)", flush=True)
    seconds = time.time() - start
    write_split(DIGITS_FILE, split, "test")
    write_split(DIGITS_TRAIN_FILE, split, "train")
    save(model, info, topk(evaluate(model, x_test), y_test, 1), seconds, split, args)


def write_split(path: Path, split: dict[str, np.ndarray], part: str) -> None:
    """Write one split (`images`, `labels`, `indices`), unless the file already holds exactly those arrays."""
    indices = split[part]
    arrays = {"images": split["pixels"][indices], "labels": split["labels"][indices], "indices": indices}
    if path.is_file():
        with np.load(path) as shipped:
            if set(shipped.files) == set(arrays) and all(np.array_equal(shipped[k], v) for k, v in arrays.items()):
                print(f"{path} unchanged ({len(indices)} images)")
                return
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(staging, **arrays)
    os.replace(staging, path)
    print(f"wrote {path} ({len(indices)} images)")


def save(model, info, top1: float, seconds: float, split: dict[str, np.ndarray], args) -> None:
    weights = models.default_weights_path(info)
    if weights is None:
        raise SystemExit(f"{info.name} has no default_weights path in the registry")
    weights.parent.mkdir(parents=True, exist_ok=True)
    staging = weights.with_name(f".{weights.name}.tmp")
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, staging)
    os.replace(staging, weights)
    meta = {
        "model": info.name, "held_out_top1": top1, "held_out_images": len(split["test"]),
        "train_images": len(split["train"]),
        "split": f"sklearn load_digits, train_test_split(test_size=0.25, stratify=labels, random_state={SPLIT_SEED})",
        "seed": args.seed, "epochs": args.epochs, "lr": args.lr, "batch": args.batch, "threads": args.threads,
        "torch": torch.__version__, "params": count_params(model), "train_seconds": round(seconds, 1),
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(), "bytes": weights.stat().st_size,
    }
    weights.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {weights} ({meta['bytes'] / 1e3:.0f} kB) in {seconds:.0f} s; held-out top-1 {top1:.4f}")
    print(f"set published_top1={100 * top1:.2f} for {info.name} in models/digits.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="hvt_digits", choices=references())
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0, help="initialisation, batch order and jitter (not the split)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train(args)


if __name__ == "__main__":
    main()
