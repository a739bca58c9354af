"""Stand-in `comfy` package (tests only)."""
