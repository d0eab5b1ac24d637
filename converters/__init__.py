"""Export Keras CNNs to LiteRT with an in-graph explanation head (needs TensorFlow)."""
