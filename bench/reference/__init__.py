"""Plain PyTorch references for ``bench/time_to_quality.py``: what a researcher writes without the service.

Each module is a script that runs alone (``python bench/reference/deepdta.py --minutes 5 --seed 0``), imports
neither ``hpo`` nor ``models``, trains under a wall-clock budget that includes its own start-up and data
preparation, selects the epoch on validation and prints, after each epoch, the elapsed time, the
validation metric and the test metric of the epoch selected so far (the test split is scored for the record
only; its time is not counted in the budget).

- :mod:`deepdta`: DeepDTA (Öztürk et al. 2018) on Davis, official folds.
- :mod:`gru_losloop`: a GRU encoder-decoder (seq2seq, weights shared over sensors) on Los-loop.
"""
