"""Kopf adapters: the only package that imports kopf. Each module is thin and
delegates to `reconcile/` and `backends/`."""
