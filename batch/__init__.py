"""Nightly batch scoring of call recordings into a Parquet dataset."""
