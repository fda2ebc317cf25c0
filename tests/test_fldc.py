"""FLDC codec (issue 22): entropy-coded latent round trip, P_phi's side information, Algorithm 1's decoder,
rate control over lambda, model folders on a tiny unconditional latent pipeline and a tiny SD pipeline,
decode-work limits, the trainer, and damaged files (tiny real networks built here; the built-in model
for the properties only a trained P_phi has)."""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec.codecs.fldc import runner as fldc
from pillow_diffcodec.codecs.fldc.format import MAX_DECODE_STEPS, FLDCParams, Gamma, decode_steps
from pillow_diffcodec.codecs.fldc.model import write_model
from pillow_diffcodec.codecs.fldc.network import FLDCArchitecture, FLDCNetwork
from pillow_diffcodec.compute import pinned_compute
from pillow_diffcodec.errors import (
    CorruptFileError,
    DiffCodecError,
    InvalidParameterError,
    RateFallbackWarning,
)
from pillow_diffcodec.models import FLDCModel, kind_of, load_model, pixels_per_position

from .test_latent import build_pipeline
from .test_latent_unconditional import build_folder

TINY = FLDCArchitecture(estimator=(8, 8, 8), hyper_width=8, hyper=4)
LAMBDAS = [4.0, 16.0, 64.0]


def tiny_fldc_folder(folder: Path, base: Path | None = None, seed: int = 0) -> Path:
    """An FLDC folder on a tiny unconditional latent pipeline (or ``base``), P_phi randomly initialised with a
    quantiser step that spreads the tiny VAE's latent over several symbols."""
    base = base or build_folder(folder / "base", seed)
    torch.manual_seed(seed)
    network = FLDCNetwork(TINY)
    with torch.no_grad():
        network.estimator.net[-1].bias[: TINY.latent] += 2.5
    write_model(folder / "fldc", str(base), TINY, network, LAMBDAS, [0.5, 1.0, 2.0])
    return (folder / "fldc").resolve()


@pytest.fixture(scope="module")
def fldc_dir(tmp_path_factory) -> Path:
    return tiny_fldc_folder(tmp_path_factory.mktemp("fldc"))


@pytest.fixture(scope="module")
def model(fldc_dir) -> FLDCModel:
    return load_model(str(fldc_dir))


@pytest.fixture(scope="module")
def coded(model, photo) -> pdc.EncodeResult:
    return pdc.encode_images([photo], codec="FLDC", model=model, lam=16.0)[0]


@pytest.fixture(scope="module")
def builtin() -> FLDCModel:
    return load_model("builtin-fldc")


def _payload(data: bytes) -> tuple[object, bytes]:
    from pillow_diffcodec.fileinfo import read_file

    parsed = read_file(data)
    return parsed, parsed.payload


def test_params_bytes_validation_and_work() -> None:
    params = FLDCParams(16.1, 1234)
    assert params.lam == float(np.float32(16.1))
    assert FLDCParams.from_bytes(params.to_bytes()) == params
    assert FLDCParams.from_dict(params.to_dict()) == params
    assert params.decode_model_calls() == MAX_DECODE_STEPS == decode_steps(1.0)
    assert decode_steps(0.0) == 0 and decode_steps(0.031) == 4
    with pytest.raises(CorruptFileError, match="trailing"):
        FLDCParams.from_bytes(params.to_bytes() + b"\0")
    with pytest.raises(CorruptFileError, match="lambda"):
        FLDCParams.from_bytes(struct.pack("<f", float("nan")) + b"\0")
    with pytest.raises(InvalidParameterError, match="Expected lam"):
        FLDCParams(0.0)
    with pytest.raises(InvalidParameterError, match="Unknown FLDC option"):
        FLDCParams.from_dict({"lambda": 3})


def test_model_kind_limits_and_registry(model, fldc_dir) -> None:
    assert kind_of(model) == "fldc" and model.vae_factor == 2
    assert pixels_per_position(str(fldc_dir)) == 4 and pixels_per_position(model) == 4
    entry = pdc.codecs.codec_by_name("fldc")
    assert (entry.codec_id, entry.extensions, entry.model_kind, entry.default_model) == (
        5, (".fldc",), "fldc", "builtin-fldc")
    with pytest.raises(InvalidParameterError, match="needs an FLDC model"):
        pdc.encode(Image.new("RGB", (16, 16)), codec="FLDC", model="builtin-latent")


