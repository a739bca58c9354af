"""Stand-in `aiohttp` for environments without it: only `web`, as nodes/routes.py uses it."""
