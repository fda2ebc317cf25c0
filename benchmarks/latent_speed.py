"""Latent DDCM speed and memory on a Stable Diffusion pipeline folder, at two codebook sizes side by side.

Model: a tiny randomly initialised pipeline of the SD architecture (UNet2DConditionModel, 4-block
AutoencoderKL with the SD 8x down-sampling, CLIP text encoder and tokenizer), written with
StableDiffusionPipeline.save_pretrained and loaded by path like any SD folder. A 512x512 image (a
centre crop of Kodak 23) becomes the SD 2.1 base latent shape 4x64x64. Timings of the codebook path
do not depend on the weights; with the real SD 2.1 UNet the model share of a step grows by orders of
magnitude. Each K runs in its own subprocess so its peak memory is its own.

    python benchmarks/latent_speed.py [--sizes 1024 8192] [--steps 100] [--side 512] [--threads N]

Prints, per K: encode and decode seconds, decode/encode, the split of the encoder's time into UNet,
VAE, codebook generation, search (inner products + selection) and entropy coding, peak RSS, and what the
reference implementation's codebook step costs on the same shapes (``torch.randn(K, D)`` regenerated
every step, then the inner products), with the memory its K x D codebook needs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak" / "kodim23.png"


def build_pipeline(folder: Path) -> Path:
    """A tiny SD-architecture pipeline folder (random weights; VAE factor 8, UNet factor 2)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {token: i for i, token in enumerate([*letters, *(c + "</w>" for c in letters)])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 32, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8,
        sample_size=512,
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
                            ).save_pretrained(str(folder / "pipeline"))
    return folder / "pipeline"


def test_image(side: int):
    import numpy as np
    from PIL import Image

    if KODAK.is_file():
        with Image.open(KODAK) as image:
            left, top = (image.width - side) // 2, (image.height - side) // 2
            return image.convert("RGB").crop((left, top, left + side, top + side))
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8))


