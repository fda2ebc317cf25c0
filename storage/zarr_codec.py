"""A zarr v3 array-to-bytes codec that stores each chunk (one image) as a diffcodec file.

    import zarr
    from storage.zarr_codec import DiffCodecImageCodec
    images = zarr.create_array("photos.zarr", shape=(100, 512, 768, 3), chunks=(1, 512, 768, 3),
                               dtype="uint8", serializer=DiffCodecImageCodec(quality=40), compressors=None)
    images[0] = pixels                      # encoded with DDCM
    zarr.open_array("photos.zarr")[0]       # decoded: any process with this package installed

The codec is registered under the name ``diffcodec`` through zarr's ``zarr.codecs`` entry point, so
``zarr.open_array`` finds it once pillow-diffcodec is installed (as imagecodecs' JPEG codecs do for
numcodecs). Each chunk must hold exactly one image: shape (1, ..., 1, H, W) or (1, ..., 1, H, W, C)
with C in 1, 3, 4 and dtype uint8. The stored bytes of a chunk are a standalone diffcodec file
(docs/FORMAT.md). The codec is lossy: what is read back is the decoder's reconstruction.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import JSON, parse_named_configuration

import pillow_diffcodec
from pillow_diffcodec.errors import CorruptFileError, InvalidParameterError
from pillow_diffcodec.settings import EncodeSettings

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType

NAME = "diffcodec"
MODES_BY_CHANNELS = {1: "L", 3: "RGB", 4: "RGBA"}
# zarr runs chunk codecs in several threads at once; models load lazily and torch already uses every
# core, so one chunk at a time per process is both safe and as fast.
_MODEL_LOCK = threading.Lock()


@dataclass(frozen=True)
class DiffCodecImageCodec(ArrayBytesCodec):
    """Configuration: ``codec`` (a registered codec name), ``model`` (registry name, directory or
    Hugging Face id; None: the built-in default), the rate as ``quality`` (0-100) or ``bpp``, or
    explicit codec ``params`` (e.g. steps, codebook_size), and the codebook ``seed``. Validated on creation."""

    is_fixed_size = False

    codec: str = "DDCM"
    model: str | None = None
    quality: float | None = None
    bpp: float | None = None
    seed: int = 0
    params: tuple[tuple[str, Any], ...] = field(default=())

    def __init__(
        self,
        *,
        codec: str = "DDCM",
        model: str | None = None,
        quality: float | None = None,
        bpp: float | None = None,
        seed: int = 0,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        if model is not None and (not isinstance(model, str) or not model):
            raise InvalidParameterError(f"Expected model to be a non-empty string or None, got {model!r}")
        checked = EncodeSettings(codec, bpp=bpp, quality=quality, seed=seed, params={} if params is None else params)
        object.__setattr__(self, "codec", checked.codec)
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "quality", quality)
        object.__setattr__(self, "bpp", bpp)
        object.__setattr__(self, "seed", seed)
        frozen = {key: tuple(value) if isinstance(value, list) else value for key, value in dict(params or {}).items()}
        object.__setattr__(self, "params", tuple(sorted(frozen.items())))

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(data, NAME, require_configuration=False)
        configuration = dict(configuration or {})
        known = {"codec", "model", "quality", "bpp", "seed", "params"}
        unknown = sorted(set(configuration) - known)
        if unknown:
            raise InvalidParameterError(
                f"Unknown {NAME} codec configuration {unknown}; expected some of {sorted(known)}"
            )
        return cls(**configuration)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        configuration: dict[str, JSON] = {"codec": self.codec, "seed": self.seed}
        for name in ("model", "quality", "bpp"):
            if getattr(self, name) is not None:
                configuration[name] = getattr(self, name)
        if self.params:
            configuration["params"] = {
                key: list(value) if isinstance(value, tuple) else value for key, value in self.params
            }
        return {"name": NAME, "configuration": configuration}

    def validate(
        self, *, shape: tuple[int, ...], dtype: ZDType[TBaseDType, TBaseScalar], chunk_grid: ChunkGrid
    ) -> None:
        if dtype.to_native_dtype() != np.dtype("uint8"):
            raise InvalidParameterError(f"The {NAME} codec stores uint8 images, got data type {dtype}")
        chunk_shape = getattr(chunk_grid, "chunk_shape", None)
        if chunk_shape is not None:
            _image_shape(tuple(chunk_shape))

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"codec": self.codec, "seed": self.seed, **dict(self.params)}
        for name in ("model", "quality", "bpp"):
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        return options

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        height, width, channels = _image_shape(chunk_spec.shape)
        pixels = chunk_array.as_numpy_array().reshape(height, width, channels)
        image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, MODES_BY_CHANNELS[channels])
        with _MODEL_LOCK:
            data = pillow_diffcodec.encode(image, **self._options())
        return chunk_spec.prototype.buffer.from_bytes(data)

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        height, width, channels = _image_shape(chunk_spec.shape)
        with _MODEL_LOCK:
            image = pillow_diffcodec.decode(chunk_bytes.to_bytes(), model=self.model)
        if image.size != (width, height) or image.mode != MODES_BY_CHANNELS[channels]:
            raise CorruptFileError(
                f"A {NAME} chunk holds a {image.mode} image of {image.size[0]}x{image.size[1]}, "
                f"but the array's chunks are {MODES_BY_CHANNELS[channels]} {width}x{height}"
            )
        pixels = np.asarray(image).reshape(chunk_spec.shape)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(pixels)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError(f"The {NAME} codec's output size depends on the image")


def _image_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(height, width, channels) of a chunk that holds one image, or an error that says what fits."""
    channels = shape[-1] if len(shape) >= 3 and shape[-1] in MODES_BY_CHANNELS else 1
    image_dims = 3 if len(shape) >= 3 and shape[-1] in MODES_BY_CHANNELS else 2
    leading = shape[: len(shape) - image_dims]
    if len(shape) < 2 or any(size != 1 for size in leading) or min(shape[len(leading) :]) < 1:
        raise InvalidParameterError(
            f"The {NAME} codec needs one image per chunk: chunk shape (1, ..., H, W) or (1, ..., H, W, C) "
            f"with C in {sorted(MODES_BY_CHANNELS)}, got {shape}"
        )
    return shape[len(leading)], shape[len(leading) + 1], channels
