"""callmood: emotion analytics for call-center recordings."""

__version__ = "0.1.0"