def test_symbols_are_identical_both_ways(model, photo) -> None:
    pixels = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1)
    y = fldc.image_latent(model, pixels)
    gamma = fldc.predict_gamma(model.network, y, 16.0)
    payload, h_sym, z_sym = fldc.code_latent(model.network, y, gamma)
    assert len(np.unique(z_sym)) > 3  # a non-trivial latent
    y_hat, decoded_gamma, decoded = fldc.decode_latent(model, payload, *photo.size)
    assert decoded_gamma == gamma and np.array_equal(decoded, z_sym)
    assert y_hat.shape == y.shape


def test_decode_is_the_encoders_reconstruction_through_pillow(coded, model, photo) -> None:
    with Image.open(io.BytesIO(coded.data)) as image:
        assert image.format == "FLDC" and image.size == photo.size  # header only: no model loaded yet
    assert pdc.decode(coded.data, model=model).tobytes() == coded.reconstruction.tobytes()
    buffer = io.BytesIO()
    photo.save(buffer, format="FLDC", model=model, lam=16.0)
    assert buffer.getvalue() == coded.data
    assert pdc.info(coded.data)["params"] == {"lam": 16.0, "max_bytes": 0}


def test_the_stored_gamma_and_t_are_used(coded, model, photo) -> None:
    _, payload = _payload(coded.data)
    channels = model.network.arch.latent
    side = 4 * (2 * channels + 2)
    gamma = Gamma.from_bytes(payload[:side], channels)
    assert gamma.lam == 16.0 and 0 < gamma.t < 1 and gamma.steps == decode_steps(gamma.t) >= 1
    params = FLDCParams(16.0)
    with pinned_compute(1):  # as the API decodes: the codec maths on one thread (the encoder's pixels)
        plain = fldc.decode(model, params, 0, *photo.size, payload)
    assert plain.numpy().tobytes() == np.asarray(coded.reconstruction).transpose(2, 0, 1).tobytes()
    calls = []
    fldc.decode(model, params, 0, *photo.size, payload, lambda done, total: calls.append(total))
    assert calls == [gamma.steps] * gamma.steps  # ceil(100 t) UNet calls
    for changed in (Gamma(gamma.lam, gamma.log_scale, gamma.shift, min(1.0, gamma.t * 3 + 0.05)),
                    Gamma(gamma.lam, tuple(v + 0.3 for v in gamma.log_scale), gamma.shift, gamma.t),
                    Gamma(gamma.lam, gamma.log_scale, gamma.shift, 0.0)):
        other = fldc.decode(model, params, 0, *photo.size, changed.to_bytes() + payload[side:])
        assert not torch.equal(other, plain)


def test_a_tiny_sd_pipeline_round_trips(tmp_path, photo) -> None:
    sd = build_pipeline(tmp_path / "sd")
    folder = tiny_fldc_folder(tmp_path / "f", base=sd)
    model = load_model(str(folder))
    assert model.base.text_encoder is not None
    result = pdc.encode_images([photo], codec="FLDC", model=str(folder), lam=8.0)[0]
    assert pdc.decode(result.data).tobytes() == result.reconstruction.tobytes()  # the file names the folder


def test_bpp_is_an_upper_bound_by_a_search_over_lambda(builtin, model, photo) -> None:
    with pytest.warns(RateFallbackWarning, match="smallest lambda"):
        pdc.encode(photo, codec="FLDC", model=model, bpp=0.01)
    sizes = {lam: len(pdc.encode(photo, codec="FLDC", lam=lam)) for lam in (4.0, 256.0)}
    assert sizes[4.0] < sizes[256.0]
    pixels = photo.size[0] * photo.size[1]
    target = 8 * (sizes[4.0] + sizes[256.0]) / 2 / pixels
    data = pdc.encode(photo, codec="FLDC", bpp=target)
    assert 8 * sizes[4.0] / pixels <= 8 * len(data) / pixels <= target
    assert pdc.info(data)["params"]["max_bytes"] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        roomy = pdc.encode(photo, codec="FLDC", bpp=8 * sizes[256.0] / pixels + 0.01)
    assert _payload(roomy)[1][:4] == struct.pack("<f", 256.0)  # the largest lambda fits: no search
    assert struct.unpack("<f", _payload(data)[1][:4])[0] < 256.0  # the lambda the search found


