"""CorrDiff codec: latent symbols both ways, decode == the encoder's corrected reconstruction, the stored
gammas (float16, used by the decoder), the correction/e2e decode options, rate points, Pillow round trip,
decode-work limit and damaged files (tiny real networks built here)."""

from __future__ import annotations

import io
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pillow_diffcodec as pdc
from pillow_diffcodec.codecs.cdc import runner as cdc
from pillow_diffcodec.codecs.corrdiff import runner as crd
from pillow_diffcodec.codecs.corrdiff.format import CorrDiffParams, split_payload
from pillow_diffcodec.codecs.corrdiff.model import CorrDiffArchitecture, CorrDiffNetwork, write_rate_point
from pillow_diffcodec.conditional_unet import ddim_decode
from pillow_diffcodec.errors import CorruptFileError, DecompressionBombError, InvalidParameterError, RateFallbackWarning
from pillow_diffcodec.models import CorrDiffModel, load_model

TINY = CorrDiffArchitecture(width=16, latent=8, hyper=8, unet=(8, 16, 16), e2e_width=8)


def tiny_corrdiff_folder(folder: Path, typical: tuple[float, ...] = (0.3, 0.9)) -> Path:
    """A CorrDiff model folder with one randomly initialised tiny network per typical bpp (``typical``)."""
    for i, bpp in enumerate(typical):
        torch.manual_seed(i)
        network = CorrDiffNetwork(TINY)
        with torch.no_grad():  # spread the latent over many symbols, and make D and mu_theta differ clearly
            network.transform.g_a.net[-1].weight.mul_(40.0)
            network.transform.hyperprior.h_a[-1].weight.mul_(10.0)
            network.e2e.net[-2].bias.add_(0.3)
        network.update_tables()
        write_rate_point(folder, TINY, f"r{i}", 0.01 * (i + 1), bpp, network)
    return folder


@pytest.fixture(scope="module")
def crd_dir(tmp_path_factory) -> Path:
    return tiny_corrdiff_folder(tmp_path_factory.mktemp("models") / "tiny-corrdiff").resolve()


@pytest.fixture(scope="module")
def crd_model(crd_dir) -> CorrDiffModel:
    return load_model(str(crd_dir))


@pytest.fixture(scope="module")
def coded(crd_model, photo) -> pdc.EncodeResult:
    return pdc.encode_images([photo], codec="CORRDIFF", model=crd_model, rate_point=1, seed=7)[0]


def _latent(crd_model, photo):
    network = crd_model.network(1)
    image = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1)
    return network, cdc.encode_latent(network, cdc._to_input(image, torch.device("cpu")))


def test_params_bytes_and_work() -> None:
    params = CorrDiffParams(3, 5)
    assert CorrDiffParams.from_bytes(params.to_bytes()) == params
    assert params.decode_model_calls() == 6 and params.decode_model_calls(e2e=True) == 1
    with pytest.raises(CorruptFileError):
        CorrDiffParams.from_bytes(params.to_bytes() + b"\0")
    with pytest.raises(CorruptFileError, match="metric code 9"):
        CorrDiffParams.from_bytes(params.to_bytes()[:-1] + b"\x09")
    for bad in (dict(rate_point=-1), dict(steps=0), dict(metric="lpips")):
        with pytest.raises(InvalidParameterError, match=next(iter(bad))):
            CorrDiffParams(**bad)
    with pytest.raises(InvalidParameterError, match="e2e"):
        params.decode_model_calls(e2e="yes")


def test_latent_symbols_round_trip_exactly(crd_model, photo) -> None:
    network, (payload, y_hat, z_sym, y_sym) = _latent(crd_model, photo)
    decoded, z_dec, y_dec = cdc.decode_latent(network, payload, *photo.size)
    assert np.array_equal(z_sym, z_dec) and np.array_equal(y_sym, y_dec) and torch.equal(decoded, y_hat)
    assert np.abs(y_sym).sum() > 0


