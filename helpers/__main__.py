"""``python -m helpers``: convert the packaged course model once into the float32 cache (setup.sh runs it).

A module of its own rather than ``python -m helpers.fast.gguf``: the package imports that module first, and
running an already imported module as ``__main__`` makes Python warn (runpy's RuntimeWarning).
"""

from .fast.gguf import prepare_default_model

print(f"Course model ready: {prepare_default_model()}")
