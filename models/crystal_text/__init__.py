"""Crystal graph + text fusion (seeds 000 and 001): an ALIGNN-style periodic graph network fused
with a text encoder of the crystal's description by middle fusion, fine-grained and global
cross-modal attention. Registers the task ``crystal_text`` on import."""

from models.crystal_text.config import CrystalDataConfig, CrystalTextConfig, parse_fusion_layers
from models.crystal_text.data import (
    AlignnFolderDataset,
    AseFilesDataset,
    CrystalTextDataset,
    DcdftDataset,
    JarvisJsonDataset,
    SyntheticDataset,
)
from models.crystal_text.task import CrystalTextTask

__all__ = [
    "AlignnFolderDataset",
    "AseFilesDataset",
    "CrystalDataConfig",
    "CrystalTextConfig",
    "CrystalTextDataset",
    "CrystalTextTask",
    "DcdftDataset",
    "JarvisJsonDataset",
    "SyntheticDataset",
    "parse_fusion_layers",
]