def test_decode_equals_the_encoders_corrected_reconstruction(coded, crd_dir) -> None:
    decoded = pdc.decode(coded.data)  # the model is found from the file's reference
    assert np.array_equal(np.asarray(decoded), np.asarray(coded.reconstruction))
    info = pdc.info(coded.data)
    assert info["codec"] == "CORRDIFF" and info["model"] == str(crd_dir)
    assert info["params"] == {"rate_point": 1, "steps": 8, "metric": "mse"}


def test_gammas_are_stored_as_float16_and_minimise_the_mse(coded, crd_model, photo) -> None:
    """The payload opens with 8 float16 gammas in [0, 1]; each is Eq. 20's minimiser for MSE at its step."""
    payload = coded.data[-4 - pdc.info(coded.data)["payload_bytes"]: -4]
    gammas, _ = split_payload(payload, 8)
    assert gammas.dtype == np.float16 and ((gammas >= 0) & (gammas <= 1)).all()
    target = torch.rand(1, 3, 8, 8) * 2 - 1
    a, b = torch.rand(1, 3, 8, 8) * 2 - 1, torch.rand(1, 3, 8, 8) * 2 - 1
    g = crd.best_gamma(target, a, b)
    mse = [float(((x * a + (1 - x) * b - target) ** 2).mean()) for x in (g - 0.01, g, g + 0.01)]
    assert 0 < g < 1 and mse[1] <= min(mse[0], mse[2])
    assert crd.best_gamma(a, a, b) == pytest.approx(1.0) and crd.best_gamma(b, a, b) == pytest.approx(0.0)
    assert crd.best_gamma(target, a, a) == 1.0


def _with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "little")


def test_decoder_uses_the_stored_gammas(coded) -> None:
    data = coded.data
    start = len(data) - 4 - pdc.info(data)["payload_bytes"]
    changed = 0
    for step in range(8):
        body = bytearray(data[:-4])
        old = np.frombuffer(bytes(body[start + 2 * step: start + 2 * step + 2]), "<f2")[0]
        body[start + 2 * step: start + 2 * step + 2] = np.array([1.0 - float(old)], "<f2").tobytes()
        image = np.asarray(pdc.decode(_with_crc(bytes(body))))
        changed += not np.array_equal(image, np.asarray(coded.reconstruction))
    assert changed >= 6  # flipping a gamma changes the output (late steps may round to the same pixels)
    body = bytearray(data[:-4])
    body[start: start + 2] = np.array([1.5], "<f2").tobytes()
    with pytest.raises(CorruptFileError, match="gamma 0"):
        pdc.decode(_with_crc(bytes(body)))


def test_correction_off_is_plain_conditional_sampling(coded, crd_model, photo) -> None:
    network, (_, y_hat, _, _) = _latent(crd_model, photo)
    x_start = crd.start_noise(7, crd._shape(y_hat), torch.device("cpu"))
    with torch.no_grad():
        plain = cdc._to_pixels(ddim_decode(network.unet, y_hat, x_start, 8), *photo.size)
        ones = crd.sample(network, y_hat, x_start, network.e2e(y_hat).clamp(-1, 1), 8, lambda i, _: 1.0)
    off = pdc.decode(coded.data, correction=False)
    assert np.array_equal(np.asarray(off), plain.permute(1, 2, 0).numpy())
    assert torch.equal(cdc._to_pixels(ones, *photo.size), plain)  # gamma = 1 everywhere is no correction
    assert not np.array_equal(np.asarray(off), np.asarray(coded.reconstruction))
    assert 0.9 < float(x_start.std()) < 1.1  # x_T ~ N(0, I) from the file's seed


def test_e2e_is_the_end_to_end_decoder_alone(coded, crd_model, photo) -> None:
    network, (_, y_hat, _, _) = _latent(crd_model, photo)
    with torch.no_grad():
        expected = cdc._to_pixels(network.e2e(y_hat).clamp(-1, 1), *photo.size)
    assert np.array_equal(np.asarray(pdc.decode(coded.data, e2e=True)), expected.permute(1, 2, 0).numpy())


