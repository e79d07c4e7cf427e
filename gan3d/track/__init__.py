"""Tracking: the local metric table (Parquet), W&B runs (offline by default), image grids and videos."""
