"""Drug–target affinity: DeepBindNet (gated or standard cross-modal attention over SMILES and protein
sequence encoders) on DeepDTA folders (Davis, KIBA), CSV files or synthetic data. Registers the task
``drug_target`` on import; the torch model lives in :mod:`models.drug_target.model` (imported when a
model is built) and the two-run comparison report in :mod:`models.drug_target.compare`."""

from models.drug_target.config import DeepBindConfig, DTADataConfig
from models.drug_target.data import CsvDTADataset, DeepDTADataset, DTADataset, SyntheticDTADataset
from models.drug_target.metrics import concordance_index, regression_metrics, rm2_score
from models.drug_target.task import DrugTargetTask

__all__ = [
    "CsvDTADataset",
    "DTADataConfig",
    "DTADataset",
    "DeepBindConfig",
    "DeepDTADataset",
    "DrugTargetTask",
    "SyntheticDTADataset",
    "concordance_index",
    "regression_metrics",
    "rm2_score",
]
