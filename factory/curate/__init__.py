"""Curation: dedup (exact and MinHash LSH), decontamination, selection, majority vote and mixing."""
