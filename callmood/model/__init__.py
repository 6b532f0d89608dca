"""The model folder (read, write, checks), calibration, and inference on files."""
