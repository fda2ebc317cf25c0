"""CorrDiff, codec id 4 (Ma, Yang & Liu, "Correcting diffusion-based perceptual image compression with
privileged end-to-end decoder", ICML 2024): :mod:`.format` (parameters and payload layout, torch-free),
:mod:`.model` (the model folder: CDC's learned transform, hyperprior and conditional U-Net plus an
end-to-end decoder per rate point), :mod:`.runner` (rate control, Algorithm 1 encode, Algorithm 2 decode)."""
