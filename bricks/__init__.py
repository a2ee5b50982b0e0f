"""The physics of the MXT pipeline: pure functions on numpy arrays and astropy objects.

Nothing in this package does I/O or imports ``storage``, ``gateway`` or ``nats``.
"""
