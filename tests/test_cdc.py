"""CDC codec: entropy-coded latent round trip, deterministic and seeded stochastic decoding, Pillow format,
rate points, model kinds, decode-work limit and damaged files (tiny real networks built here)."""

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
from pillow_diffcodec.codecs.cdc.format import CDCParams
from pillow_diffcodec.codecs.cdc.model import CDCArchitecture, CDCNetwork, RatePoint, write_rate_point
from pillow_diffcodec.errors import (
    CorruptFileError,
    DecompressionBombError,
    InvalidParameterError,
    RateFallbackWarning,
)
from pillow_diffcodec.learned_transform import TABLE_PRECISION
from pillow_diffcodec.models import CDCModel, load_model

TINY = CDCArchitecture(width=16, latent=8, hyper=8, unet=(8, 16, 16))


def tiny_cdc_folder(folder: Path, typical: tuple[float, ...] = (0.3, 0.9)) -> Path:
    """A CDC model folder with one randomly initialised tiny network per typical bpp (``typical``)."""
    for i, bpp in enumerate(typical):
        torch.manual_seed(i)
        network = CDCNetwork(TINY)
        with torch.no_grad():  # spread the random latent over many symbols, as a trained encoder's is
            network.transform.g_a.net[-1].weight.mul_(40.0)
            network.transform.hyperprior.h_a[-1].weight.mul_(10.0)
        network.update_tables()
        write_rate_point(folder, TINY, RatePoint(f"r{i}", 0.01 * (i + 1), bpp, f"r{i}.safetensors"), network)
    return folder


@pytest.fixture(scope="module")
def cdc_dir(tmp_path_factory) -> Path:
    return tiny_cdc_folder(tmp_path_factory.mktemp("models") / "tiny-cdc").resolve()


@pytest.fixture(scope="module")
def cdc_model(cdc_dir) -> CDCModel:
    return load_model(str(cdc_dir))


@pytest.fixture(scope="module")
def coded(cdc_model, photo) -> pdc.EncodeResult:
    return pdc.encode_images([photo], codec="CDC", model=cdc_model, rate_point=1, seed=7)[0]


def test_params_bytes_and_work() -> None:
    params = CDCParams(3)
    assert CDCParams.from_bytes(params.to_bytes()) == params
    assert params.decode_model_calls() == 17 and params.decode_model_calls(steps=40) == 40
    with pytest.raises(CorruptFileError):
        CDCParams.from_bytes(params.to_bytes() + b"\0")
    with pytest.raises(InvalidParameterError, match="rate_point"):
        CDCParams(-1)
    with pytest.raises(InvalidParameterError, match="steps"):
        params.decode_model_calls(steps=0)


def test_integer_tables_are_exact(cdc_model) -> None:
    tables = cdc_model.network(0).entropy_tables()
    for freq, size in ((tables.z_freq, tables.z_size), (tables.y_freq, tables.y_size)):
        assert (freq.sum(axis=1) == 1 << TABLE_PRECISION).all()
        for row, n in zip(freq, size):
            assert (row[:n] >= 1).all() and (row[n:] == 0).all()


def test_latent_symbols_round_trip_exactly(cdc_model, photo) -> None:
    network = cdc_model.network(1)
    image = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1)
    payload, y_hat, z_sym, y_sym = cdc.encode_latent(network, cdc._to_input(image, torch.device("cpu")))
    decoded, z_dec, y_dec = cdc.decode_latent(network, payload, *photo.size)
    assert np.array_equal(z_sym, z_dec) and np.array_equal(y_sym, y_dec)
    assert torch.equal(decoded, y_hat)
    assert np.abs(y_sym).sum() > 0  # the latent is not trivially zero


def test_deterministic_decode_equals_encoder_reconstruction(coded, cdc_dir) -> None:
    decoded = pdc.decode(coded.data)  # the model is found from the file's reference
    assert np.array_equal(np.asarray(decoded), np.asarray(coded.reconstruction))
    assert pdc.info(coded.data)["codec"] == "CDC" and pdc.info(coded.data)["model"] == str(cdc_dir)


