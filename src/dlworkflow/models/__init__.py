"""Keras model builders and frozen feature extractors, registered by name."""
