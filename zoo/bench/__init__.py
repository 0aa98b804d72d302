"""zoo bench: benchmark grids of compositions side by side."""
