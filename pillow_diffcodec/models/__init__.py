"""Model registry: resolve a model reference to a loaded model, once per process.

A reference resolves, in order, to:

1. a model object passed in directly (anything implementing :class:`.base.DiffusionModel`);
2. a built-in model shipped in this package (``"builtin"``, the default);
3. a local directory in one of the known layouts (:data:`LAYOUTS`; see :mod:`.pixel`, :mod:`.latent` and
   :mod:`pillow_diffcodec.codecs.cdc.model`);
4. a Hugging Face repo id (``"google/ddpm-cifar10-32"``) already in the local Hugging Face cache, or a
   short name for one (``"sd21-base"``, :data:`MODEL_ALIASES`). Nothing is ever downloaded: lookups use
   ``local_files_only``.

Two kinds of model exist (:func:`kind_of`): diffusion models (:class:`.base.DiffusionModel`, for DDCM and
PSC), CDC models (:class:`.cdc.CDCModel`: a learned transform, hyperprior and conditional decoder) and
CorrDiff models (:class:`~pillow_diffcodec.codecs.corrdiff.model.CorrDiffModel`: a CDC model plus an end-to-end decoder);
each codec names the kind it runs on in the codec registry.

Files store a path-independent name for (2) and (4) and the absolute directory for (3). Loaded models
are kept in an LRU cache keyed by resolved name, device and dtype; :func:`clear_model_cache` frees them.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..codecs.cdc.model import CDCModel, is_cdc_folder
from ..codecs.corrdiff.model import CorrDiffModel, is_corrdiff_folder
from ..codecs.fldc.model import FLDCModel, base_reference, is_fldc_folder
from ..conditioning import TextConditioning
from ..errors import InvalidParameterError, ModelNotFoundError
from .base import DiffusionModel, resolve_device, resolve_dtype
from .latent import LatentDiffusionModel, find_latent_layout, find_unconditional_latent_layout, vae_factor_of
from .pixel import PixelDiffusionModel, find_pixel_layout


@dataclass(frozen=True)
class ModelLayout:
    """A kind of model folder the registry can load."""

    kind: str
    expects: str  # the files it looks for, for error messages
    recognises: Callable[[Path], bool]
    load: Callable[..., DiffusionModel | CDCModel | FLDCModel]  # (directory, *, name, device, dtype) -> model


LAYOUTS: tuple[ModelLayout, ...] = (  # first match wins: an SD folder also has unet/ and scheduler/
    ModelLayout(
        kind="CorrDiff model",
        expects="corrdiff.json + safetensors files per rate point (python -m pillow_diffcodec.training.corrdiff)",
        recognises=is_corrdiff_folder,
        load=CorrDiffModel.from_directory,
    ),
    ModelLayout(
        kind="FLDC model",
        expects="fldc.json naming its base latent model + fldc.safetensors (python -m pillow_diffcodec.training.fldc)",
        recognises=is_fldc_folder,
        load=FLDCModel.from_directory,
    ),
    ModelLayout(
        kind="CDC model",
        expects="cdc.json + one safetensors file per rate point (python -m pillow_diffcodec.training.cdc)",
        recognises=is_cdc_folder,
        load=CDCModel.from_directory,
    ),
    ModelLayout(
        kind="Stable Diffusion pipeline",
        expects="unet/ (UNet2DConditionModel), vae/ (AutoencoderKL), text_encoder/ + tokenizer/ (CLIP) and "
        "scheduler/scheduler_config.json (StableDiffusionPipeline.save_pretrained, stabilityai/stable-diffusion-*)",
        recognises=find_latent_layout,
        load=LatentDiffusionModel.from_directory,
    ),
    ModelLayout(  # before the pixel DDPM: it also has unet/ and scheduler/
        kind="unconditional latent pipeline",
        expects="unet/ (UNet2DModel), vae/ (AutoencoderKL) and scheduler/scheduler_config.json, no text encoder "
        "(python -m pillow_diffcodec.training.latent)",
        recognises=find_unconditional_latent_layout,
        load=LatentDiffusionModel.from_directory,
    ),
    ModelLayout(
        kind="pixel DDPM",
        expects="unet/ + scheduler/scheduler_config.json (DDPMPipeline.save_pretrained) or config.json + "
        "diffusion_pytorch_model.* + scheduler_config.json (google/ddpm-*)",
        recognises=lambda directory: find_pixel_layout(directory) is not None,
        load=PixelDiffusionModel.from_directory,
    ),
)
DEFAULT_MODEL = "builtin"
# "builtin" is the default (since issue 11: architecture "f2", 2x2 pixel unshuffle; since issue 27 its
# clean estimates have equal sub-pixel means, which removed a one-pixel stripe). Files that name "builtin"
# with an earlier fingerprint still decode (RETIRED_BUILTINS): through "builtin-v1", the first default
# (4x4 unshuffle), and "builtin-v2", today's weights without the sub-pixel correction. The 3600-step
# preview "builtin-f2" (issue 11) left the package in issue 19: no default used it (docs/FORMAT.md says how
# to decode its files).
# "builtin-cdc" is the CDC codec's default (issue 14: two rate points trained on this machine's CPU).
# "builtin-corrdiff" is the CorrDiff codec's default (issue 21: builtin-cdc's rate points with a trained D).
# "builtin-latent" is an unconditional latent diffusion model (issue 20: an f8 autoencoder and a DDPM on
# its latents), the offline model of the latent codecs. "builtin-fldc" is the FLDC codec's default (issue
# 22: P_phi and a hyperprior trained on this machine's CPU on top of the frozen "builtin-latent").
BUILTIN_MODELS = {
    name: Path(__file__).parent / name
    for name in ("builtin", "builtin-v1", "builtin-v2", "builtin-cdc", "builtin-corrdiff", "builtin-latent", "builtin-fldc")
}
# (name stored in a file, fingerprint) of built-in models that were replaced -> the folder that holds them now
RETIRED_BUILTINS = {
    ("builtin", bytes.fromhex("d8e48de3")): "builtin-v1",
    ("builtin", bytes.fromhex("36ced4e6")): "builtin-v2",
}
KNOWN_PIXEL_MODELS = {
    "google/ddpm-cifar10-32": "32x32, UNet2DModel blocks (128, 256, 256, 256), 35.7M parameters",
    "google/ddpm-celebahq-256": "256x256 faces, UNet2DModel blocks (128, 128, 256, 256, 512, 512), 113.7M parameters",
    "google/ddpm-ema-celebahq-256": "256x256 faces (EMA weights), same architecture as ddpm-celebahq-256",
    "google/ddpm-church-256": "256x256 churches, UNet2DModel blocks (128, 128, 256, 256, 512, 512), 113.7M parameters",
    "google/ddpm-ema-church-256": "256x256 churches (EMA weights), same architecture as ddpm-church-256",
    "google/ddpm-bedroom-256": "256x256 bedrooms, same architecture as ddpm-church-256",
    "google/ddpm-cat-256": "256x256 cats, same architecture as ddpm-church-256",
}
KNOWN_LATENT_MODELS = {
    "stabilityai/stable-diffusion-2-1-base": "SD 2.1 base, 512x512, epsilon prediction (the DDCM paper's main model)",
    "stabilityai/stable-diffusion-2-1": "SD 2.1, 768x768, v-prediction",
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "SD 1.5, 512x512, epsilon prediction",
    "CompVis/stable-diffusion-v1-4": "SD 1.4, 512x512, epsilon prediction",
}
KNOWN_MODELS = {**KNOWN_PIXEL_MODELS, **KNOWN_LATENT_MODELS}
MODEL_ALIASES = {
    "sd21-base": "stabilityai/stable-diffusion-2-1-base",
    "sd21": "stabilityai/stable-diffusion-2-1",
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd14": "CompVis/stable-diffusion-v1-4",
}
MODEL_CACHE_SIZE = 4
_cache: OrderedDict[tuple[str, str, str], DiffusionModel | CDCModel | FLDCModel] = OrderedDict()
_cache_lock = threading.RLock()

__all__ = [
    "LAYOUTS", "CDCModel", "CorrDiffModel", "DiffusionModel", "FLDCModel", "LatentDiffusionModel", "PixelDiffusionModel",
    "available_models", "clear_model_cache", "condition", "kind_of", "load_model", "locate", "pixels_per_position",
    "reference_for_file", "resolve_device", "resolve_dtype",
]
Model = DiffusionModel | CDCModel | FLDCModel  # CorrDiffModel is a CDCModel
KIND_EXAMPLES = {"cdc": "a CDC model (e.g. 'builtin-cdc')", "corrdiff": "a CorrDiff model (e.g. 'builtin-corrdiff')",
                 "fldc": "an FLDC model (e.g. 'builtin-fldc')", "diffusion": "a diffusion model (e.g. 'builtin')"}


def kind_of(model: object) -> str:
    """The kind of a loaded model: "corrdiff" for a CorrDiff model, "cdc" for a CDC model, "fldc" for an FLDC
    model (P_phi and a hyperprior on a frozen latent diffusion model), "diffusion" for any other."""
    if isinstance(model, CorrDiffModel):  # before CDCModel, its base class
        return "corrdiff"
    if isinstance(model, CDCModel):
        return "cdc"
    return "fldc" if isinstance(model, FLDCModel) else "diffusion"


def check_kind(model: object, kind: str, codec: str) -> None:
    """InvalidParameterError unless ``model`` is of the ``kind`` codec ``codec`` runs on."""
    if kind_of(model) != kind:
        wanted = KIND_EXAMPLES.get(kind, kind)
        raise InvalidParameterError(
            f"Codec {codec} needs {wanted}; model {getattr(model, 'name', model)!r} is a {kind_of(model)} model")


def clear_model_cache() -> None:
    """Forget every cached model (their memory is freed once no caller holds them)."""
    _cache.clear()


def _hf_cache_dir() -> str:
    """The Hugging Face hub cache, read from the environment at call time (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _from_hf_cache(repo_id: str) -> Path | None:
    """The snapshot folder of ``repo_id`` in the local Hugging Face cache, without any network access."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=_hf_cache_dir(), local_files_only=True))
    except Exception:  # not cached, or an invalid repo id: both mean "not here"
        return None


def locate(reference: str | Path) -> tuple[str, Path]:
    """(name to store in files, local directory) for a reference; raises ModelNotFoundError."""
    text = MODEL_ALIASES.get(str(reference), str(reference))
    if text in BUILTIN_MODELS and _layout_of(BUILTIN_MODELS[text]):
        return text, BUILTIN_MODELS[text]
    path = Path(text).expanduser()
    try:
        if path.is_dir():
            return str(path.resolve()), path.resolve()
    except (OSError, ValueError):  # not a usable path (a NUL byte, a name too long...): try the other kinds
        pass
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        snapshot = _from_hf_cache(text)
        if snapshot is not None:
            return text, snapshot
    hint = f" ({KNOWN_MODELS[text]})" if text in KNOWN_MODELS else ""
    raise ModelNotFoundError(
        f"Model {text!r}{hint} not found. Looked for a built-in model {sorted(BUILTIN_MODELS)}, a local directory "
        f"{os.path.abspath(path)!r}, and a Hugging Face repo in the local cache {_hf_cache_dir()!r} "
        f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}; nothing is downloaded). Provide it by passing "
        "model= a folder written by DDPMPipeline/StableDiffusionPipeline.save_pretrained or a downloaded "
        "google/ddpm-* or stabilityai/stable-diffusion-* folder, or by "
        "downloading the repo into the Hugging Face cache on a machine with network access"
    )


def reference_for_file(name: str, fingerprint: bytes) -> str:
    """The model reference that decodes a file naming model ``name`` with ``fingerprint``: the name itself,
    or the folder a replaced built-in model moved to (``RETIRED_BUILTINS``)."""
    return RETIRED_BUILTINS.get((name, fingerprint), name)


def pixels_per_position(reference: str | Path | Model | None) -> int:
    """How many image pixels one position of the model's sample stands for (1 for pixel models, 64 for an
    f8 latent model), known without loading weights, so that decode limits count model positions. A model
    that cannot be found counts as pixels (the strictest limit); loading it then says what is missing."""
    if reference is not None and not isinstance(reference, (str, Path)):
        return int(getattr(reference, "vae_factor", 1)) ** 2
    try:
        _, directory = locate(DEFAULT_MODEL if reference is None else reference)
        if is_fldc_folder(directory):  # an FLDC model runs on its base latent model's positions
            _, directory = locate(base_reference(directory))
    except ModelNotFoundError:
        return 1
    return vae_factor_of(directory) ** 2


def _layout_of(directory: Path) -> ModelLayout | None:
    """The first layout that recognises ``directory`` (None: no known model there)."""
    return next((layout for layout in LAYOUTS if layout.recognises(directory)), None)


def load_model(
    reference: str | Path | Model | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
) -> Model:
    """Resolve ``reference`` (default: the built-in model) to a loaded model, using the cache.

    A model object is returned as it is; ``device`` (default cpu) and ``dtype`` (default float32)
    are validated here, before anything is loaded.
    """
    if reference is not None and not isinstance(reference, (str, Path)):
        return reference
    device, dtype = resolve_device(device), resolve_dtype(dtype)
    name, directory = locate(DEFAULT_MODEL if reference is None else reference)
    key = (name, str(device), str(dtype))
    with _cache_lock:  # threads decoding at once (e.g. a parallel extract) load a model once
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        layout = _layout_of(directory)
        if layout is None:
            expected = "; or ".join(f"a {layout.kind}: {layout.expects}" for layout in LAYOUTS)
            raise ModelNotFoundError(
                f"No model in {str(directory)!r} that pillow-diffcodec can load: expected {expected}")
        model = layout.load(directory, name=name, device=device, dtype=dtype)
        _cache[key] = model
        while len(_cache) > MODEL_CACHE_SIZE:
            _cache.popitem(last=False)
        return model


def available_models() -> list[dict[str, Any]]:
    """What ``diffcodec models`` lists: built-in models and the known published ones, with where they are."""
    rows = []
    for name, folder in BUILTIN_MODELS.items():
        found = _layout_of(folder) is not None
        rows.append({"name": name, "kind": "built-in", "available": found, "location": str(folder)})
    aliases = {repo: alias for alias, repo in MODEL_ALIASES.items()}
    for name, description in KNOWN_MODELS.items():
        snapshot = _from_hf_cache(name)
        rows.append({
            "name": name,
            **({"alias": aliases[name]} if name in aliases else {}),
            "kind": "hugging face cache",
            "available": snapshot is not None,
            "location": str(snapshot) if snapshot else f"not in {_hf_cache_dir()}",
            "description": description,
        })
    return rows


def condition(model: DiffusionModel, conditioning: TextConditioning | None) -> DiffusionModel:
    """``model`` conditioned on a text prompt (DDCM App. B.6); unconditional models take no prompt."""
    with_conditioning = getattr(model, "with_conditioning", None)
    if with_conditioning is not None:
        return with_conditioning(conditioning)
    if conditioning is not None:
        raise InvalidParameterError(
            f"Model {model.name!r} takes no text prompt; prompt= needs a latent (Stable Diffusion) model"
        )
    return model
