"""The consumer verifier: ``cpl_verify.py`` (one file, also the ``cpl-verify`` command)."""
