"""The procedural 3D scenes: clips with exact geometry, their corruptions, and the sets made of them."""
