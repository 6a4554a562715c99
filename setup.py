"""Install d2kd. detectron2 is a prerequisite that must be installed first (it is on no registry)."""
from setuptools import find_packages, setup

setup(
    name="d2kd",
    version="0.1.0",
    description="Knowledge distillation for Detectron2 object detectors",
    python_requires=">=3.10",
    packages=find_packages(include=["d2kd", "d2kd.*"]),
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "fvcore>=0.1.5",
        "pycocotools>=2.0.6",
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "onnxscript>=0.1",  # torch.onnx's dynamo exporter (dense students)
        "onnxconverter-common>=1.14",  # fp16 ONNX variants
        "matplotlib>=3.7",
        "opencv-python-headless>=4.5",  # Detectron2's Visualizer (tools/visualize.py)
        "tqdm>=4.60",
        "numpy>=1.24",
        "Pillow>=9.0",
    ],
    extras_require={"dev": ["pytest>=7", "pytest-timeout>=2.1", "pytest-xdist>=3"]},
)
