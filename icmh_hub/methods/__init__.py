"""Adaptation methods other than adapters, one module per method: the modules they train and the
computation they put into a frozen base codec's stages (TransTIC's prompts: ``transtic_model``)."""
