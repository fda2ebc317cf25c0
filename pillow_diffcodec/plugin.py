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

from . import container, limits
from .codecs import CODECS, CODECS_BY_ID, CodecEntry
from .errors import NotDiffCodecFileError
from .fileinfo import ParsedFile, read_file
from .options import DECODE_OPTIONS, ENCODE_OPTIONS, check_known, names

MAX_FILE_BYTES = 1 << 28  # refuse to read more than 256 MiB into memory as one image
DECODER_NAME = "diffcodec"
OPEN_OPTIONS = names(DECODE_OPTIONS) - {"model"}  # defaults that also apply when Pillow decodes
_defaults: dict[str, Any] = {}


def save_options(entry: CodecEntry) -> frozenset[str]:
    """Keywords ``Image.save(..., format=entry.name)`` accepts: the generic encode options plus the codec's own."""
    return names(ENCODE_OPTIONS) | names(entry.options)


class DiffCodecImageFile(ImageFile.ImageFile):
    """A diffcodec file opened by Pillow; ``format`` is the codec's name (set per codec by :func:`_plugin_class`)."""

    format: str
    format_description: str

    def _open(self) -> None:
        data = self.fp.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise SyntaxError(f"diffcodec file larger than {MAX_FILE_BYTES} bytes")
        try:  # Pillow's own bomb threshold applies at open, as for its formats; the decode limits at load()
            parsed = read_file(data, max_pixels=limits.pillow_pixel_limit())
        except NotDiffCodecFileError as exc:
            raise SyntaxError(str(exc)) from None  # not ours after all: let Pillow try other formats
        self._size = (parsed.header.width, parsed.header.height)
        self._mode = parsed.header.mode
        self.info.update({key: value for key, value in parsed.info().items() if key not in ("width", "height", "mode")})
        self.tile = [ImageFile._Tile(DECODER_NAME, (0, 0, *self.size), 0, parsed)]


class DiffCodecDecoder(ImageFile.PyDecoder):
    """Decodes the whole file at once from the header parsed by ``_open`` (the bytes are read once)."""

    _pulls_fd = True

    def decode(self, buffer: bytes | Image.SupportsArrayInterface) -> tuple[int, int]:
        from .api import decode_file

        parsed: ParsedFile = self.args[0]  # the tile's args, set by _open
        image = decode_file(parsed, **{k: v for k, v in _defaults.items() if k in OPEN_OPTIONS})
        self.set_as_raw(image.tobytes(), image.mode)
        return -1, 0


def _saver(entry: CodecEntry) -> Any:
    def save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
        from .api import encode

        options = {**_defaults, **im.encoderinfo}
        check_known(options, [*ENCODE_OPTIONS, *entry.options], f"{entry.name} save")
        fp.write(encode(im, codec=entry.name, **options))

    return save


def _plugin_class(entry: CodecEntry) -> type[DiffCodecImageFile]:
    """The ImageFile class of one codec: :class:`DiffCodecImageFile` with the codec's format name."""
    name = f"{entry.name.title()}ImageFile"
    return type(name, (DiffCodecImageFile,), {
        "format": entry.name, "format_description": entry.description, "__module__": __name__, "__qualname__": name,
    })


# One class per registered codec (DdcmImageFile, PscImageFile, CdcImageFile, ...), importable from here.
IMAGE_FILES: dict[str, type[DiffCodecImageFile]] = {entry.name: _plugin_class(entry) for entry in CODECS}


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
    ``quality``, ``device``, ``dtype``, ...); ``device``, ``dtype`` and ``max_work`` also apply when decoding.
    """
    check_known(defaults, [*ENCODE_OPTIONS, *DECODE_OPTIONS, *(o for e in CODECS for o in e.options)], "default")
    _defaults.clear()
    _defaults.update(defaults)
    Image.register_decoder(DECODER_NAME, DiffCodecDecoder)
    for entry in CODECS:
        Image.register_open(entry.name, IMAGE_FILES[entry.name], _acceptor(entry.codec_id))
        Image.register_save(entry.name, _saver(entry))
        Image.register_extensions(entry.name, list(entry.extensions))
        Image.register_mime(entry.name, entry.mime)
