"""3-D face transformer: a Transformer encoder over face feature tokens (3-D keypoints + an identity
embedding) regressing a target embedding with loss ``mse_weight * MSE + cosine_weight * (1 - cos)``.
Registers the task ``face3d`` on import; the torch model is in :mod:`models.face3d.model`."""

from models.face3d.config import Face3DConfig, Face3DDataConfig
from models.face3d.data import Face3DDataset, NpzFace3DDataset, SyntheticFace3DDataset
from models.face3d.task import Face3DTask

__all__ = ["Face3DConfig", "Face3DDataConfig", "Face3DDataset", "Face3DTask", "NpzFace3DDataset", "SyntheticFace3DDataset"]
