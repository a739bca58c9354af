"""Stand-in `comfy_api` package (tests only)."""
