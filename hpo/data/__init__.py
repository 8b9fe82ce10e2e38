"""The data layer every family builds on, below ``train`` and ``tasks``: the dataset spec base
(:mod:`~hpo.data.dataset`), seeded splits (:mod:`~hpo.data.split`), the seeded index batcher
(:mod:`~hpo.data.loader`), the processed-data cache and its keys (:mod:`~hpo.data.cache`), train-only
scalers (:mod:`~hpo.data.scaling`), common metrics (:mod:`~hpo.data.metrics`), the restricted unpickler
(:mod:`~hpo.data.safe_pickle`) and the content checks run before the first trial (:mod:`~hpo.data.validate`)."""
