"""Compile jobs: fixed-shape artifacts for the ONNX Runtime and VACC backends.

`job.run_compile` is the whole job as a plain function (the Celery task only calls it); the
backends are `onnx_export` and `vacc`; `validate` compares an artifact with the torch engine.
"""
