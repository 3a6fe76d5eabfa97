"""mitigate: pre-training mitigations for image-text datasets (Beam-free core)."""

__version__ = "0.1.0"
