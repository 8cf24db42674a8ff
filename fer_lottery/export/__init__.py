"""Structured export: a distinctiveness-pruned run as a physically smaller torchvision model.

``python -m fer_lottery.export RUN_DIR [--out FILE]``. Modules:

- ``loader``: rebuild an exported file with torch and torchvision alone (no fer_lottery
  imports; copy it into another project as it is);
- ``slim``: which masked units go, and the slicing (exact: see its docstring);
- ``run``: a run folder's final weights and mask, and the saved file.

This package imports nothing on import, so ``fer_lottery.export.loader`` stays light.
"""
