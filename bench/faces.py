"""A CelebA-shaped image set with structure, made on the spot: N colour JPEGs of 64×64 (CelebA as VAE papers use
it: 202,599 faces, centre-cropped and resized to 64×64), in a .zip with one folder per hair colour (the label).

Each image is a drawn face whose features vary smoothly and independently: background colour, face position and
size, skin tone, hair colour (4 classes) and volume, eye spacing, glasses (a third of them) and smile, plus
pixel noise, so a VAE has real factors to find and a latent map has real neighbourhoods. Nothing is downloaded.

    python -m bench.faces --n 200000 --out /tmp/faces-200k.zip
"""
from __future__ import annotations

import argparse
import io
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

HAIR = {"black": (25, 20, 20), "blond": (225, 190, 110), "brown": (110, 65, 35), "grey": (165, 165, 170)}
SKIN_LIGHT, SKIN_DARK = np.array([245, 210, 180]), np.array([120, 80, 55])
BATCH = 2000


def draw(n: int, side: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, side, side, 3) uint8, hair colour labels (n,)) for seed `seed`."""
    rng = np.random.default_rng(seed)
    u = ((np.arange(side) + 0.5) / side).astype(np.float32)  # pixel centres in [0, 1]
    yy, xx = np.meshgrid(u, u, indexing="ij")  # (H, W)
    yy, xx = yy[None], xx[None]  # (1, H, W)

    def col(v):  # per-image values as (n, 1, 1)
        return np.asarray(v, dtype=np.float32)[:, None, None]

    def ellipse(cx, cy, rx, ry):  # (n, H, W) mask
        return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1

    labels = rng.integers(0, len(HAIR), n)
    hair_rgb = np.array(list(HAIR.values()), dtype=np.float32)[labels] * rng.uniform(0.8, 1.15, (n, 1))  # (n, 3)
    background = rng.uniform(40, 230, (n, 3)).astype(np.float32)
    skin = SKIN_LIGHT + (SKIN_DARK - SKIN_LIGHT) * rng.beta(2, 3, (n, 1))  # (n, 3)
    cx, cy = col(rng.normal(0.5, 0.035, n)), col(rng.normal(0.54, 0.03, n))
    rx, ry = col(rng.uniform(0.24, 0.31, n)), col(rng.uniform(0.31, 0.38, n))
    volume = col(rng.uniform(1.0, 1.35, n))
    eye_gap, eye_y = col(rng.normal(0.11, 0.012, n)), cy - col(rng.normal(0.06, 0.012, n))
    smile = col(rng.uniform(0.005, 0.05, n))
    glasses = rng.random(n) < 1 / 3

    def paint(image, mask, rgb):  # rgb: (n, 3) per image, or one colour
        rgb = np.asarray(rgb, np.float32).reshape(-1, 1, 1, 3)
        return np.where(mask[..., None], rgb, image)

    img = np.broadcast_to(background[:, None, None, :], (n, side, side, 3))  # (n, H, W, 3)
    img = paint(img, ellipse(cx, cy - 0.05, rx * volume, ry * 0.95) & (yy < cy + 0.12), hair_rgb)  # hair
    img = paint(img, ellipse(cx, cy + 0.03, rx * 0.92, ry * 0.9), skin)  # face
    for sign in (-1, 1):
        img = paint(img, ellipse(cx + sign * eye_gap, eye_y, 0.035, 0.025), (30, 30, 40))
        ring = ellipse(cx + sign * eye_gap, eye_y, 0.065, 0.05) & ~ellipse(cx + sign * eye_gap, eye_y, 0.05, 0.037)
        img = paint(img, ring & glasses[:, None, None], (20, 20, 20))
    img = paint(img, ellipse(cx, cy + 0.17, 0.09, smile) & (yy >= cy + 0.17 - smile * 0.3), (170, 40, 50))  # mouth
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * 6  # sensor noise: no two images alike
    return np.clip(img, 0, 255).astype(np.uint8), labels


def write_zip(path: Path, n: int, side: int = 64, seed: int = 0, quality: int = 90, log=sys.stderr) -> Path:
    """A .zip of n JPEG faces in folders named after the hair colour (stored, not deflated: JPEGs do not shrink)."""
    names = list(HAIR)
    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for start in range(0, n, BATCH):
            images, labels = draw(min(BATCH, n - start), side, seed + start)
            for i, (img, label) in enumerate(zip(images, labels)):
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, "JPEG", quality=quality)
                z.writestr(f"faces/{names[label]}/{start + i:07d}.jpg", buf.getvalue())
            if log:
                print(f"\r{start + len(images):,} of {n:,} faces ({time.perf_counter() - t0:.0f} s)", end="", file=log)
    tmp.replace(path)
    if log:
        print(f"\n{path}: {path.stat().st_size / 2**20:,.0f} MiB", file=log)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path("/tmp/faces-200k.zip"))
    args = ap.parse_args()
    write_zip(args.out, args.n, args.side)


if __name__ == "__main__":
    main()
