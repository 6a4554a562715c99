from .adversarial import adversarial_feature_loss  # noqa: F401
from .discrepancy import dfad_discrepancy, generator_loss, mean_l1  # noqa: F401
from .head import akd_loss, ckd_loss, roi_mse  # noqa: F401
from .mimic import LSHProjection, MimicLoss  # noqa: F401
