"""CDC, codec id 3 (Yang & Mandt, lossy compression with conditional diffusion models, NeurIPS 2023):
:mod:`.format` (parameters and payload layout, torch-free), :mod:`.model` (the model folder: learned
transform, hyperprior and denoiser per rate point), :mod:`.decoder` (the conditional UNet and its DDIM
sampler), :mod:`.runner` (rate control, encode, decode)."""
