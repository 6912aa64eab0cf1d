"""segunc — uncertainty for pretrained medical segmentation models, without retraining."""
__version__ = "0.1.0"
#: bump when a change alters computed results; part of every result key
PIPELINE_VERSION = "2"
