"""What keeps a job alive and accounted for.

Failures, SIGTERM, fault injection, log routing, and cleaning finished jobs' checkpoints.
"""
