"""Full-reference quality indices that need no network weights: VIF-p, GMSD and HaarPSI.

Written from the papers' definitions (below). Inputs are float64 tensors ``(1, C, H, W)`` with C = 3
(RGB) or 1 (grey), values in [0, 255]; colour images are measured on their luminance (and, for
HaarPSI, their chroma) in the YIQ space of NTSC.

- VIF-p: H. R. Sheikh and A. C. Bovik, "Image information and visual quality", IEEE TIP 15(2), 2006,
  in its pixel-domain, multi-scale form: at each of 4 scales (Gaussian windows of 17, 9, 5 and 3 px,
  sigma = size / 5; the image is low-passed and halved between scales) the decoded image is modelled as
  ``d = g r + v`` of the reference per window (gain g, additive noise variance sigma_v^2); the index is
  the information the decoded image keeps about the reference over the information in the reference,
  ``sum log(1 + g^2 s_r^2 / (s_v^2 + s_n^2)) / sum log(1 + s_r^2 / s_n^2)`` with visual noise s_n^2 = 2
  (Sec. IV). 1 for identical images, lower when information is lost.
- GMSD: W. Xue, L. Zhang, X. Mou and A. C. Bovik, "Gradient magnitude similarity deviation", IEEE TIP
  23(2), 2014: after 2x2 averaging and halving, Prewitt gradient magnitudes m_r and m_d, the similarity
  map ``(2 m_r m_d + T) / (m_r^2 + m_d^2 + T)`` (eq. 4, T = 170 on the 0-255 scale) and its standard
  deviation (eq. 8). 0 for identical images, higher is worse.
- HaarPSI: R. Reisenhofer, S. Bosse, G. Kutyniok and T. Wiegand, "A Haar wavelet-based perceptual
  similarity index for image quality assessment", Signal Processing: Image Communication 61, 2018:
  after 2x2 averaging and halving, the magnitudes of horizontal and vertical 2D Haar wavelet responses
  of the luminance at scales 1-3 (filters of 2^j x 2^j taps of +-2^-j); per orientation the local
  similarity is the mean of the similarities ``(2ab + C) / (a^2 + b^2 + C)`` at scales 1 and 2, weighted
  by the larger scale-3 magnitude of the two images; colour adds the similarity of the 2x2-averaged I
  and Q magnitudes with the mean weight. The index is ``(logit(mean of logistic(alpha S)) / alpha)^2``
  with C = 30, alpha = 4.2 (Sec. 3). 1 for identical images, lower is worse.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

VIF_MIN_SIDE = 41  # the 17 px window must fit, and the 3 px one after three halvings
VIF_NOISE = 2.0
GMSD_T = 170.0
HAAR_C, HAAR_ALPHA = 30.0, 4.2
TINY = 1e-10
RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
)


def _same_shape(decoded: torch.Tensor, reference: torch.Tensor, min_side: int, name: str) -> None:
    if decoded.shape != reference.shape:
        raise ValueError(f"{name}: images differ in shape: {tuple(decoded.shape)} vs {tuple(reference.shape)}")
    if min(decoded.shape[-2:]) < min_side:
        raise ValueError(f"{name} needs images of at least {min_side} px a side, got "
                         f"{decoded.shape[-1]}x{decoded.shape[-2]}")


def yiq(image: torch.Tensor) -> torch.Tensor:
    """Channels Y, I, Q of an RGB image (1, 3, H, W); a grey image (1, 1, H, W) is its own Y."""
    if image.shape[1] == 1:
        return image
    return torch.einsum("oc,bchw->bohw", RGB_TO_YIQ.to(image), image)


def average_and_halve(image: torch.Tensor) -> torch.Tensor:
    """2x2 box average, keeping every second row and column (odd sides lose their last line)."""
    return F.avg_pool2d(image, kernel_size=2, stride=2)


def similarity(a: torch.Tensor, b: torch.Tensor, constant: float) -> torch.Tensor:
    """The similarity measure shared by SSIM-style indices: ``(2ab + c) / (a^2 + b^2 + c)``, 1 where a = b."""
    return (2 * a * b + constant) / (a * a + b * b + constant)


def _gaussian_profile(size: int) -> torch.Tensor:
    """The normalised 1-D Gaussian of VIF's ``size`` x ``size`` window (sigma = size / 5), as a row kernel."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    profile = torch.exp(-(offsets**2) / (2 * (size / 5) ** 2))
    return (profile / profile.sum())[None, None, None, :]


def _gaussian_filter(image: torch.Tensor, profile: torch.Tensor) -> torch.Tensor:
    """``image`` filtered ('valid') with the outer product of ``profile`` with itself: the 2-D Gaussian window
    as a row pass and a column pass (size 17: 34 instead of 289 multiplications per pixel)."""
    return F.conv2d(F.conv2d(image, profile), profile.transpose(2, 3))