def test_correction_lowers_the_error_against_its_ablation(coded, photo) -> None:
    """Each gamma is the MSE-best mix at its step, so the corrected image beats plain sampling on this file."""
    original = np.asarray(photo, dtype=np.float64)

    def mse(image: Image.Image) -> float:
        return float(((np.asarray(image, dtype=np.float64) - original) ** 2).mean())

    assert mse(coded.reconstruction) < mse(pdc.decode(coded.data, correction=False))


def test_pillow_round_trip(crd_dir, photo, tmp_path) -> None:
    buffer = io.BytesIO()
    photo.save(buffer, format="CORRDIFF", model=str(crd_dir), bpp=2.0, steps=3)
    buffer.seek(0)
    with Image.open(buffer) as opened:
        assert opened.format == "CORRDIFF" and opened.size == photo.size
        opened.load()
        assert np.array_equal(np.asarray(opened), np.asarray(pdc.decode(buffer.getvalue())))
    path = tmp_path / "x.crd"
    photo.save(path, model=str(crd_dir), rate_point=0, steps=2)
    with Image.open(path) as opened:
        assert opened.format == "CORRDIFF"


def test_rate_control_measures_each_rate_point_and_bpp_is_a_bound(crd_model, photo) -> None:
    pixels = photo.width * photo.height
    sizes = [8 * len(pdc.encode(photo, codec="CORRDIFF", model=crd_model, rate_point=i, steps=2)) / pixels
             for i in (0, 1)]

    def coded(bpp: float) -> tuple[dict, float]:
        data = pdc.encode(photo, codec="CORRDIFF", model=crd_model, steps=2, bpp=bpp)
        return pdc.info(data)["params"], 8 * len(data) / pixels

    assert coded(max(sizes)) == ({"rate_point": 1, "steps": 2, "metric": "mse"}, sizes[1])
    smallest = min((0, 1), key=sizes.__getitem__)
    params, bpp = coded(min(sizes))
    assert bpp <= min(sizes) and params["rate_point"] in {smallest, 1}
    with pytest.warns(RateFallbackWarning, match="below every rate point"):
        params, bpp = coded(0.9 * min(sizes))
    assert (params["rate_point"], bpp) == (smallest, sizes[smallest])
    with pytest.raises(InvalidParameterError, match="rate_point 5"):
        pdc.encode(photo, codec="CORRDIFF", model=crd_model, rate_point=5)
    with pytest.raises(InvalidParameterError, match="not both"):
        pdc.encode(photo, codec="CORRDIFF", model=crd_model, rate_point=0, bpp=1.0)


def test_codecs_refuse_the_other_kinds_of_model(crd_model, model, photo, tmp_path) -> None:
    from .test_cdc import tiny_cdc_folder

    with pytest.raises(InvalidParameterError, match="needs a CorrDiff model"):
        pdc.encode(photo, codec="CORRDIFF", model=model)
    with pytest.raises(InvalidParameterError, match="needs a CorrDiff model"):
        pdc.encode(photo, codec="CORRDIFF", model=load_model(str(tiny_cdc_folder(tmp_path / "cdc"))))
    with pytest.raises(InvalidParameterError, match="needs a CDC model"):
        pdc.encode(photo, codec="CDC", model=crd_model)


