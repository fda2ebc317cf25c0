"""Importing this module registers the diffcodec formats with Pillow (like Pillow's own *ImagePlugin modules)."""

from .plugin import register_diffcodec_opener

register_diffcodec_opener()
