"""PSC, codec id 2 (Elata, Michaeli & Elad, zero-shot compression by diffusion posterior sampling, 2024):
:mod:`.format` (parameters and file head, torch-free), :mod:`.coding` (range coding of the measurements),
:mod:`.ddrm` (the posterior sampler), :mod:`.runner` (AdaSense rounds, encode, decode)."""
