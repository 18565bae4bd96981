"""The distillation data factory: problems -> teacher traces -> verified, curated Parquet datasets."""

__version__ = "0.1.0"
