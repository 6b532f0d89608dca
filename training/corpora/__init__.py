"""Corpus adapters: each turns a corpus layout into labelled utterances."""
