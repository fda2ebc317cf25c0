"""Trainers of the built-in models: the photos they learn from, the resumable loop parts, one module per model.

``data`` loads the training folders and draws reproducible batches of random crops; ``loop`` holds what
every trainer's resumable loop shares (CPU-side states, EMA, warm-up, the loss plot); ``latent`` trains
``builtin-latent`` (an autoencoder, then a DDPM on its latents). Nothing here is imported by the codecs.
"""
