"""Training and evaluation of the enhancement methods, offline, on folders of DICOM files.

The node never imports this package; the CLI's `train` and `evaluate` commands do.
"""
