"""DDCM, codec id 1 (Ohayon et al., "Compressed Image Generation with Denoising Diffusion Codebook Models",
ICML 2025): :mod:`.format` (parameters and payload layout, torch-free), :mod:`.entropy` (the index
coding), :mod:`.runner` (rate control, the codebook sampler, encode, decode, generation)."""
