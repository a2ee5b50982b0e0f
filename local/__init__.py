"""MXT local."""
