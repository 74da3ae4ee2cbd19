"""Models of the math: the float PyTorch reference and the integer golden model."""
