"""MXT storage."""
