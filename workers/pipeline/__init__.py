"""Vision pipeline stages: decode, detect, align, embed, attributes (see analyse.py for the composition)."""
