"""unifocal: the Unified Focal loss family for class-imbalanced medical image segmentation."""

__version__ = "0.1.0"