def test_stochastic_decode_is_reproducible_from_the_seed(coded, cdc_model, photo) -> None:
    first = np.asarray(pdc.decode(coded.data, gamma=0.8, steps=4))
    again = np.asarray(pdc.decode(coded.data, gamma=0.8, steps=4))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, np.asarray(pdc.decode(coded.data, steps=4)))
    other_seed = pdc.encode_images([photo], codec="CDC", model=cdc_model, rate_point=1, seed=8)[0].data
    assert not np.array_equal(first, np.asarray(pdc.decode(other_seed, gamma=0.8, steps=4)))
    start = cdc.start_noise(7, 0.5, (1, 3, 64, 64), torch.device("cpu"))
    assert torch.equal(start, cdc.start_noise(7, 0.5, (1, 3, 64, 64), torch.device("cpu")))
    assert 0.4 < float(start.std()) < 0.6


def test_pillow_round_trip(cdc_dir, photo, tmp_path) -> None:
    buffer = io.BytesIO()
    photo.save(buffer, format="CDC", model=str(cdc_dir), bpp=2.0)
    buffer.seek(0)
    with Image.open(buffer) as opened:
        assert opened.format == "CDC" and opened.size == photo.size
        opened.load()
        assert np.array_equal(np.asarray(opened), np.asarray(pdc.decode(buffer.getvalue())))
    path = tmp_path / "x.cdc"
    photo.save(path, model=str(cdc_dir))
    with Image.open(path) as opened:
        assert opened.format == "CDC"


def test_rate_control_measures_each_rate_point_and_bpp_is_a_bound(cdc_model, photo) -> None:
    pixels = photo.width * photo.height
    sizes = [8 * len(pdc.encode(photo, codec="CDC", model=cdc_model, rate_point=i)) / pixels for i in (0, 1)]

    def coded(bpp: float) -> tuple[int, float]:
        data = pdc.encode(photo, codec="CDC", model=cdc_model, bpp=bpp)
        return pdc.info(data)["params"]["rate_point"], 8 * len(data) / pixels

    assert coded(max(sizes)) == (1, sizes[1])  # the highest point whose file fits
    smallest = min((0, 1), key=sizes.__getitem__)
    point, bpp = coded(min(sizes))
    assert bpp <= min(sizes) and point in {smallest, 1}  # an upper bound: never the larger file
    with pytest.warns(RateFallbackWarning, match="below every rate point"):
        assert coded(0.9 * min(sizes)) == (smallest, sizes[smallest])  # none fits: the smallest file
    with pytest.raises(InvalidParameterError, match="rate_point 5"):
        pdc.encode(photo, codec="CDC", model=cdc_model, rate_point=5)
    with pytest.raises(InvalidParameterError, match="not both"):
        pdc.encode(photo, codec="CDC", model=cdc_model, rate_point=0, bpp=1.0)


def test_rate_points_fall_back_on_typical_sizes_without_images(cdc_model, photo) -> None:
    from pillow_diffcodec.codecs.cdc.runner import choose_params

    pixels = photo.width * photo.height

    def chosen(bpp: float) -> int:
        return choose_params(cdc_model, {}, bpp, None, lambda _: 60, photo.width, photo.height).rate_point

    header_bpp = 8 * 60 / pixels
    assert chosen(0.9 + header_bpp + 0.01) == 1  # + 0.01: the payload is a whole number of bytes
    assert chosen(0.3 + header_bpp + 0.01) == 0
    with pytest.warns(RateFallbackWarning, match="typically gives"):
        assert chosen(0.05) == 0


def test_codecs_refuse_the_other_kind_of_model(cdc_model, model, photo) -> None:
    with pytest.raises(InvalidParameterError, match="needs a diffusion model"):
        pdc.encode(photo, codec="DDCM", model=cdc_model, steps=3, codebook_size=16)
    with pytest.raises(InvalidParameterError, match="needs a CDC model"):
        pdc.encode(photo, codec="CDC", model=model)


