"""The signal path every way in shares: decoding and resampling (audio), the level meter,
speech finding and the window plan (segment), and the log-mel features (features)."""
