"""FLDC rate-distortion against the naive latent baseline and latent DDCM (issue 22; Relic et al. 2024, Fig. 5).

For each image (256x256 centre crops of Kodak by default, the crops of the README's builtin-latent table):

* **FLDC** at every lambda of the model (``pdc.encode_images(codec="FLDC", lam=...)``), whole-file bpp,
  PSNR of the decoded file, encode and decode seconds;
* **naive latent baseline**, the paper's "no diffusion" ablation: the same VAE latent, uniformly quantised
  with step ``delta`` and decoded by the VAE alone, coded (a) with FLDC's own entropy model (hyperprior
  and integer tables, gamma = (-log delta, 0), t = 0: a real payload) and (b) with zlib on the int16
  symbols as the paper does; both pay the FLDC file's header bytes;
* **latent DDCM** on the base model at ``--ddcm-bpp`` (``codec="DDCM"``), with its decode seconds.

Prints per-point means, and the naive baseline's bits over FLDC's at equal PSNR (log-bpp interpolation
of the baseline's mean curve at each FLDC point inside its PSNR range).

    python benchmarks/fldc_rd.py --limit 4 --out benchmarks/results/fldc_rd.txt
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec.codecs.fldc import runner
from pillow_diffcodec.codecs.fldc.format import Gamma
from pillow_diffcodec.models import load_model

REPO = Path(__file__).resolve().parents[1]
KODAK = REPO.parent / "shared" / "data" / "kodak"
DELTAS = (0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8)


def psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a.convert("RGB"), dtype=np.float64)
    y = np.asarray(b.convert("RGB"), dtype=np.float64)
    return 10 * math.log10(255.0**2 / max(float(((x - y) ** 2).mean()), 1e-10))


def crop(image: Image.Image, side: int) -> Image.Image:
    if not side:
        return image
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


def to_image(pixels: torch.Tensor) -> Image.Image:
    return Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy())


def naive(model, image: Image.Image, header: int) -> list[tuple[str, float, float]]:
    """(label, bpp, PSNR) of the uniformly quantised latent, decoded by the VAE alone, at each step size."""
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    y = runner.image_latent(model, pixels)
    channels = model.network.arch.latent
    n = image.width * image.height
    out = []
    for delta in DELTAS:
        gamma = Gamma(1.0, (-math.log(delta),) * channels, (0.0,) * channels, 0.0)
        payload, _, _ = runner.code_latent(model.network, y, gamma)
        y_hat, _, _ = runner.decode_latent(model, payload, image.width, image.height)
        recon = to_image(runner.synthesise(model, y_hat, 0.0, image.width, image.height))
        out.append((f"naive-hyperprior d={delta}", 8 * (len(payload) + header) / n, psnr(image, recon)))
        symbols = torch.round(y / delta).to(torch.int16).cpu().numpy()
        packed = zlib.compress(symbols.tobytes(), 9)
        y_zlib = torch.from_numpy(symbols.astype(np.float32)) * delta
        recon = to_image(runner.synthesise(model, y_zlib.to(y.device), 0.0, image.width, image.height))
        out.append((f"naive-zlib d={delta}", 8 * (len(packed) + header) / n, psnr(image, recon)))
    return out


def interpolate_bpp(curve: list[tuple[float, float]], target: float) -> float | None:
    """bpp of a (bpp, PSNR) curve at PSNR ``target`` (log-bpp linear between neighbours), None outside it."""
    points = sorted(curve, key=lambda p: p[1])
    for (b0, p0), (b1, p1) in zip(points, points[1:]):
        if p0 <= target <= p1 and p1 > p0:
            f = (target - p0) / (p1 - p0)
            return math.exp(math.log(b0) + f * (math.log(b1) - math.log(b0)))
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kodak", type=Path, default=KODAK)
    parser.add_argument("--model", default="builtin-fldc")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--ddcm-bpp", default="0.05,0.1", help="latent DDCM targets (comma-separated; '' for none)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    paths = sorted(args.kodak.glob("kodim*.png"))[: args.limit]
    rows: dict[str, list[tuple[float, float, float, float]]] = {}

    def add(label: str, bpp: float, quality: float, enc: float = float("nan"), dec: float = float("nan")) -> None:
        rows.setdefault(label, []).append((bpp, quality, enc, dec))

    for path in paths:
        with Image.open(path) as opened:
            image = crop(opened.convert("RGB"), args.crop)
        n = image.width * image.height
        header = 0
        for lam in model.lambdas:
            start = time.perf_counter()
            result = pdc.encode_images([image], codec="FLDC", model=model, lam=lam)[0]
            enc = time.perf_counter() - start
            start = time.perf_counter()
            decoded = pdc.decode(result.data, model=model)
            dec = time.perf_counter() - start
            assert decoded.tobytes() == result.reconstruction.tobytes()
            header = len(result.data) - len(pdc.fileinfo.read_file(result.data).payload)
            add(f"FLDC lam={lam:g}", 8 * len(result.data) / n, psnr(image, decoded), enc, dec)
        for label, bpp, quality in naive(model, image, header):
            add(label, bpp, quality)
        for target in [float(v) for v in args.ddcm_bpp.split(",") if v.strip()]:
            start = time.perf_counter()
            data = pdc.encode(image, codec="DDCM", model=model.base.name, bpp=target)
            enc = time.perf_counter() - start
            start = time.perf_counter()
            decoded = pdc.decode(data)
            dec = time.perf_counter() - start
            add(f"DDCM bpp={target:g}", 8 * len(data) / n, psnr(image, decoded), enc, dec)
        print(f"done {path.name}", flush=True)

    lines = [f"FLDC model {args.model} (base {model.base.name}), {len(paths)} Kodak images "
             f"({', '.join(p.stem for p in paths)}), {args.crop or 'full'}-px centre crops, 1 CPU thread",
             f"{'point':28s} {'bpp':>7s} {'PSNR':>6s} {'enc s':>6s} {'dec s':>6s}"]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = {label: np.nanmean(np.asarray(values), axis=0) for label, values in rows.items()}
    for label, (bpp, quality, enc, dec) in means.items():
        lines.append(f"{label:28s} {bpp:7.4f} {quality:6.2f} {enc:6.2f} {dec:6.2f}")
    fldc = [(m[0], m[1]) for label, m in means.items() if label.startswith("FLDC")]
    for kind in ("naive-hyperprior", "naive-zlib"):
        curve = [(m[0], m[1]) for label, m in means.items() if label.startswith(kind)]
        ratios = []
        for bpp, quality in fldc:
            other = interpolate_bpp(curve, quality)
            if other is not None:
                ratios.append((quality, other / bpp))
        text = ", ".join(f"{q:.2f} dB: x{r:.2f}" for q, r in ratios) or "no overlap in PSNR"
        lines.append(f"{kind} bits / FLDC bits at equal PSNR: {text}")
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
