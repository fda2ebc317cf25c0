"""The diffcodec container: a small versioned header, optional typed chunks, payload, CRC-32.

Byte layout (docs/FORMAT.md, version 1; ``varint`` is unsigned LEB128)::

    magic        4 bytes  b"\\x89DFC"
    version      u8       1
    codec id     u8       explicit number (1 = DDCM; see codecs/__init__.py)
    mode         u8       1 = L, 2 = LA, 3 = RGB, 4 = RGBA
    flags        u8       bit 0: chunks follow the codec parameters; other bits must be 0
    width        varint   1 .. 2**24
    height       varint   1 .. 2**24
    seed         varint   codebook seed, 0 .. 2**32 - 1
    fingerprint  4 bytes  model weight fingerprint
    model name   varint length (<= 255) + UTF-8
    params       varint length (<= 255) + codec-specific bytes
    [chunks]     varint count, then per chunk: 4-byte tag, varint length, data
    payload      codec-specific, up to the CRC
    crc32        u32 little-endian over every preceding byte

Chunk tags whose first byte is a lower-case letter are ancillary: readers that do not know them
skip them. An unknown tag starting with an upper-case letter is critical and makes the file
unreadable for that reader.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from .conditioning import CHUNK_TAG as CONDITIONING_TAG
from .errors import CorruptFileError, DecompressionBombError, NotDiffCodecFileError, UnsupportedVersionError

MAGIC = b"\x89DFC"
FORMAT_VERSION = 1
MODE_CODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
MODES_BY_CODE = {code: mode for mode, code in MODE_CODES.items()}
KNOWN_FLAGS = 0x01
FLAG_CHUNKS = 0x01
MAX_DIMENSION = 1 << 24
MAX_SEED = (1 << 32) - 1
FINGERPRINT_BYTES = 4
MAX_NAME_BYTES = 255
MAX_PARAMS_BYTES = 255
CRC_BYTES = 4
KNOWN_CHUNK_TAGS: frozenset[bytes] = frozenset({CONDITIONING_TAG})  # critical tags this reader knows


@dataclass(frozen=True)
class Header:
    """Everything in a file except the payload."""

    codec_id: int
    mode: str
    width: int
    height: int
    seed: int
    fingerprint: bytes
    model_name: str
    params: bytes
    chunks: tuple[tuple[bytes, bytes], ...] = field(default=())
    version: int = FORMAT_VERSION


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128: seven bits per byte, least significant first, high bit set on all but the last."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class Reader:
    """Bounds-checked cursor over the file bytes; every overrun is a CorruptFileError."""

    def __init__(self, data: bytes | memoryview, end: int) -> None:
        self.data = data
        self.pos = 0
        self.end = end

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise CorruptFileError(f"File is truncated: {what} needs {n} bytes at offset {self.pos}")
        chunk = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def varint(self, what: str, maximum: int) -> int:
        value = shift = 0
        for _ in range(5):
            byte = self.u8(what)
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if value > maximum:
                    raise CorruptFileError(f"{what} is {value}, above the limit {maximum}")
                return value
        raise CorruptFileError(f"{what} is not a valid varint (more than 5 bytes)")


def pack(header: Header, payload: bytes) -> bytes:
    """Serialise a header and payload into a complete file (with CRC)."""
    name = header.model_name.encode("utf-8")
    if len(name) > MAX_NAME_BYTES:
        raise CorruptFileError(f"Model name is {len(name)} bytes in UTF-8; at most {MAX_NAME_BYTES} fit in a file")
    if len(header.params) > MAX_PARAMS_BYTES or len(header.fingerprint) != FINGERPRINT_BYTES:
        raise CorruptFileError("Codec parameters or fingerprint do not fit the container")
    out = bytearray(MAGIC)
    out += bytes([header.version, header.codec_id, MODE_CODES[header.mode], FLAG_CHUNKS if header.chunks else 0])
    out += encode_varint(header.width) + encode_varint(header.height) + encode_varint(header.seed)
    out += header.fingerprint
    out += encode_varint(len(name)) + name
    out += encode_varint(len(header.params)) + header.params
    if header.chunks:
        out += encode_varint(len(header.chunks))
        for tag, data in header.chunks:
            out += tag + encode_varint(len(data)) + data
    out += payload
    out += zlib.crc32(out).to_bytes(CRC_BYTES, "little")
    return bytes(out)


def check_pixel_limit(width: int, height: int, max_pixels: int | None) -> None:
    """Raise :class:`DecompressionBombError` when width x height exceeds ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise DecompressionBombError(
            f"Image size {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
            "(raise it with max_pixels=, pillow_diffcodec.limits.MAX_DECODE_PIXELS or PIL.Image.MAX_IMAGE_PIXELS "
            "if you trust the file)"
        )


