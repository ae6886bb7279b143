"""Training and evaluation: Accelerate pre-training, Trainer fine-tuning, kNN / linear probes,
reconstruction pictures and the offline demo."""
