"""Rate-distortion of the built-in model on Kodak against Pillow's JPEG at the same rate.

For every image and target rate: encode with ``bpp=`` (whole-file bpp), decode, and measure PSNR
and MS-SSIM (Wang, Simoncelli, Bovik 2003; 5 scales, 11x11 Gaussian window, sigma 1.5, RGB mean)
plus encode and decode seconds; then find the JPEG quality whose file is the largest not above the
DDCM file (Pillow, 4:2:0) and measure it the same way. Prints one row per rate with means over the
images; ``--csv`` also writes the per-image numbers.

    python benchmarks/rd_builtin.py --kodak ../shared/data/kodak --rates 0.05 0.1 0.2
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import pillow_diffcodec as pdc

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def psnr(a: Image.Image, b: Image.Image) -> float:
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def _ssim_terms(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = (g / g.sum())[None, None]
    channels = x.shape[1]

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(t, g[..., None].expand(channels, 1, 11, 1), groups=channels)
        return F.conv2d(t, g[:, :, None, :].expand(channels, 1, 1, 11), groups=channels)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    cs = (2 * cxy + c2) / (vx + vy + c2)
    luminance = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
    return (luminance * cs).mean(dim=(2, 3)), cs.mean(dim=(2, 3))


def ms_ssim(a: Image.Image, b: Image.Image) -> float:
    x = torch.from_numpy(np.asarray(a, dtype=np.float64)).permute(2, 0, 1)[None]
    y = torch.from_numpy(np.asarray(b, dtype=np.float64)).permute(2, 0, 1)[None]
    values = []
    for scale in range(len(MS_SSIM_WEIGHTS)):
        ssim, cs = _ssim_terms(x, y)
        values.append(ssim if scale == len(MS_SSIM_WEIGHTS) - 1 else cs)
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    stacked = torch.stack(values).clamp(min=0)  # (scales, 1, C)
    weights = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float64)[:, None, None]
    return float(torch.prod(stacked**weights, dim=0).mean())


def jpeg_at_most(image: Image.Image, max_bytes: int) -> tuple[Image.Image, int] | None:
    """The JPEG (Pillow, quality 1..95) with the largest size not above ``max_bytes``; None below q=1."""
    def encode(quality: int) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        return buffer.getvalue()

    if len(encode(1)) > max_bytes:
        return None
    low, high = 1, 95
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if len(encode(mid)) <= max_bytes else (low, mid - 1)
    data = encode(low)
    return Image.open(io.BytesIO(data)).convert("RGB"), len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    parser.add_argument("--rates", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--images", type=int, default=24, help="use the first N Kodak images")
    parser.add_argument("--model", default=None, help="model reference (default: builtin)")
    parser.add_argument("--csv", type=Path, help="write per-image rows here")
    args = parser.parse_args()

    paths = sorted(args.kodak.glob("kodim*.png"))[: args.images]
    rows = []
    for rate in args.rates:
        for path in paths:
            image = Image.open(path).convert("RGB")
            start = time.perf_counter()
            data = pdc.encode(image, model=args.model, bpp=rate)
            encode_s = time.perf_counter() - start
            start = time.perf_counter()
            decoded = pdc.decode(data, model=args.model).convert("RGB")
            decode_s = time.perf_counter() - start
            pixels = image.width * image.height
            row = {"image": path.name, "target_bpp": rate, "bpp": 8 * len(data) / pixels, "psnr": psnr(image, decoded),
                   "ms_ssim": ms_ssim(image, decoded), "encode_s": encode_s, "decode_s": decode_s,
                   "params": pdc.info(data)["params"]}
            jpeg = jpeg_at_most(image, len(data))
            if jpeg is not None:
                row.update(jpeg_bpp=8 * jpeg[1] / pixels, jpeg_psnr=psnr(image, jpeg[0]), jpeg_ms_ssim=ms_ssim(image, jpeg[0]))
            rows.append(row)
            print(f"{path.name} target {rate}: {row['bpp']:.4f} bpp {row['psnr']:.2f} dB MS-SSIM {row['ms_ssim']:.4f} "
                  f"enc {encode_s:.1f}s dec {decode_s:.1f}s | JPEG "
                  + (f"{row['jpeg_bpp']:.4f} bpp {row['jpeg_psnr']:.2f} dB" if jpeg else "below its floor"), flush=True)
    if args.csv:
        with args.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=sorted({k for r in rows for k in r}))
            writer.writeheader()
            writer.writerows(rows)
    print(f"\nbuilt-in model on {len(paths)} Kodak images (means); JPEG = Pillow at the largest size <= the DDCM file")
    print(f"{'target':>7} {'bpp':>7} {'PSNR':>6} {'MS-SSIM':>8} {'enc s':>6} {'dec s':>6} | "
          f"{'JPEG bpp':>8} {'PSNR':>6} {'MS-SSIM':>8} {'n':>3}")
    for rate in args.rates:
        group = [r for r in rows if r["target_bpp"] == rate]
        with_jpeg = [r for r in group if "jpeg_bpp" in r]

        def mean(key: str, items: list = group) -> float:
            return float(np.mean([r[key] for r in items])) if items else float("nan")

        print(f"{rate:>7.3f} {mean('bpp'):>7.4f} {mean('psnr'):>6.2f} {mean('ms_ssim'):>8.4f} {mean('encode_s'):>6.1f} "
              f"{mean('decode_s'):>6.1f} | {mean('jpeg_bpp', with_jpeg):>8.4f} {mean('jpeg_psnr', with_jpeg):>6.2f} "
              f"{mean('jpeg_ms_ssim', with_jpeg):>8.4f} {len(with_jpeg):>3}")


if __name__ == "__main__":
    main()
