"""What a run or the cache writes.

File names, atomic writes, sparse weights, the results schema, the cache folder, the dense cache.
"""
