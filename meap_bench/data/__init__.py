"""Haystacks, dataset loaders and the download cache."""
