"""ComfyUI nodes for SSAE: thin adapters over the `ssae` library (V3 schema), one module per concern."""
