"""Pillow integration: every registered codec becomes a Pillow file format.

Follows Pillow's QoiImagePlugin and pillow-heif's ``register_heif_opener``: ``_accept`` looks only
at the magic bytes and codec id, ``_open`` parses the header (no model, no torch), and the pixels
are decoded by a Python decoder when ``load()`` runs. Bytes without our magic become
``SyntaxError`` so Pillow goes on to try other formats; a file with our magic but a damaged header
raises :class:`~pillow_diffcodec.errors.CorruptFileError` (an ``OSError``) that says what is wrong.
"""

from __future__ import annotations

from typing import IO, Any

from PIL import Image, ImageFile

from . import container
from .codecs import CODECS, CODECS_BY_ID, CodecEntry, codec_by_id
from .errors import InvalidParameterError, NotDiffCodecFileError
from .imagemodes import chunk_info

MAX_FILE_BYTES = 1 << 28  # refuse to read more than 256 MiB into memory as one image
DECODER_NAME = "diffcodec"
SAVE_OPTIONS = frozenset(
    {"model", "bpp", "quality", "seed", "device", "dtype", "keep_alpha", "icc_profile", "exif", "xmp",
     "steps", "codebook_size", "atoms", "coef_levels", "selection", "window"}
)
OPEN_OPTIONS = frozenset({"device", "dtype"})
_defaults: dict[str, Any] = {}


class DiffCodecImageFile(ImageFile.ImageFile):
    """A diffcodec file opened by Pillow; ``format`` is the codec's name."""

    format = "DDCM"
    format_description = "diffusion codec image"
    codec_id = 1

    def _open(self) -> None:
        data = self.fp.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise SyntaxError(f"diffcodec file larger than {MAX_FILE_BYTES} bytes")
        try:
            header, payload = container.parse(data)
            params = codec_by_id(header.codec_id).params.from_bytes(header.params)
        except NotDiffCodecFileError as exc:
            raise SyntaxError(str(exc)) from None  # not ours after all: let Pillow try other formats
        self._size = (header.width, header.height)
        self._mode = header.mode
        self.info.update(
            codec=self.format,
            bpp=8 * len(data) / (header.width * header.height),
            model=header.model_name,
            fingerprint=header.fingerprint.hex(),
            seed=header.seed,
            params=params.to_dict(),
            **chunk_info(header.chunks),
        )
        self.tile = [ImageFile._Tile(DECODER_NAME, (0, 0, *self.size), 0, None)]


class DiffCodecDecoder(ImageFile.PyDecoder):
    """Decodes a whole file at once (the codec has no notion of partial rows)."""

    _pulls_fd = True

    def decode(self, buffer: bytes | Image.SupportsArrayInterface) -> tuple[int, int]:
        from .api import decode

        if self.fd is None:
            raise OSError("diffcodec decoder was given no file to read")
        self.fd.seek(0)
        image = decode(self.fd.read(MAX_FILE_BYTES + 1), **{k: v for k, v in _defaults.items() if k in OPEN_OPTIONS})
        self.set_as_raw(image.tobytes(), image.mode)
        return -1, 0


def _saver(codec: str) -> Any:
    def save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
        from .api import encode

        options = {**_defaults, **im.encoderinfo}
        unknown = sorted(set(options) - SAVE_OPTIONS)
        if unknown:
            raise InvalidParameterError(
                f"Unknown {codec} save option(s) {unknown}; expected some of {sorted(SAVE_OPTIONS)}"
            )
        fp.write(encode(im, codec=codec, **options))

    return save


def _plugin_class(entry: CodecEntry) -> type[DiffCodecImageFile]:
    return type(
        f"{entry.name.title()}ImageFile",
        (DiffCodecImageFile,),
        {"format": entry.name, "format_description": entry.description, "codec_id": entry.codec_id},
    )


def _acceptor(codec_id: int) -> Any:
    """Accept our magic with this codec id; the first codec also takes unknown ids (to report them)."""

    def accept(prefix: bytes) -> bool:
        if prefix[:4] != container.MAGIC:
            return False
        file_codec = prefix[5] if len(prefix) > 5 else None
        return file_codec == codec_id or (codec_id == CODECS[0].codec_id and file_codec not in CODECS_BY_ID)

    return accept


def register_diffcodec_opener(**defaults: Any) -> None:
    """Register every codec as a Pillow format (open and save), with default save options.

    ``defaults`` take the keys of ``Image.save(..., format="DDCM", **options)`` (``model``, ``bpp``,
    ``quality``, ``device``, ``dtype``, ...); ``device`` and ``dtype`` also apply when decoding.
    """
    unknown = sorted(set(defaults) - SAVE_OPTIONS)
    if unknown:
        raise InvalidParameterError(f"Unknown default option(s) {unknown}; expected some of {sorted(SAVE_OPTIONS)}")
    _defaults.clear()
    _defaults.update(defaults)
    Image.register_decoder(DECODER_NAME, DiffCodecDecoder)
    for entry in CODECS:
        plugin = _plugin_class(entry)
        Image.register_open(entry.name, plugin, _acceptor(entry.codec_id))
        Image.register_save(entry.name, _saver(entry.name))
        Image.register_extensions(entry.name, list(entry.extensions))
        Image.register_mime(entry.name, entry.mime)
