"""The flow of one experiment: dense fine-tune, prune, rewind, retrain, test; k-fold."""
