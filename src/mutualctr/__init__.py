"""mutualctr: CTR prediction with deep mutual learning."""

__version__ = "0.1.0"
