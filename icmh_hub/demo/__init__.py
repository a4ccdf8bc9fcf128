"""The demo zoo: a seeded proxy data set, small proxy recognition models, small-codec training, and ``icmh-hub demo``."""