def vif_p(decoded: torch.Tensor, reference: torch.Tensor) -> float:
    """Pixel-domain VIF of ``decoded`` with respect to ``reference`` (Sheikh & Bovik 2006; not symmetric)."""
    _same_shape(decoded, reference, VIF_MIN_SIDE, "VIF")
    d, r = yiq(decoded)[:, :1], yiq(reference)[:, :1]
    kept, present = 0.0, 0.0
    for scale in range(4):
        profile = _gaussian_profile(2 ** (4 - scale) + 1).to(d)
        if scale:
            d, r = _gaussian_filter(d, profile)[..., ::2, ::2], _gaussian_filter(r, profile)[..., ::2, ::2]
        mean_d, mean_r = _gaussian_filter(d, profile), _gaussian_filter(r, profile)
        var_d = (_gaussian_filter(d * d, profile) - mean_d**2).clamp(min=0)
        var_r = (_gaussian_filter(r * r, profile) - mean_r**2).clamp(min=0)
        cov = _gaussian_filter(d * r, profile) - mean_d * mean_r
        gain, noise = _channel(var_r, var_d, cov)
        kept += float(torch.log10(1 + gain**2 * var_r / (noise + VIF_NOISE)).sum())
        present += float(torch.log10(1 + var_r / VIF_NOISE).sum())
    return kept / present if present > 0 else 1.0


def _channel(var_r: torch.Tensor, var_d: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window, the gain g and noise variance of the distortion channel ``d = g r + v`` (VIF Sec. III-C),
    with the model's edge cases: a flat reference keeps no information and the decoded variance is
    noise; a flat decode has neither gain nor noise; a negative gain counts as none, its variance noise."""
    flat_r, flat_d = var_r < TINY, var_d < TINY
    gain = cov / (var_r + TINY)
    noise = var_d - gain * cov
    gain = torch.where(flat_r | flat_d, 0.0, gain)
    noise = torch.where(flat_r, var_d, noise)
    noise = torch.where(flat_d, 0.0, noise)
    noise = torch.where(gain < 0, var_d, noise)
    var_r.masked_fill_(flat_r, 0.0)
    return gain.clamp(min=0), noise.clamp(min=TINY)


def gmsd(decoded: torch.Tensor, reference: torch.Tensor) -> float:
    """Gradient Magnitude Similarity Deviation (Xue et al. 2014), 0 for identical images."""
    _same_shape(decoded, reference, 2, "GMSD")
    prewitt = torch.tensor([[1.0, 0.0, -1.0]] * 3, dtype=torch.float64) / 3
    kernels = torch.stack([prewitt, prewitt.T])[:, None].to(decoded)

    def magnitude(image: torch.Tensor) -> torch.Tensor:
        luminance = average_and_halve(yiq(image)[:, :1])
        return F.conv2d(luminance, kernels, padding=1).pow(2).sum(dim=1).sqrt()

    return float(similarity(magnitude(decoded), magnitude(reference), GMSD_T).std(unbiased=False))


def _haar_magnitudes(luminance: torch.Tensor, scale: int) -> torch.Tensor:
    """|horizontal|, |vertical| 2D Haar wavelet responses at ``scale`` (1-based), same size as the input."""
    taps = 2**scale
    vertical = torch.full((taps, taps), 2.0**-scale, dtype=torch.float64)
    vertical[taps // 2 :] *= -1
    kernels = torch.stack([vertical, vertical.T])[:, None].to(luminance)
    padded = F.pad(luminance, [taps // 2 - 1, taps // 2] * 2, mode="constant")
    return F.conv2d(padded, kernels).abs()


def haarpsi(decoded: torch.Tensor, reference: torch.Tensor) -> float:
    """Haar wavelet-based perceptual similarity index (Reisenhofer et al. 2018), 1 for identical images."""
    _same_shape(decoded, reference, 16, "HaarPSI")
    d, r = average_and_halve(yiq(decoded)), average_and_halve(yiq(reference))
    responses_d = [_haar_magnitudes(d[:, :1], scale) for scale in (1, 2, 3)]
    responses_r = [_haar_magnitudes(r[:, :1], scale) for scale in (1, 2, 3)]
    local = (similarity(responses_d[0], responses_r[0], HAAR_C) + similarity(responses_d[1], responses_r[1], HAAR_C)) / 2
    weights = torch.maximum(responses_d[2], responses_r[2])  # (1, 2, H, W): one per orientation
    if d.shape[1] == 3:
        def chroma(image: torch.Tensor) -> torch.Tensor:
            return F.avg_pool2d(F.pad(image[:, 1:], [0, 1, 0, 1]), kernel_size=2, stride=1).abs()

        colour = similarity(chroma(d), chroma(r), HAAR_C).mean(dim=1, keepdim=True)
        local = torch.cat([local, colour], dim=1)
        weights = torch.cat([weights, weights.mean(dim=1, keepdim=True)], dim=1)
    mean = float((torch.sigmoid(HAAR_ALPHA * local) * weights).sum() / weights.sum().clamp(min=TINY))
    mean = min(max(mean, TINY), 1 - TINY)
    return (math.log(mean / (1 - mean)) / HAAR_ALPHA) ** 2
