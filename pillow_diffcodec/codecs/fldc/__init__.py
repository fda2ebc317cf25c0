"""FLDC, codec id 5 (Relic, Azevedo, Gross, Schroers, "Lossy image compression with foundation diffusion
models", ECCV 2024): :mod:`.format` (parameters and payload layout, torch-free), :mod:`.network`
(P_phi, the hyperprior, the frozen model at continuous time), :mod:`.model` (model folders),
:mod:`.runner` (rate control, encode, decode)."""
