"""Data: files on disk -> tensors in memory -> batches. Knows nothing of configs or the Runner."""
