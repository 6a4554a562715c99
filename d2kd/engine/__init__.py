from .adversarial import AdversarialAugmentation  # noqa: F401
