"""Datasets of posts for training and evaluation: MNRE's files and its Hub export, your own post files, the cached
splits, the collator that batches them, and the built-in sample with its tiny encoders. Nothing here travels with a
saved model: a model folder needs only `modeling_hvformer/` and `processing/`."""
