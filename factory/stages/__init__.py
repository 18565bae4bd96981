"""Pipeline stages. Each reads and writes Parquet under the run directory (see ../shared/DESIGN.md)."""