def test_decode_work_limit_counts_the_steps_and_d(coded) -> None:
    calls = 9 * coded.reconstruction.width * coded.reconstruction.height
    pdc.decode(coded.data, max_work=calls)
    with pytest.raises(DecompressionBombError):
        pdc.decode(coded.data, max_work=calls - 1)
    pdc.decode(coded.data, max_work=calls // 9, e2e=True)
    with pytest.raises(InvalidParameterError, match="correction"):
        pdc.decode(coded.data, correction=2)


def test_damaged_files_raise_documented_errors(coded, crd_model) -> None:
    data = coded.data
    payload_start = len(data) - 4 - pdc.info(data)["payload_bytes"]
    for cut in (len(data) - 1, len(data) - 5, payload_start + 3, payload_start + 17):
        with pytest.raises(CorruptFileError):
            pdc.decode(data[:cut], model=crd_model)
    refused = 0
    latent_start = payload_start + 16
    for offset in range(latent_start, len(data) - 4):  # every byte of the latent, CRC fixed up
        body = bytearray(data[:-4])
        body[offset] ^= 0x55
        try:
            image = pdc.decode(_with_crc(bytes(body)), model=crd_model, e2e=True)
        except CorruptFileError:
            refused += 1
        else:
            assert np.array_equal(np.asarray(image), np.asarray(pdc.decode(data, e2e=True)))
    assert refused >= 0.8 * (len(data) - 4 - latent_start)
    with pytest.raises(CorruptFileError):  # payload truncated to a word boundary, file CRC fixed up
        pdc.decode(_with_crc(data[: len(data) - 8]), model=crd_model)


def test_file_naming_a_missing_rate_point_is_corrupt(tmp_path) -> None:
    one_point = load_model(str(tiny_corrdiff_folder(tmp_path / "one", (0.3,))))
    with pytest.raises(CorruptFileError, match="rate point 1"):
        crd.decode(one_point, CorrDiffParams(1), 0, 8, 8, b"")


def test_shared_base_weights_load_and_are_fingerprinted(tmp_path, photo) -> None:
    """A rate point may name a CDC weights file for E, hyperprior and mu_theta and hold only D itself."""
    from pillow_diffcodec.codecs.cdc.model import RatePoint
    from pillow_diffcodec.codecs.cdc.model import write_rate_point as write_cdc

    torch.manual_seed(0)
    full = CorrDiffNetwork(TINY)
    full.update_tables()
    cdc_net = cdc.CDCNetwork(TINY.cdc)
    cdc_net.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("e2e.")})
    cdc_net.tables = full.tables
    write_cdc(tmp_path / "cdc", TINY.cdc, RatePoint("p", 0.01, 0.5, "p.safetensors"), cdc_net)
    write_rate_point(tmp_path / "crd", TINY, "p", 0.01, 0.5, full, base=tmp_path / "cdc" / "p.safetensors")
    write_rate_point(tmp_path / "whole", TINY, "p", 0.01, 0.5, full)
    shared, whole = load_model(str(tmp_path / "crd")), load_model(str(tmp_path / "whole"))
    assert shared.rate_points[0].weights == ("../cdc/p.safetensors", "p-e2e.safetensors")
    small = photo.crop((0, 0, 24, 16))
    a = pdc.encode(small, codec="CORRDIFF", model=shared, rate_point=0, steps=2)
    b = pdc.encode(small, codec="CORRDIFF", model=whole, rate_point=0, steps=2)
    assert a[-4 - pdc.info(a)["payload_bytes"]:-4] == b[-4 - pdc.info(b)["payload_bytes"]:-4]
    assert shared.fingerprint != whole.fingerprint


