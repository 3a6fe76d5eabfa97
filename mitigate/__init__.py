"""mitigate: pre-training mitigations for image-text datasets.

The package's modules never import Beam, except the CLI (lazily, to start a run);
``mitigate.pipeline`` and ``mitigate.runners`` hold the Beam code
(``tests/test_structure.py`` checks it).
"""

__version__ = "0.1.0"
