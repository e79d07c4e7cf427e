"""Image datasets: zip / folder / Parquet shards (local or cloud URIs), synthetic scenes, validation."""
from gan3d.data.dataset import ImageDataset, mirror_angles, open_dataset, real_batches
from gan3d.data.synthetic import make_synthetic

__all__ = ["ImageDataset", "mirror_angles", "open_dataset", "real_batches", "make_synthetic"]
