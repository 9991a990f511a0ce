"""dicomnode: a DICOM node that receives, enhances, measures and forwards image series."""

__version__ = "0.1.0"
