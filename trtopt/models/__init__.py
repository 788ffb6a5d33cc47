"""Model definitions and workloads (data + metric) used by recipes, tests and benchmarks.

Architectures are defined in-project (no torchvision needed): the digits CNN, ResNet-18/50,
MobileNetV2, and a loader for the packaged all-MiniLM-L6-v2 weights (extra ``minilm``).
Import submodules directly; this package imports nothing heavy.
"""
