"""Training: the Hungarian matcher, the set criterion and the loops that use them."""