def test_damaged_files_raise_documented_errors(coded, model, photo) -> None:
    _, payload = _payload(coded.data)
    side = 4 * (2 * model.network.arch.latent + 2)
    params = FLDCParams(16.0)
    gamma = Gamma.from_bytes(payload[:side], model.network.arch.latent)
    bad_t = struct.pack("<f", 1.5)
    cases = {
        "shorter than its side": payload[: side - 1],
        "timestep fraction": payload[: side - 4] + bad_t + payload[side:],
        "non-finite": struct.pack("<f", float("inf")) + payload[4:],
        "checksum|damaged|stream": payload[:side] + payload[side:-4] + bytes(4 * [payload[-1] ^ 0xFF]),
    }
    assert gamma.t < 1
    for message, damaged in cases.items():
        with pytest.raises(CorruptFileError, match=message):
            fldc.decode(model, params, 0, *photo.size, damaged)
    truncated = coded.data[: len(coded.data) // 2]
    with pytest.raises(CorruptFileError):
        pdc.decode(truncated, model=model)


def test_fuzz_truncations_and_bit_flips_give_documented_errors_only(coded, model, photo) -> None:
    _, payload = _payload(coded.data)
    rng = np.random.default_rng(0)
    params = FLDCParams(16.0)
    outcomes = {"ok": 0, "error": 0}
    for trial in range(60):
        data = bytearray(payload)
        if trial % 3 == 0:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            for _ in range(int(rng.integers(1, 4))):
                position = int(rng.integers(0, len(data)))
                data[position] ^= 1 << int(rng.integers(0, 8))
        try:
            pixels = fldc.decode(model, params, 0, *photo.size, bytes(data))
            assert pixels.shape == (3, photo.size[1], photo.size[0]) and pixels.dtype == torch.uint8
            outcomes["ok"] += 1
        except DiffCodecError:
            outcomes["error"] += 1
    assert outcomes["error"] > 10
    for trial in range(30):  # whole files through the API: the container's checks first
        data = bytearray(coded.data)
        data[int(rng.integers(0, len(data)))] ^= 0xFF
        try:
            pdc.decode(bytes(data[: len(data) - trial]), model=model)
        except DiffCodecError:
            pass


def test_one_builtin_model_at_several_lambdas_gives_increasing_rates(builtin, photo) -> None:
    sizes = [len(pdc.encode(photo, codec="FLDC", lam=lam)) for lam in (4.0, 32.0, 256.0)]
    assert sizes[0] <= sizes[1] < sizes[2]  # 64x48 px: the two lowest rates can tie in whole bytes
    assert builtin.lambda_range == (4.0, 256.0)
    assert builtin.base.name == "builtin-latent" and builtin.vae_factor == 8
    assert pixels_per_position("builtin-fldc") == 64  # follows fldc.json to builtin-latent's f8 VAE


def test_trainer_runs_resumes_and_exports_a_loadable_model(tmp_path, photo) -> None:
    from pillow_diffcodec.training import fldc as trainer

    base = build_folder(tmp_path / "base")
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(2):
        photo.rotate(180 * i).resize((96, 64)).save(data / f"p{i}.png")
    common = ["--data", str(data), "--base", str(base), "--state-dir", str(tmp_path / "states"), "--crop", "32",
              "--window", "8", "--architecture", "tiny", "--output", str(tmp_path / "out"), "--checkpoint-every", "1"]
    trainer.main(common + ["--max-steps", "2"])
    state = torch.load(tmp_path / "states" / "fldc-builtin.pt", weights_only=False)
    assert state["step"] == 2 and len(state["losses"]) == 2
    trainer.main(common + ["--max-steps", "3"])
    assert torch.load(tmp_path / "states" / "fldc-builtin.pt", weights_only=False)["step"] == 3
    model = load_model(str(tmp_path / "out"))
    assert kind_of(model) == "fldc" and model.lambdas == sorted(trainer.LAMBDAS)
    result = pdc.encode_images([photo], codec="FLDC", model=model, lam=16.0)[0]
    assert pdc.decode(result.data, model=model).tobytes() == result.reconstruction.tobytes()


def test_eval_runs_fldc_beside_a_baseline(fldc_dir, photo, tmp_path) -> None:
    from pillow_diffcodec.evaluation import evaluate

    folder = tmp_path / "images"
    folder.mkdir()
    photo.save(folder / "a.png")
    table = evaluate(str(folder), codec="FLDC", model=str(fldc_dir), bpp=[24.0], baselines=["jpeg"], progress=False)
    assert table.codec_names() == ["FLDC", "JPEG"]
