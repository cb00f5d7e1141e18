"""Host-side compiler: model, data, incremental training, engine emission, bundles.

Uses torch. Nothing under runtime/ may import this package.
"""
__version__ = "0.1.0"
