"""A small CLIP trained on the shapes world, so CLIP-based edit metrics mean something offline (``train``)."""