def test_training_script_exports_a_loadable_rate_point(tmp_path) -> None:
    from pillow_diffcodec.training import corrdiff as train

    data = tmp_path / "photos"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (140, 150, 3), dtype=np.uint8)).save(data / f"{i}.png")
    common = ["--data", str(data), "--name", "only", "--architecture", "tiny", "--checkpoint-every", "1",
              "--output", str(tmp_path / "model"), "--state-dir", str(tmp_path / "state")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train.main([*common, "--phase", "joint", "--max-steps", "1"])
        train.main([*common, "--phase", "joint", "--max-steps", "2"])  # resumes from its state
    state = torch.load(tmp_path / "state" / "corrdiff-only.pt", weights_only=False)
    assert state["step"] == 2 and len(state["losses"]) == 2 and set(state["losses"][0]) == {"bpp", "mse_d", "mse_mu"}
    loaded = load_model(str(tmp_path / "model"))
    image = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    result = pdc.encode_images([image], codec="CORRDIFF", model=loaded, steps=2)[0]
    assert np.array_equal(np.asarray(pdc.decode(result.data, model=loaded)), np.asarray(result.reconstruction))


def test_decoder_phase_trains_only_d() -> None:
    from pillow_diffcodec.training.corrdiff import loss_terms, trained_parameters

    torch.manual_seed(0)
    network = CorrDiffNetwork(TINY)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    params = trained_parameters(network, "decoder")
    assert {id(p) for p in params} == {id(p) for p in network.e2e.parameters()}
    optimiser = torch.optim.SGD(params, lr=0.1)
    terms = loss_terms(network, torch.rand(2, 3, 64, 64) * 2 - 1, "decoder", torch.Generator().manual_seed(0))
    assert set(terms) == {"bpp", "mse_d"}
    terms["mse_d"].backward()
    optimiser.step()
    changed = {k for k, v in network.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("e2e.") for k in changed)


def test_command_line_encodes_and_decodes_with_the_options(crd_dir, photo, tmp_path) -> None:
    from pillow_diffcodec.cli import main

    photo.save(tmp_path / "in.png")
    assert main(["encode", str(tmp_path / "in.png"), "-o", str(tmp_path / "x.crd"), "--codec", "CORRDIFF",
                 "--model", str(crd_dir), "--rate-point", "1", "--steps", "3", "--metric", "mse"]) == 0
    data = (tmp_path / "x.crd").read_bytes()
    assert pdc.info(data)["params"] == {"rate_point": 1, "steps": 3, "metric": "mse"}
    for flags, options in (([], {}), (["--no-correction"], {"correction": False}), (["--e2e"], {"e2e": True})):
        out = tmp_path / f"out{len(flags)}{''.join(flags)}.png"
        assert main(["decode", str(tmp_path / "x.crd"), "-o", str(out), *flags]) == 0
        with Image.open(out) as decoded:
            assert np.array_equal(np.asarray(decoded), np.asarray(pdc.decode(data, **options)))


def test_builtin_corrdiff_shares_builtin_cdcs_networks(photo) -> None:
    """builtin-corrdiff = builtin-cdc's rate points (E, hyperprior, mu_theta, tables: the same files) + a trained D
    each; its latent payload is CDC's, byte for byte, and its files decode to the encoder's reconstruction."""
    from pillow_diffcodec.models import BUILTIN_MODELS

    ours, base = load_model("builtin-corrdiff"), load_model("builtin-cdc")
    assert [p.name for p in ours.rate_points] == [p.name for p in base.rate_points]
    assert (BUILTIN_MODELS["builtin-corrdiff"] / "MODEL_CARD.md").is_file()
    for point, a, b in zip(ours.rate_points, ours.networks, base.networks):
        assert point.weights[0] == f"../builtin-cdc/{point.name}.safetensors"
        assert (BUILTIN_MODELS["builtin-corrdiff"] / point.weights[1]).stat().st_size < 2 * 2**20
        for name, tensor in b.state_dict().items():
            assert torch.equal(a.state_dict()[name], tensor), name
        assert np.array_equal(a.entropy_tables().y_freq, b.entropy_tables().y_freq)
    small = photo.crop((0, 0, 32, 32))
    result = pdc.encode_images([small], codec="CORRDIFF", rate_point=1, steps=2)[0]
    assert np.array_equal(np.asarray(pdc.decode(result.data)), np.asarray(result.reconstruction))
    cdc_data = pdc.encode(small, codec="CDC", rate_point=1)

    def payload(data: bytes) -> bytes:
        return data[len(data) - 4 - pdc.info(data)["payload_bytes"]: -4]

    assert payload(result.data)[4:] == payload(cdc_data)
