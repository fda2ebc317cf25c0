"""PSC (codec id 2): synchronised encoder/decoder, progressive decoding, divergence and signature checks,
rate control, corrupt files, Pillow and CLI, with tiny real UNets on 8x8 to 16x16 images."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, UnidentifiedImageError

import pillow_diffcodec as pdc
from pillow_diffcodec import cli
from pillow_diffcodec.codecs import codec_by_name
from pillow_diffcodec.codecs.psc import runner as psc
from pillow_diffcodec.codecs.psc.format import PSCParams, read_head
from pillow_diffcodec.errors import (
    ComputeMismatchError,
    CorruptFileError,
    DiffCodecError,
    DivergenceError,
    InvalidParameterError,
)
from pillow_diffcodec.fileinfo import read_file
from pillow_diffcodec.models import PixelDiffusionModel
from pillow_diffcodec.schedule import NoiseSchedule

from .conftest import psnr, tiny_unet
from .test_fuzz import mutate, mutation, mutations

SCHEDULE = NoiseSchedule.from_config({"num_train_timesteps": 1000, "beta_schedule": "linear"})
MODEL = PixelDiffusionModel(tiny_unet(0, attention=False), SCHEDULE, "tiny-psc")
SMALL = {"iterations": 3, "rows": 2, "samples": 3, "ddrm_steps": 2, "final_steps": 3, "final_sampler": "ddrm"}
TINY = {"iterations": 2, "rows": 1, "samples": 2, "ddrm_steps": 1, "final_steps": 1}


def identity_model() -> PixelDiffusionModel:
    """A real UNet with a zeroed output layer (epsilon = 0), without attention so that it is cheap."""
    unet = tiny_unet(0, attention=False)
    torch.nn.init.zeros_(unet.conv_out.weight)
    torch.nn.init.zeros_(unet.conv_out.bias)
    return PixelDiffusionModel(unet, SCHEDULE, "identity-psc")


@pytest.fixture(scope="module")
def image(photo) -> Image.Image:
    return photo.crop((8, 8, 24, 24))


@pytest.fixture(scope="module")
def encoded(image) -> pdc.api.EncodeResult:
    return pdc.encode_images([image], codec="PSC", model=MODEL, **SMALL)[0]


def pixels_of(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


def test_params_mirror_and_validate() -> None:
    params = PSCParams(iterations=5, rows=3, samples=4, quantizer="float8", step=0.1, max_bytes=77, check_every=2)
    assert PSCParams.from_bytes(params.to_bytes()) == params
    assert PSCParams.from_dict(params.to_dict()) == params
    assert params.step == float(np.float32(0.1))
    assert params.decode_model_calls() == 5 * 4 * 8 + 4 * 20
    with pytest.raises(InvalidParameterError, match=r"Expected rows in \[1, 3\], got 4"):
        PSCParams(rows=4, samples=4)
    with pytest.raises(InvalidParameterError, match="Unknown PSC option"):
        PSCParams.from_dict({"atoms": 2})
    with pytest.raises(CorruptFileError, match="trailing"):
        PSCParams.from_bytes(params.to_bytes() + b"\0")


def test_encoder_and_decoder_compute_identical_rows(image, encoded) -> None:
    params = pdc.info(encoded.data)["params"]
    threads = torch.get_num_threads()
    payload, recon, enc = psc.encode_one(
        MODEL, PSCParams(**params), 0, pixels_of(image), psc.compute_signature(MODEL), threads
    )
    pixels, dec = psc.replay(MODEL, PSCParams(**params), 0, 16, 16, payload)
    assert enc.rows.shape == (6, 3 * 16 * 16)
    assert torch.equal(enc.rows, dec.rows) and torch.equal(enc.y, dec.y)
    assert torch.equal(pixels, recon)
    rows = enc.rows.double()
    assert torch.allclose(rows @ rows.T, torch.eye(6, dtype=torch.float64), atol=1e-5)  # orthonormal rows


def test_samples_share_model_calls_and_files_from_before_still_decode(image, encoded) -> None:
    """The s posterior samples go through the UNet in one call per step (s times fewer calls at the same
    output); a file made one sample per call, as PSC made them before, records that in its signature and
    decodes by replaying it that way."""
    calls = []
    hook = MODEL.unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        pdc.decode(encoded.data, model=MODEL)
        batched_calls = list(calls)
        params = PSCParams(**pdc.info(encoded.data)["params"])
        old, recon, _ = psc.encode_one(MODEL, params, 0, pixels_of(image), psc.compute_signature(MODEL, batched=False),
                                       torch.get_num_threads(), batched=False)
    finally:
        hook.remove()
    assert batched_calls == [3] * (3 * 2) + [1] * 3  # 3 rounds x 2 DDRM steps of 3 samples, then 3 final steps
    parsed = read_file(encoded.data)
    decoded = psc.decode(MODEL, parsed.params, 0, 16, 16, old)
    assert torch.equal(decoded, recon)
    assert np.abs(decoded.numpy().astype(int) - pixels_of(encoded.reconstruction).numpy().astype(int)).max() <= 2


def test_decode_equals_the_encoders_reconstruction(encoded) -> None:
    decoded = pdc.decode(encoded.data, model=MODEL)
    assert np.array_equal(np.asarray(decoded), np.asarray(encoded.reconstruction))
    assert pdc.info(encoded.data)["codec"] == "PSC"


def test_prefix_decoding_error_falls_as_the_prefix_grows(photo) -> None:
    model = identity_model()
    image = photo.crop((20, 10, 28, 18))  # 8x8: 192 dimensions, up to 30 of them measured
    data = pdc.encode(image, codec="PSC", model=model, iterations=6, rows=5, samples=6, ddrm_steps=1,
                      final_steps=1, final_sampler="mean", step=0.02)
    assert read_head(read_file(data).params, read_file(data).payload)[0].measurements == 30
    errors = [psnr(image, pdc.decode(data, model=model, max_measurements=k)) for k in (0, 10, 20, 30)]
    assert errors == sorted(errors) and errors[-1] > errors[0] + 0.3, errors  # 30 of 192 dims: ~0.7 dB


def test_rate_control_never_exceeds_the_target_and_spends_more_at_higher_rates(image) -> None:
    counts = []
    for bpp in (1.8, 2.4):
        result = pdc.encode_images([image], codec="PSC", model=MODEL, bpp=bpp, **SMALL)[0]
        assert result.bpp <= bpp
        parsed = read_file(result.data)
        counts.append(read_head(parsed.params, parsed.payload)[0].measurements)
    assert counts[0] < counts[1]
    with pytest.raises(InvalidParameterError, match="below the minimum"):
        pdc.encode(image, codec="PSC", model=MODEL, bpp=1.0, **SMALL)


def test_float8_quantiser_round_trips(image) -> None:
    result = pdc.encode_images([image], codec="PSC", model=MODEL, quantizer="float8", **TINY)[0]
    assert np.array_equal(np.asarray(pdc.decode(result.data, model=MODEL)), np.asarray(result.reconstruction))


def test_divergence_is_reported_never_a_wrong_image(encoded) -> None:
    parsed = read_file(encoded.data)
    perturbed = PixelDiffusionModel(tiny_unet(0, attention=False), SCHEDULE, "tiny-psc")
    with torch.no_grad():
        perturbed.unet.conv_out.bias.add_(1e-3)
    with pytest.raises(DivergenceError, match="diverged from the encoder at round 3"):
        psc.decode(perturbed, parsed.params, 0, 16, 16, parsed.payload)


def test_another_compute_signature_is_refused_unless_forced(encoded) -> None:
    payload = read_file(encoded.data).payload
    data = bytearray(encoded.data[:-4])
    data[len(data) - len(payload) + 1] ^= 0xFF  # the signature hash follows the thread count
    data += zlib.crc32(data).to_bytes(4, "little")
    with pytest.raises(ComputeMismatchError, match="another compute signature"):
        pdc.decode(bytes(data), model=MODEL)
    forced = pdc.decode(bytes(data), model=MODEL, force=True)
    assert np.array_equal(np.asarray(forced), np.asarray(encoded.reconstruction))


def test_decode_options_reach_only_their_codec(encoded, image) -> None:
    with pytest.raises(InvalidParameterError, match="Unknown PSC decode option"):
        pdc.decode(encoded.data, model=MODEL, steps=3)
    with pytest.raises(InvalidParameterError, match="max_measurements"):
        pdc.decode(encoded.data, model=MODEL, max_measurements=-1)
    ddcm = pdc.encode(image, model=MODEL, steps=2, codebook_size=4)
    with pytest.raises(InvalidParameterError, match="Unknown DDCM decode option"):
        pdc.decode(ddcm, model=MODEL, max_measurements=3)
    with pytest.raises(InvalidParameterError, match="cannot generate"):
        pdc.generate(16, 16, codec="PSC", model=MODEL)


# A value other than the default for every PSC parameter (cheap ones).
EVERY_PSC_PARAMETER = {"iterations": 2, "rows": 1, "samples": 2, "ddrm_steps": 1, "final_steps": 1,
                       "final_sampler": "ddrm", "quantizer": "float8", "step": 0.5, "max_bytes": 4000,
                       "check_every": 1}


def test_every_parameter_works_in_image_save_and_the_cli(tmp_path, image, model_dir) -> None:
    assert set(EVERY_PSC_PARAMETER) == {option.name for option in codec_by_name("PSC").options}
    assert all(PSCParams().to_dict()[key] != value for key, value in EVERY_PSC_PARAMETER.items())
    buffer = io.BytesIO()
    image.save(buffer, format="PSC", model=str(model_dir), **EVERY_PSC_PARAMETER)
    opened = Image.open(io.BytesIO(buffer.getvalue()))
    assert opened.format == "PSC" and opened.size == (16, 16) and opened.info["params"] == EVERY_PSC_PARAMETER
    assert np.array_equal(np.asarray(opened.convert("RGB")), np.asarray(pdc.decode(buffer.getvalue())))
    image.save(tmp_path / "in.png")
    flags = [str(part) for key, value in EVERY_PSC_PARAMETER.items() for part in ("--" + key.replace("_", "-"), value)]
    assert cli.main(["encode", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.psc"), "--codec", "PSC",
                     "--model", str(model_dir), *flags]) == 0
    assert (tmp_path / "out.psc").read_bytes() == buffer.getvalue()
    assert Image.open(tmp_path / "out.psc").format == "PSC"
    prefix = pdc.decode(buffer.getvalue(), max_measurements=1)
    assert cli.main(["decode", str(tmp_path / "out.psc"), "-o", str(tmp_path / "prefix.png"),
                     "--max-measurements", "1"]) == 0  # the codec's own decode options reach it from the CLI
    assert np.array_equal(np.asarray(Image.open(tmp_path / "prefix.png")), np.asarray(prefix))


@pytest.fixture(scope="module")
def fuzz_seed(photo) -> bytes:
    return pdc.encode(photo.crop((0, 0, 8, 8)), codec="PSC", model=MODEL, **TINY)


def decode_psc_both_ways(data: bytes) -> None:
    """``decode`` and Pillow's ``load()`` of a mutated PSC file either succeed or raise a documented error."""
    for decode in (lambda: pdc.decode(data, model=MODEL, max_pixels=64 * 64, max_work=8 * 8 * 30),
                   lambda: Image.open(io.BytesIO(data)).load()):
        try:
            decode()
        except DiffCodecError as exc:
            assert str(exc)
        except (UnidentifiedImageError, SyntaxError):
            assert data[:4] != b"\x89DFC"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=mutation.map(lambda m: [m]), fix_crc=st.booleans())
def test_corrupt_files_raise_documented_errors(fuzz_seed, mutations, fix_crc: bool) -> None:
    decode_psc_both_ways(mutate(fuzz_seed, mutations, fix_crc))


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=mutations, fix_crc=st.booleans())
def test_many_corrupt_files_raise_documented_errors(fuzz_seed, changes, fix_crc: bool) -> None:
    decode_psc_both_ways(mutate(fuzz_seed, changes, fix_crc))


@pytest.mark.slow
def test_latent_model_round_trip(tmp_path, image) -> None:
    """PSC runs on the latent space of a (tiny) Stable Diffusion pipeline through the same model protocol."""
    from pillow_diffcodec.models import load_model

    from .test_latent import build_pipeline

    sd = load_model(str(build_pipeline(tmp_path / "sd")))
    result = pdc.encode_images([image], codec="PSC", model=sd, **TINY)[0]
    assert np.array_equal(np.asarray(pdc.decode(result.data, model=sd)), np.asarray(result.reconstruction))