def parse(data: bytes | memoryview, *, max_pixels: int | None = None) -> tuple[Header, bytes]:
    """Parse and verify a whole file; returns (header, payload). Loads no model."""
    if len(data) < len(MAGIC) or bytes(data[: len(MAGIC)]) != MAGIC:
        raise NotDiffCodecFileError("Not a diffcodec file: the magic bytes b'\\x89DFC' are missing")
    if len(data) < len(MAGIC) + 4 + CRC_BYTES:
        raise CorruptFileError(f"File is truncated: {len(data)} bytes cannot hold a header")
    reader = Reader(data, len(data) - CRC_BYTES)
    reader.take(len(MAGIC), "magic")
    version = reader.u8("format version")
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"File format version {version} is not supported by this library (it reads version {FORMAT_VERSION})"
        )
    codec_id = reader.u8("codec id")
    mode_code = reader.u8("mode")
    if mode_code not in MODES_BY_CODE:
        raise CorruptFileError(f"Unknown colour mode code {mode_code}; expected one of {sorted(MODES_BY_CODE)}")
    flags = reader.u8("flags")
    if flags & ~KNOWN_FLAGS:
        raise UnsupportedVersionError(f"Unknown header flags 0x{flags:02x}")
    width = reader.varint("width", MAX_DIMENSION)
    height = reader.varint("height", MAX_DIMENSION)
    if width == 0 or height == 0:
        raise CorruptFileError(f"Image size {width}x{height} is empty")
    check_pixel_limit(width, height, max_pixels)
    seed = reader.varint("seed", MAX_SEED)
    fingerprint = reader.take(FINGERPRINT_BYTES, "fingerprint")
    name_bytes = reader.take(reader.varint("model name length", MAX_NAME_BYTES), "model name")
    try:
        model_name = name_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptFileError(f"Model name {name_bytes!r} is not valid UTF-8") from None
    params = reader.take(reader.varint("codec parameter length", MAX_PARAMS_BYTES), "codec parameters")
    chunks: list[tuple[bytes, bytes]] = []
    if flags & FLAG_CHUNKS:
        for _ in range(reader.varint("chunk count", reader.end)):
            tag = reader.take(4, "chunk tag")
            body = reader.take(reader.varint("chunk length", reader.end), f"chunk {tag!r}")
            if tag not in KNOWN_CHUNK_TAGS and not tag[:1].islower():
                raise UnsupportedVersionError(f"Unknown critical chunk {tag!r}")
            chunks.append((tag, body))
    payload = bytes(data[reader.pos : reader.end])
    stored_crc = int.from_bytes(bytes(data[reader.end :]), "little")
    if zlib.crc32(bytes(data[: reader.end])) != stored_crc:
        raise CorruptFileError("CRC-32 mismatch: the file is corrupt (bit flips or truncation)")
    header = Header(
        codec_id=codec_id,
        mode=MODES_BY_CODE[mode_code],
        width=width,
        height=height,
        seed=seed,
        fingerprint=fingerprint,
        model_name=model_name,
        params=params,
        chunks=tuple(chunks),
        version=version,
    )
    return header, payload


def header_size(header: Header) -> int:
    """Bytes a file with this header spends outside its payload (CRC included)."""
    return len(pack(header, b""))


def bits_per_pixel(file_bytes: int, width: int, height: int) -> float:
    """Bits per pixel as the project counts them: 8 x whole-file bytes / (width x height), headers included."""
    return 8 * file_bytes / (width * height)
