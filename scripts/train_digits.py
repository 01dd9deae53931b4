"""Train `hvt_digits` on scikit-learn's bundled 8x8 handwritten digits and write what ships.

    pip install -e ".[dev]"        # scikit-learn
    python scripts/train_digits.py [--epochs 150] [--seed 0]

Writes
- models/weights/hvt_digits.pth   the state dict (fp32, < 1 MB)
- models/weights/hvt_digits.json  how it was made and its held-out top-1
- deploy/data/digits_test.npz     the held-out split: uint8 8x8 images, labels, indices into load_digits()

The split is stratified, 25% held out (450 of 1,797 images), seeded. Images are scaled 0..16 -> 0..255
and go through the same Pillow/numpy eval transform the harness uses (`deploy.data.images.preprocess`: bicubic
upsampling to 32x32, normalisation), so train and evaluation see identical preprocessing. Training adds
small random affine jitter (shift, rotation, scale) on the upsampled images.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import models  # noqa: E402
from deploy.data.datasets import digits_image  # noqa: E402
from deploy.data.images import preprocess_for  # noqa: E402
from deploy.export.accuracy import topk  # noqa: E402

WEIGHTS = ROOT / "models" / "weights" / "hvt_digits.pth"
HELD_OUT = ROOT / "deploy" / "data" / "digits_test.npz"


def load_split(seed: int) -> dict[str, np.ndarray]:
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
    info = models.get_model_info("hvt_digits")
    split = load_split(args.seed)
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
    save(model, split, topk(evaluate(model, x_test), y_test, 1), args)


def save(model, split: dict[str, np.ndarray], top1: float, args) -> None:
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    HELD_OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, WEIGHTS)
    test = split["test"]
    np.savez_compressed(HELD_OUT, images=split["pixels"][test], labels=split["labels"][test], indices=test)
    meta = {
        "model": "hvt_digits", "held_out_top1": top1, "held_out_images": len(test), "train_images": len(split["train"]),
        "split": "sklearn load_digits, train_test_split(test_size=0.25, stratify=labels, random_state=seed)",
        "seed": args.seed, "epochs": args.epochs, "lr": args.lr, "batch": args.batch, "torch": torch.__version__,
        "sha256": hashlib.sha256(WEIGHTS.read_bytes()).hexdigest(), "bytes": WEIGHTS.stat().st_size,
    }
    WEIGHTS.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {WEIGHTS} ({meta['bytes'] / 1e3:.0f} kB) and {HELD_OUT}; held-out top-1 {top1:.4f}")
    print(f"set published_top1={100 * top1:.2f} in models/digits.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train(args)


if __name__ == "__main__":
    main()
