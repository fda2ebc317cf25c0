"""The official-checkpoint loader: random weights saved in the official key layout load into OfficialUnet."""

from __future__ import annotations

import pytest
import torch

from pillow_diffcodec.errors import InvalidParameterError
from pillow_diffcodec.models.cdc_decoder import alpha_bar
from pillow_diffcodec.models.cdc_official import OfficialUnet, load_official_denoiser, predict_x0, split_checkpoint

TINY = dict(dim=8, dim_mults=(1, 2, 3), context_dim_mults=(1, 2), channels=3, context_channels=4)


def _inputs() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 16, generator=gen)
    context = [torch.randn(2, 4, 16, 16, generator=gen), torch.randn(2, 8, 8, 8, generator=gen)]
    return x, torch.tensor([0.3, 0.9]), context


def test_ema_weights_in_the_official_layout_load(tmp_path) -> None:
    torch.manual_seed(1)
    ema_unet, online_unet = OfficialUnet(**TINY), OfficialUnet(**TINY)
    compressor = {"enc.0.weight": torch.randn(8, 3, 3, 3)}  # stands in for their context_fn
    ema = {"initted": torch.tensor(True), "step": torch.tensor(10)}
    ema |= {f"ema_model.denoise_fn.{k}": v for k, v in ema_unet.state_dict().items()}
    ema |= {f"ema_model.context_fn.{k}": v for k, v in compressor.items()}
    model = {f"denoise_fn.{k}": v for k, v in online_unet.state_dict().items()}
    path = tmp_path / "official.pt"
    torch.save({"model": model, "ema": ema}, path)

    loaded = load_official_denoiser(str(path), **TINY)
    x, t, context = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x, t, context), ema_unet.eval()(x, t, context))
        online = load_official_denoiser(str(path), use_ema=False, **TINY)
        assert torch.equal(online(x, t, context), online_unet.eval()(x, t, context))
    assert set(split_checkpoint(torch.load(path))[1]) == set(compressor)
    assert "time_mlp.0.weight" in loaded.state_dict() and "downs.0.2.fn.fn.to_qkv.weight" in loaded.state_dict()


def test_wrong_layouts_are_refused() -> None:
    with pytest.raises(InvalidParameterError, match="no 'denoise_fn.'"):
        split_checkpoint({"state_dict": {}})
    other = {f"denoise_fn.{k}": v for k, v in OfficialUnet(**TINY).state_dict().items()}
    with pytest.raises(InvalidParameterError, match="does not fit"):
        load_official_denoiser({"model": other}, dim=16, dim_mults=(1, 2, 3), context_dim_mults=(1, 2),
                               context_channels=4)


def test_epsilon_parameterisation_gives_the_clean_image() -> None:
    x0 = torch.rand(1, 3, 4, 4)
    eps = torch.randn(1, 3, 4, 4)
    abar = alpha_bar(torch.tensor([0.4]))
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    assert torch.allclose(predict_x0(eps, x_t, abar, "eps"), x0, atol=1e-5)
    assert torch.equal(predict_x0(x0, x_t, abar, "x"), x0)
