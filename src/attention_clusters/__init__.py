"""Attention Clusters (Long et al., CVPR 2018) on Flash-MNIST, on MindSpore."""
