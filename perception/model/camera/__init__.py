"""Model blocks: tensors in, tensors out; no dataset, training or replay imports."""
