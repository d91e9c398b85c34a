"""Building blocks shared by the algorithm families: networks, mixers, replay, exploration, targets."""
