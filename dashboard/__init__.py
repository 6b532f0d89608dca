"""Emotion analytics over the Parquet results: DuckDB SQL and a Streamlit dashboard."""
