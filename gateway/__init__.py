"""MXT gateway."""
