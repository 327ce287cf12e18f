"""Model-zoo compatibility matrix: real third-party models (random weights, tiny sizes) through every diagnostic."""
