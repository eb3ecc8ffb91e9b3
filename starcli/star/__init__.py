"""Star Attention on transformers models: partition, kernels, merge, communication, engine."""
