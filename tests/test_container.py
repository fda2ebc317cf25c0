"""Container format: layout, header budget, chunks, and clear errors for damaged files."""

from __future__ import annotations

import zlib

import pytest

import pillow_diffcodec as pdc
from pillow_diffcodec import container
from pillow_diffcodec.errors import (
    CorruptFileError,
    DecompressionBombError,
    NotDiffCodecFileError,
    UnsupportedVersionError,
)


def header(**changes: object) -> container.Header:
    fields = dict(codec_id=1, mode="RGB", width=768, height=512, seed=0, fingerprint=b"\x01\x02\x03\x04",
                  model_name="m", params=b"\x32\x80\x02\x01\x01\x00\x00")
    fields.update(changes)
    return container.Header(**fields)


def with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "little")


def test_round_trip_with_chunks() -> None:
    h = header(chunks=((b"iCCP", b"profile"), (b"eXIf", b"")))
    data = container.pack(h, b"payload!")
    assert data.startswith(b"\x89DFC\x01\x01\x03\x01")
    parsed, payload = container.parse(data)
    assert parsed == h and payload == b"payload!"


def test_fixed_overhead_is_at_most_32_bytes_plus_the_model_name() -> None:
    h = header(model_name="builtin", width=768, height=512)
    assert container.header_size(h) - len("builtin") <= 32


def test_file_layout_offsets(model, photo) -> None:
    data = pdc.encode(photo, model=model, steps=3, codebook_size=8)
    assert data[:4] == b"\x89DFC" and data[4] == 1 and data[5] == 1 and data[6] == 3
    assert data[8] == 64 and data[9] == 48  # width and height varints
    assert int.from_bytes(data[-4:], "little") == zlib.crc32(data[:-4])


def test_foreign_and_empty_bytes() -> None:
    for foreign in [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, b"GIF89a", b"\x89DF"]:
        with pytest.raises(NotDiffCodecFileError, match="magic"):
            container.parse(foreign)


def test_every_truncation_is_a_corrupt_file_error(model, photo) -> None:
    data = pdc.encode(photo, model=model, steps=3, codebook_size=8)
    for cut in range(len(data)):
        with pytest.raises(CorruptFileError):
            pdc.decode(data[:cut], model=model)


def test_unknown_version_codec_flags_and_critical_chunks() -> None:
    good = container.pack(header(), b"")
    with pytest.raises(UnsupportedVersionError, match="version 2"):
        container.parse(with_crc(good[:4] + b"\x02" + good[5:-4]))
    with pytest.raises(UnsupportedVersionError, match="codec id 9"):
        pdc.info(with_crc(good[:5] + b"\x09" + good[6:-4]))
    with pytest.raises(UnsupportedVersionError, match="flags"):
        container.parse(with_crc(good[:7] + b"\x80" + good[8:-4]))
    critical = container.pack(header(chunks=((b"ZZZZ", b"x"),)), b"")
    with pytest.raises(UnsupportedVersionError, match="critical chunk"):
        container.parse(critical)
    ancillary = container.pack(header(chunks=((b"zzzz", b"x"),)), b"")
    assert container.parse(ancillary)[0].chunks == ((b"zzzz", b"x"),)


def test_decompression_bomb_limit_applies_before_decoding() -> None:
    huge = container.pack(header(width=2**24, height=2**24), b"")
    with pytest.raises(DecompressionBombError, match="exceeds the limit"):
        pdc.decode(huge)
    with pytest.raises(CorruptFileError, match="width is 16777217"):
        container.parse(with_crc(container.pack(header(), b"")[:8] + b"\x81\x80\x80\x08" + container.pack(header(), b"")[10:-4]))


def test_hostile_lengths_do_not_allocate() -> None:
    body = container.pack(header(), b"")[:-4]
    name_at = body.index(b"\x01m")
    hostile = body[:name_at] + b"\xff\xff\xff\xff\x0f" + body[name_at + 1 :]
    with pytest.raises(CorruptFileError, match="model name length"):
        container.parse(with_crc(hostile))


def test_info_reads_the_header(model, photo) -> None:
    data = pdc.encode(photo, model=model, steps=3, codebook_size=8, seed=42)
    meta = pdc.info(data)
    assert meta["codec"] == "DDCM" and meta["width"] == 64 and meta["height"] == 48 and meta["seed"] == 42
    assert meta["model"] == "tiny-test" and meta["fingerprint"] == model.fingerprint.hex()
    assert meta["params"]["steps"] == 3 and meta["bpp"] == 8 * len(data) / (64 * 48)
