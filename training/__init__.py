"""Training: corpora, log-mel features, the spectrogram ViT, training, evaluation, tuning."""