def randn_seconds(size: int, numel: int, repeats: int = 2) -> float:
    """Seconds ``torch.randn`` takes for one K x D codebook's count of values, in our chunk size."""
    import torch

    from pillow_diffcodec.codebook import COMPILED_CHUNK_ELEMENTS

    rows = max(1, COMPILED_CHUNK_ELEMENTS // numel)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(0, size, rows):
            torch.randn(rows, numel)
        best = min(best, time.perf_counter() - start)
    return best


def reference_step(size: int, numel: int, repeats: int = 2) -> float:
    """Seconds per step of the reference code's codebook work: torch.randn(K, D), then the K inner products."""
    import torch

    residual = torch.randn(numel)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        codebook = torch.randn(size, numel)
        int(torch.argmax(codebook @ residual))
        best = min(best, time.perf_counter() - start)
        del codebook
    return best


def worker(pipeline: str, size: int, steps: int, side: int, threads: int | None) -> dict[str, float]:
    import torch

    import pillow_diffcodec as pdc
    from pillow_diffcodec import codebook
    from pillow_diffcodec.codecs.ddcm import format as ddcm_format
    from pillow_diffcodec.codecs.ddcm import runner as ddcm
    from pillow_diffcodec.models import load_model

    if threads:
        torch.set_num_threads(threads)
    model = load_model(pipeline)
    image = test_image(side)
    params = dict(steps=steps, codebook_size=size, atoms=1, selection="mp", tile=0)  # the paper's single-atom DDCM
    pdc.encode(image, model=model, **{**params, "steps": 2})  # warm-up (and compilation of the generator)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    timers = dict.fromkeys(("unet", "vae", "scan", "generation", "coding"), 0.0)

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timers[name] += time.perf_counter() - start
        return wrapper

    model.predict_x0 = timed("unet", model.predict_x0)
    model.to_model_space = timed("vae", model.to_model_space)
    model.to_pixels = timed("vae", model.to_pixels)
    ddcm.codebook_scores = timed("scan", ddcm.codebook_scores)
    codebook._block_fn = timed("generation", codebook._block_fn)
    ddcm_format.entropy.encode_uniform = timed("coding", ddcm_format.entropy.encode_uniform)
    ddcm_format.entropy.decode_uniform = timed("coding", ddcm_format.entropy.decode_uniform)
    start = time.perf_counter()
    data = pdc.encode(image, model=model, **params)
    encode_s = time.perf_counter() - start
    encode_timers = dict(timers)
    timers.update(dict.fromkeys(timers, 0.0))
    start = time.perf_counter()
    pdc.decode(data, model=model)
    decode_s = time.perf_counter() - start
    peak_extra_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024
    numel = 4 * (side // 8) ** 2
    return {
        "K": size,
        "encode_s": encode_s,
        "decode_s": decode_s,
        **{f"enc_{k}": v for k, v in encode_timers.items()},
        **{f"dec_{k}": v for k, v in timers.items()},
        "peak_extra_mb": peak_extra_mb,
        "peak_total_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "bytes": len(data),
        "reference_step_s": reference_step(size, numel),
        "randn_s": randn_seconds(size, numel),
        "reference_codebook_mb": size * numel * 4 / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 8192])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--threads", type=int, help="torch CPU threads per worker (default: torch's)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.pipeline, args.worker, args.steps, args.side, args.threads)))
        return
    with tempfile.TemporaryDirectory() as folder:
        pipeline = build_pipeline(Path(folder))
        rows = []
        for size in args.sizes:
            command = [sys.executable, __file__, "--worker", str(size), "--steps", str(args.steps),
                       "--side", str(args.side), "--pipeline", str(pipeline)]
            command += ["--threads", str(args.threads)] if args.threads else []
            rows.append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))
    latent = args.side // 8
    print(f"Latent DDCM speed: tiny SD-architecture pipeline, {args.side}x{args.side} image -> latent 4x{latent}x{latent}"
          f", T={args.steps}, M=1, mp, tile=0, torch threads {args.threads or 'default'}")
    print(f"{'K':>5} {'encode s':>9} {'decode s':>9} {'dec/enc':>8} | encoder split: {'UNet':>6} {'VAE':>6} "
          f"{'gen':>6} {'search':>7} {'coding':>7} | {'peak MB':>8} | ref codebook/step   ours/step  speed-up")
    coded = args.steps - 1
    for r in rows:
        ours = r["enc_scan"] / coded
        print(f"{r['K']:>5} {r['encode_s']:>9.2f} {r['decode_s']:>9.2f} {r['decode_s'] / r['encode_s']:>8.3f} | "
              f"{'':>15}{r['enc_unet']:>6.2f} {r['enc_vae']:>6.2f} {r['enc_generation']:>6.2f} "
              f"{r['enc_scan'] - r['enc_generation']:>7.2f} {r['enc_coding']:>7.3f} | {r['peak_extra_mb']:>8.1f} | "
              f"{r['reference_step_s'] * 1e3:>9.1f}ms ({r['reference_codebook_mb']:.0f} MB) {ours * 1e3:>7.1f}ms "
              f"{r['reference_step_s'] / ours:>6.1f}x")
        print(f"{'':>5} generation {r['enc_generation'] / coded * 1e3:.1f}ms per step vs torch.randn of the same "
              f"count {r['randn_s'] * 1e3:.1f}ms: {r['randn_s'] / (r['enc_generation'] / coded):.2f}x randn's speed")
        print(f"{'':>5} decoder split: UNet {r['dec_unet']:.2f}s, VAE {r['dec_vae']:.2f}s, generation "
              f"{r['dec_generation']:.3f}s (only the {coded} chosen codewords), coding {r['dec_coding']:.3f}s")
    if len(rows) > 1:
        print(f"peak RSS ratio K={rows[-1]['K']} / K={rows[0]['K']}: "
              f"{rows[-1]['peak_total_mb'] / rows[0]['peak_total_mb']:.2f} (1.00 = flat in K)")


if __name__ == "__main__":
    main()
