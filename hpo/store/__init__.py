"""The study store: opening storage URLs (:mod:`~hpo.store.storage`), the resilient RDB storage and the
only code that touches Optuna's storage internals (:mod:`~hpo.store.rdb`), what a study and its trials
record (:mod:`~hpo.store.record`)."""
