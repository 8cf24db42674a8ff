"""Performance measurements of fer_lottery against plain baselines (``make bench``)."""
