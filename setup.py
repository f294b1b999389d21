from setuptools import find_packages, setup

setup(
    name="visiondrop-llava",
    version="0.1.0",
    description="VisionDrop and baseline visual-token reduction methods in a LLaVA-compatible codebase",
    python_requires=">=3.10",
    packages=find_packages(include=["llava", "llava.*", "visiondrop", "visiondrop.*"]),
    install_requires=[
        "torch>=2.6",
        "transformers>=5.17,<6",
        "tokenizers>=0.23.1,<0.24",
        "sentencepiece>=0.2.0,<0.2.3",
        "protobuf",
        "safetensors",
        "accelerate",
        "pillow",
        "numpy",
        "tqdm",
        "pyyaml",
        "shortuuid",
    ],
    extras_require={
        "eval": ["lmms-eval==0.7.3", "openpyxl"],
        "gpu": ["flash-attn"],
        "train": ["deepspeed>=0.16"],
        "video": ["av>=14"],
        "dev": ["pytest", "ruff", "triton>=3.6; platform_system == 'Linux'", "av>=14"],
    },
)
