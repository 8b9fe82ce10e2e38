"""The study store: opening storage URLs (:mod:`~hpo.store.storage`), the resilient RDB storage, the only
code that touches Optuna's storage internals (:mod:`~hpo.store.rdb`, its retry loop in
:mod:`~hpo.store.retry`), what a study and its trials record (:mod:`~hpo.store.record`), the checkpoint
format (:mod:`~hpo.store.checkpoint`) and stored studies read back (:mod:`~hpo.store.stored`)."""
