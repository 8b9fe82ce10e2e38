"""Fusion model families. Each subpackage registers one task with :func:`hpo.tasks.register_task`
when imported (``hpo.tasks.get_task`` imports it on first use)."""
