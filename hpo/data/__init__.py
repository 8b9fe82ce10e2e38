"""The data layer every family builds on: the processed-data cache (:mod:`~hpo.data.cache`), the restricted
unpickler (:mod:`~hpo.data.safe_pickle`) and the content checks run before the first trial
(:mod:`~hpo.data.validate`)."""
