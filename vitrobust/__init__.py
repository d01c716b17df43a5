"""vitrobust: declarative, pytest-native adversarial robustness tests for compressed ViTs."""
__version__ = "0.1.0"
