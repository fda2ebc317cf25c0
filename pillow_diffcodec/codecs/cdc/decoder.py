"""CDC's conditional diffusion decoder: the shared :mod:`pillow_diffcodec.conditional_unet` (CorrDiff uses it
too), re-exported under its old name."""

from ...conditional_unet import (
    COSINE_OFFSET,
    TIME_FEATURES,
    ConditionalUNet,
    ContextNet,
    TimeResBlock,
    alpha_bar,
    ddim_decode,
    ddim_times,
    time_embedding,
)

__all__ = ["COSINE_OFFSET", "TIME_FEATURES", "ConditionalUNet", "ContextNet", "TimeResBlock", "alpha_bar",
           "ddim_decode", "ddim_times", "time_embedding"]