def test_decode_work_limit_counts_the_steps_option(coded) -> None:
    calls = 17 * coded.reconstruction.width * coded.reconstruction.height
    pdc.decode(coded.data, max_work=calls)
    with pytest.raises(DecompressionBombError):
        pdc.decode(coded.data, max_work=calls, steps=18)
    with pytest.raises(InvalidParameterError, match="gamma"):
        pdc.decode(coded.data, gamma=-1.0)


def _with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "little")


def test_damaged_files_raise_documented_errors(coded, cdc_model) -> None:
    data = coded.data
    payload_start = len(data) - 4 - pdc.info(data)["payload_bytes"]
    for cut in (len(data) - 1, len(data) - 5, payload_start + 3):
        with pytest.raises(CorruptFileError):
            pdc.decode(data[:cut], model=cdc_model)
    refused = 0
    for offset in range(payload_start, len(data) - 4):  # every byte of the payload, CRC fixed up
        body = bytearray(data[:-4])
        body[offset] ^= 0x55
        try:  # a damaged file is refused, or (bits the range decoder never reads) decodes to the right image
            image = pdc.decode(_with_crc(bytes(body)), model=cdc_model)
        except CorruptFileError:
            refused += 1
        else:
            assert np.array_equal(np.asarray(image), np.asarray(coded.reconstruction))
    assert refused >= 0.8 * (len(data) - 4 - payload_start)
    with pytest.raises(CorruptFileError):  # payload truncated to a word boundary, file CRC fixed up
        pdc.decode(_with_crc(data[: len(data) - 8]), model=cdc_model)


def test_file_naming_a_missing_rate_point_is_corrupt(coded, cdc_dir, tmp_path) -> None:
    one_point = load_model(str(tiny_cdc_folder(tmp_path / "one", (0.3,))))
    params = cdc.CDCParams(1)
    with pytest.raises(CorruptFileError, match="rate point 1"):
        cdc.decode(one_point, params, 0, 8, 8, b"")


def test_cdc_cannot_generate(cdc_model) -> None:
    with pytest.raises(InvalidParameterError, match="cannot generate"):
        pdc.generate(16, 16, codec="CDC", model=cdc_model)


def test_training_script_exports_a_loadable_rate_point(tmp_path) -> None:
    from pillow_diffcodec.training import cdc as train_cdc

    data = tmp_path / "photos"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (140, 150, 3), dtype=np.uint8)).save(data / f"{i}.png")
    args = ["--data", str(data), "--name", "only", "--architecture", "tiny", "--max-steps", "1", "--checkpoint-every", "1",
            "--output", str(tmp_path / "model"), "--state-dir", str(tmp_path / "state")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_cdc.main(args)
        train_cdc.main([*args[:-4], "--max-steps", "2", *args[-4:]])  # resumes from its state
    state = torch.load(tmp_path / "state" / "cdc-only.pt", weights_only=False)
    assert state["step"] == 2 and len(state["losses"]) == 2
    loaded = load_model(str(tmp_path / "model"))
    assert [p.name for p in loaded.rate_points] == ["only"]
    image = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    result = pdc.encode_images([image], codec="CDC", model=loaded)[0]
    assert np.array_equal(np.asarray(pdc.decode(result.data, model=loaded)), np.asarray(result.reconstruction))


def test_train_cdc_through_ray_train(tmp_path) -> None:
    """The --ray path: one Ray Train worker (TorchTrainer on CPU) runs a step and writes the export."""
    import ray

    from pillow_diffcodec.training import cdc as train_cdc

    data = tmp_path / "photos"
    data.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (130, 130, 3), dtype=np.uint8)).save(data / "0.png")
    ray.init(num_cpus=1, include_dashboard=False, ignore_reinit_error=True)
    try:
        train_cdc.main(["--data", str(data), "--name", "ray", "--architecture", "tiny", "--max-steps", "1",
                        "--output", str(tmp_path / "model"), "--state-dir", str(tmp_path / "state"), "--ray", "1"])
    finally:
        ray.shutdown()
    assert [p.name for p in load_model(str(tmp_path / "model")).rate_points] == ["ray"]
