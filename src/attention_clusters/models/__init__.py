"""MindSpore Cells: the frame feature extractor and the Attention Cluster model."""
