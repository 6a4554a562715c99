from .dfad import DFADTrainer, GeneratorStep  # noqa: F401
from .adversarial import AdversarialAugmentation  # noqa: F401
