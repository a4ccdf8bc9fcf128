"""The hub layer: every byte icmh-hub downloads or uploads, and the registry index that says which.

``transport`` moves and verifies files (Hugging Face Hub, plain URLs, the cache, trust on first
use), ``index`` reads, merges, validates and queries registry indexes, ``fetch`` turns an entry
into a verified local file (converting reference checkpoints once), ``card`` renders model cards
and ``publish`` pushes adapter files with their cards. Importing any of them imports no torch.
"""
