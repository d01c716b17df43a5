"""What a run's numbers depend on in torch itself, recorded so that two runs can be compared.

The promise (``tests/test_determinism.py``): with the same code, weights, data and seeds, and the
same values of everything recorded here and in the run record's ``versions`` and ``device`` /
``precision``, a run makes bitwise the same adversarial images and the same numbers. Change one
of them and the last bits of a float sum can change (the thread count splits reductions
differently, another CPU capability picks other kernels, TF32 matmuls round differently), which
can flip a near tie, move an attack's path and so a rate by an image or two. The gate says when
the baseline differs in any of them (:func:`vitrobust.gate.comparability_notes`).
"""
from __future__ import annotations

# RunConfig fields filled by :func:`numerics`; the gate compares these and the torch version.
FIELDS = ("threads", "deterministic", "cpu_capability", "matmul_precision")


def numerics() -> dict:
    """This process's values of :data:`FIELDS`, for :class:`vitrobust.record.RunConfig`."""
    import torch

    capability = getattr(torch.backends.cpu, "get_cpu_capability", None)
    return {"threads": torch.get_num_threads(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "cpu_capability": capability() if capability else None,
            "matmul_precision": torch.get_float32_matmul_precision()}
