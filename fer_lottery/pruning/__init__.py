"""Pruning strategies (pure: model in, Mask out) and the callbacks that keep masks applied."""
