"""Makes tests/builders.py importable from every test module (see builders.make_features)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
